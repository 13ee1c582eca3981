"""`compressdata experts`: train the expert trajectories of the mtt objective."""

from __future__ import annotations

import argparse

from compressdata.distiller.experts import ExpertConfig
from compressdata.models import ARCHITECTURES, NORMS


def add_experts_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `compressdata experts`."""
    d = ExpertConfig()
    p = subparsers.add_parser(
        "experts", help="train expert trajectories for mtt (resumable)",
        description="Train N networks on the real training split with plain SGD and store each "
                    "one's parameters after every epoch (one safetensors file per expert plus "
                    "manifest.json). Rerunning the same command continues a killed run.")
    p.add_argument("--source", default=d.source)
    p.add_argument("--download", action="store_true", help="download the source when it is not local")
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
    from compressdata.data.sources import load_source
    from compressdata.distiller.experts import train_experts
    from compressdata.distiller.loop import resolve_device

    config = ExpertConfig(
        source=args.source, experts=args.experts, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, arch=args.arch, width=args.width, depth=args.depth,
        norm=args.norm, dsa=args.dsa, zca=args.zca, zca_regularization=args.zca_regularization,
        train_examples=args.train_examples, seed=args.seed).validate()
    manifest = train_experts(config, args.out, device=resolve_device(args.device), progress=not args.no_progress,
                             data=load_source(config.source, "train", download=args.download))
    print(f"wrote {config.experts} expert trajectories of {config.epochs} epochs; manifest {manifest}")
    return 0
