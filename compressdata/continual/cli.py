"""`compressdata continual`: run a continual-learning protocol and write its table, JSON and plot."""

from __future__ import annotations

import argparse

from compressdata.continual.protocols import PROTOCOLS
from compressdata.continual.runner import METHODS, ContinualConfig


def add_continual_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `continual` (sets `func`, returning an exit code)."""
    d = ContinualConfig()
    p = subparsers.add_parser(
        "continual", help="continual learning: grow a memory bank task by task, compare with replay",
        description="Run a task stream (class-incremental Split-Fashion-MNIST or domain-incremental rotated "
                    "Fashion-MNIST). After each task, every method trains networks and tests them on all "
                    "tasks seen: rtp (a growing memory bank), random-exemplar replay at equal storage, "
                    "fine-tuning on the new task only (lower bound), joint training on all real data "
                    "(upper bound). Writes OUT/table.md, OUT/results.json and OUT/accuracy.png.")
    p.add_argument("--protocol", required=True, choices=PROTOCOLS)
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--methods", nargs="+", default=list(d.methods), choices=METHODS)
    p.add_argument("--budget-ipc", type=float, default=d.budget_ipc,
                   help="storage per task class, in images-per-class equivalents (default %(default)s)")
    p.add_argument("--n-bases", type=int, default=d.n_bases, help="bases of the first task (rtp)")
    p.add_argument("--new-bases", type=int, default=d.new_bases, help="bases each later task adds (rtp)")
    p.add_argument("--downsample", type=int, default=d.downsample)
    p.add_argument("--finetune-bases", action="store_true", help="train existing bases too (default: frozen)")
    p.add_argument("--replay-old", action=argparse.BooleanOptionalAction, default=d.replay_old_memories,
                   help="rtp: distil each task with the earlier memories in the inner and outer batches "
                        "(default: %(default)s)")
    p.add_argument("--iterations", type=int, default=d.iterations, help="outer iterations per task")
    p.add_argument("--unroll-steps", type=int, default=d.unroll_steps)
    p.add_argument("--inner-batch", type=int, default=d.inner_batch, help="synthetic examples per class per step")
    p.add_argument("--real-batch", type=int, default=d.real_batch, help="real examples per class in the outer loss")
    p.add_argument("--outer-lr", type=float, default=d.outer_lr)
    p.add_argument("--width", type=int, default=d.width, help="ConvNet width (distillation and evaluation)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs of every network trained on a bank")
    p.add_argument("--real-epochs", type=int, default=d.real_epochs,
                   help="epochs per task on real data (finetune, joint)")
    p.add_argument("--networks", type=int, default=d.networks, help="networks averaged per measurement")
    p.add_argument("--train-per-class", type=int, default=d.train_per_class,
                   help="real training images per class per task (0: all)")
    p.add_argument("--test-per-class", type=int, default=d.test_per_class,
                   help="test images per class per task (0: all)")
    p.add_argument("--angles", type=float, nargs="+", default=list(d.angles), help="rotated protocol's angles")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_continual_command)


def run_continual_command(args: argparse.Namespace) -> int:
    import torch

    from compressdata.continual.runner import markdown_table, run_continual, write_outputs

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ContinualConfig(
        protocol=args.protocol, methods=tuple(args.methods), budget_ipc=args.budget_ipc, n_bases=args.n_bases,
        new_bases=args.new_bases, downsample=args.downsample, iterations=args.iterations,
        unroll_steps=args.unroll_steps, inner_batch=args.inner_batch, real_batch=args.real_batch,
        outer_lr=args.outer_lr, finetune_bases=args.finetune_bases,
        replay_old_memories=args.replay_old, width=args.width, epochs=args.epochs,
        real_epochs=args.real_epochs, networks=args.networks, train_per_class=args.train_per_class or None,
        test_per_class=args.test_per_class or None, angles=tuple(args.angles), seed=args.seed, device=args.device)
    result = run_continual(cfg, progress=not args.no_progress)
    paths = write_outputs(result, args.out)
    print(markdown_table(result))
    print(f"wrote {paths['table']}, {paths['json']}, {paths['plot']}")
    return 0
