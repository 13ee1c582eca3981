"""CLI parts of the mtt and dwa objectives: their `distill` options and the `experts` command."""

from __future__ import annotations

import argparse
from typing import Any

from compressdata.distill.config import DWA_TEACHER_ARCHS, DistillConfig
from compressdata.distill.experts import ExpertConfig
from compressdata.models import ARCHITECTURES, NORMS


def add_objective_options(parser: argparse.ArgumentParser) -> None:
    """`distill` options of the mtt and dwa objectives."""
    d = DistillConfig()
    g = parser.add_argument_group("objective options (mtt: trajectory matching; dwa: diversity-driven synthesis)")
    g.add_argument("--expert-dir", default=None,
                   help="mtt: expert trajectories made by `compressdata experts`")
    g.add_argument("--mtt-syn-steps", type=int, default=d.mtt_syn_steps,
                   help="mtt: N synthetic SGD steps per iteration (default %(default)s)")
    g.add_argument("--mtt-expert-epochs", type=int, default=d.mtt_expert_epochs,
                   help="mtt: M, the expert epochs the N steps must cover (default %(default)s)")
    g.add_argument("--mtt-max-start-epoch", type=int, default=d.mtt_max_start_epoch,
                   help="mtt: start epochs are drawn from 0 .. this - 1 (default %(default)s)")
    g.add_argument("--mtt-lr-init", type=float, default=d.mtt_lr_init,
                   help="mtt: initial learned synthetic lr (default %(default)s)")
    g.add_argument("--mtt-lr-lr", type=float, default=d.mtt_lr_lr,
                   help="mtt: outer SGD step size of log(synthetic lr) (default %(default)s; adam: its own lr)")
    g.add_argument("--dwa-teacher", default=d.dwa_teacher,
                   help="dwa: a teacher .safetensors file, or 'train' (kept in the checkpoint dir)")
    g.add_argument("--dwa-teacher-arch", default=d.dwa_teacher_arch, choices=DWA_TEACHER_ARCHS,
                   help="dwa: teacher to train (convnet with batch norm, or resnet18_bn)")
    g.add_argument("--dwa-teacher-width", type=int, default=d.dwa_teacher_width)
    g.add_argument("--dwa-teacher-epochs", type=int, default=d.dwa_teacher_epochs)
    g.add_argument("--dwa-r-bn", type=float, default=d.dwa_r_bn,
                   help="dwa: weight of the BN-statistics matching (default %(default)s)")
    g.add_argument("--dwa-first-bn-weight", type=float, default=d.dwa_first_bn_weight,
                   help="dwa: extra weight of the first BN layer (default %(default)s)")
    g.add_argument("--dwa-steps", type=int, default=d.dwa_steps,
                   help="dwa: K weight-adjustment steps per batch (default %(default)s)")
    g.add_argument("--dwa-rho", type=float, default=d.dwa_rho,
                   help="dwa: total size of the weight adjustment (default %(default)s)")
    g.add_argument("--dwa-jitter", type=int, default=d.dwa_jitter,
                   help="dwa: random shift in pixels (default %(default)s)")
    g.add_argument("--dwa-temperature", type=float, default=d.dwa_temperature,
                   help="dwa: soft-label temperature of the students (default %(default)s)")


def objective_config_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The DistillConfig fields set by `add_objective_options`."""
    return {"mtt_expert_dir": args.expert_dir,
            "mtt_syn_steps": args.mtt_syn_steps, "mtt_expert_epochs": args.mtt_expert_epochs,
            "mtt_max_start_epoch": args.mtt_max_start_epoch, "mtt_lr_init": args.mtt_lr_init,
            "mtt_lr_lr": args.mtt_lr_lr, "dwa_teacher": args.dwa_teacher,
            "dwa_teacher_arch": args.dwa_teacher_arch, "dwa_teacher_width": args.dwa_teacher_width,
            "dwa_teacher_epochs": args.dwa_teacher_epochs, "dwa_r_bn": args.dwa_r_bn,
            "dwa_first_bn_weight": args.dwa_first_bn_weight, "dwa_steps": args.dwa_steps,
            "dwa_rho": args.dwa_rho, "dwa_jitter": args.dwa_jitter,
            "dwa_temperature": args.dwa_temperature}


def add_experts_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `compressdata experts`."""
    d = ExpertConfig()
    p = subparsers.add_parser(
        "experts", help="train expert trajectories for mtt (resumable)",
        description="Train N networks on the real training split with plain SGD and store each "
                    "one's parameters after every epoch (one safetensors file per expert plus "
                    "manifest.json). Rerunning the same command continues a killed run.")
    p.add_argument("--source", default=d.source)
    p.add_argument("--out", "-o", required=True, help="directory of the trajectories")
    p.add_argument("--experts", type=int, default=d.experts)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr, help="SGD lr, no momentum (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--arch", default=d.arch, choices=ARCHITECTURES)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--depth", type=int, default=d.depth)
    p.add_argument("--norm", default=d.norm, choices=NORMS)
    p.add_argument("--dsa", action="store_true", help="DSA augmentation of the real batches")
    p.add_argument("--zca", action="store_true", help="train in ZCA-whitened space")
    p.add_argument("--zca-regularization", type=float, default=d.zca_regularization)
    p.add_argument("--train-examples", type=int, default=None,
                   help="train on a seeded random subset of this many examples (default: all)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_experts)


def run_experts(args: argparse.Namespace) -> int:
    """`compressdata experts`: train (or continue) and print where the manifest is."""
    from compressdata.distill.experts import train_experts
    from compressdata.distill.loop import resolve_device

    config = ExpertConfig(
        source=args.source, experts=args.experts, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, arch=args.arch, width=args.width, depth=args.depth,
        norm=args.norm, dsa=args.dsa, zca=args.zca, zca_regularization=args.zca_regularization,
        train_examples=args.train_examples, seed=args.seed).validate()
    manifest = train_experts(config, args.out, device=resolve_device(args.device),
                             progress=not args.no_progress)
    print(f"wrote {config.experts} expert trajectories of {config.epochs} epochs; manifest {manifest}")
    return 0
