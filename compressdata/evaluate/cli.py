"""`compressdata evaluate` and `compressdata baseline full`: parse, call the library, print.

`add_evaluate_commands(subparsers)` registers both on the main parser (`compressdata.cli`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compressdata.bank.metadata import AUGMENTATIONS, FULL_DATA, RANDOM_REAL, EvaluationResult
from compressdata.errors import ConfigError
from compressdata.evaluate.full_data import DEFAULT_EPOCHS, DEFAULT_NETWORKS, reference_command
from compressdata.evaluate.protocols import PROTOCOLS, RECIPE, STANDARD
from compressdata.loading import add_bank_arguments
from compressdata.models import ARCHITECTURES as ARCHS
from compressdata.runtime.distributed import DEFAULT_TIMEOUT_S, distributed_session

FIXED_PROTOCOLS = tuple(name for name, p in PROTOCOLS.items() if p.recipe is not None)


def add_evaluate_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `evaluate` and `baseline` (each sets `func`, returning an exit code)."""
    p = subparsers.add_parser(
        "evaluate", help="train fresh networks on a bank and test them on a real test split",
        description="Train fresh networks on a bank's decoded examples under a protocol and test each once at "
                    "the end on the real test split; print mean and std beside the baselines: a random real "
                    "subset of the same storage (same protocol and network seeds) and the cached full-data "
                    "reference (docs/evaluation.md).")
    add_bank_arguments(p)
    p.add_argument("--test", required=True, help="real source whose test split is used (and whose training "
                                                 "split the random-real baseline draws from)")
    p.add_argument("--download", action="store_true", help="download the test source when it is not local")
    p.add_argument("--allow-class-mismatch", action="store_true",
                   help="evaluate even when the test set's class names differ from the bank's")
    p.add_argument("--protocol", default=RECIPE, choices=tuple(PROTOCOLS),
                   help="; ".join(f"{name}: {p.description}" for name, p in PROTOCOLS.items())
                        + " (default %(default)s)")
    p.add_argument("--arch", default=None, choices=ARCHS, help="default: the protocol's")
    p.add_argument("--networks", type=int, default=5)
    p.add_argument("--epochs", type=int, default=None,
                   help="default: the protocol's (recipe: the bank's; standard: 300, 1000 with DSA)")
    p.add_argument("--width", type=int, default=None,
                   help="ConvNet/MLP width (default: the protocol's; recipe: the bank's, else 128)")
    p.add_argument("--augmentation", default=None, choices=AUGMENTATIONS,
                   help="default: the bank's recipe (with --protocol standard, dsa also means 1000 epochs)")
    p.add_argument("--lr", type=float, default=None, help="SGD lr (default: the protocol's)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the baselines (the random-real one doubles the cost)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the networks: faster from IPC 10 on after a one-time compile "
                        "(docs/evaluation.md)")
    p.add_argument("--record", action="store_true", help="write the result into the bank file")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--collective-timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="under torchrun: seconds a rank waits for the others (default %(default)s)")
    p.set_defaults(func=run_evaluate)

    p = subparsers.add_parser("baseline", help="compute and cache reference accuracies (full-data training)")
    sub = p.add_subparsers(dest="baseline", required=True)
    p = sub.add_parser(
        "full", help="train on the whole real training split under a protocol; cache the result",
        description="Train fresh networks on the whole real training split with a protocol's network and "
                    "optimiser and test them on the test split; the result is cached once per dataset, "
                    "protocol and network, and `compressdata evaluate` reports the gap to it.")
    p.add_argument("--test", required=True, help="real source (its training and test splits are used)")
    p.add_argument("--download", action="store_true", help="download the source when it is not local")
    p.add_argument("--protocol", default=STANDARD, choices=FIXED_PROTOCOLS)
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help="epochs (default %(default)s: a protocol's 300 are beyond a CPU; lr x0.1 at half)")
    p.add_argument("--networks", type=int, default=DEFAULT_NETWORKS)
    p.add_argument("--width", type=int, default=None, help="ConvNet width (default: the protocol's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--force", action="store_true", help="recompute even when a reference is cached")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (faster after a one-time "
                                                           "compile)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_baseline_full)


def _check_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be >= 1, got {value}")


def run_evaluate(args: argparse.Namespace) -> int:
    """`compressdata evaluate`: print mean, std and baselines; --record writes them into the bank."""
    from compressdata.data.sources import load_source
    from compressdata.evaluate import chance_warning
    from compressdata.evaluate.ranks import evaluate_bank_over_ranks
    from compressdata.loading import load_memory_bank, save_memory_bank

    _check_positive(args, "networks", "width", "epochs")
    path = Path(args.bank)
    if args.record and not path.is_file():
        raise ConfigError(f"--record writes into a local bank file; {args.bank} is not one")
    bank = load_memory_bank(path if path.exists() else args.bank, config=args.config, revision=args.revision)
    test = load_source(args.test, "test", download=args.download)
    train = None if args.no_baselines else load_source(args.test, "train", download=args.download)
    with distributed_session(args.device, args.collective_timeout) as world:
        result = evaluate_bank_over_ranks(
            bank, test, arch=args.arch, networks=args.networks, epochs=args.epochs, device=args.device,
            seed=args.seed, width=args.width, progress=not args.no_progress, augmentation=args.augmentation,
            lr=args.lr, protocol=args.protocol, baselines=not args.no_baselines, train=train,
            compile_networks=args.compile, check_classes=not args.allow_class_mismatch)
    if not world.is_main:
        return 0
    overrides = result.extra.get("protocol_overrides")
    changed = f"; overridden: {', '.join(f'{k}={v}' for k, v in overrides.items())}" if overrides else ""
    print(f"accuracy {100 * result.mean:.2f} +- {100 * result.std:.2f} % "
          f"({result.architecture}, {result.networks} networks, {result.epochs} epochs, "
          f"{result.test}, {result.protocol} protocol{changed})")
    if not args.no_baselines:
        _print_baselines(result, test.name, args.protocol, args.width)
    warning = chance_warning(result, bank.num_classes)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.record:
        bank.add_evaluation(result)
        save_memory_bank(bank, path)
        print(f"recorded in {path}")
    return 0


def _print_baselines(result: EvaluationResult, dataset: str, protocol: str, width: int | None) -> None:
    random_real = result.baselines[RANDOM_REAL]
    print(f"random real, {random_real.extra['per_class']} per class (same storage, protocol and network seeds): "
          f"{100 * random_real.mean:.2f} +- {100 * random_real.std:.2f} %; improvement "
          f"{100 * result.improvement_over_random:+.2f} points")
    full = result.baselines.get(FULL_DATA)
    if full is not None:
        print(f"full data ({full.epochs} epochs, {full.networks} networks, made by: {full.extra.get('command')}): "
              f"{100 * full.mean:.2f} +- {100 * full.std:.2f} %; gap {100 * result.gap_to_full_data:.2f} points")
    elif protocol in FIXED_PROTOCOLS:
        print(f"full data: no reference cached for {dataset} under the {protocol} protocol with this network; "
              f"compute it once with: {reference_command(dataset, protocol, width=width)}")
    else:
        print(f"full data: the {protocol} protocol trains with each bank's own recipe, so it has no "
              f"full-data reference (--protocol {STANDARD} has one)")


def run_baseline_full(args: argparse.Namespace) -> int:
    """`compressdata baseline full`: compute (or show the cached) full-data reference."""
    from compressdata.data.sources import load_source
    from compressdata.evaluate.full_data import full_data_reference

    _check_positive(args, "networks", "width", "epochs")
    result, path, computed = full_data_reference(
        load_source(args.test, "train", download=args.download),
        load_source(args.test, "test", download=args.download), args.protocol, epochs=args.epochs,
        networks=args.networks, width=args.width, seed=args.seed, device=args.device,
        progress=not args.no_progress, force=args.force, compile_networks=args.compile)
    print(f"full data: {100 * result.mean:.2f} +- {100 * result.std:.2f} % ({result.extra['network']}, "
          f"{result.epochs} epochs, {result.networks} networks, {result.test}, {result.protocol} protocol)")
    if computed:
        print(f"cached in {path} ({result.extra['seconds']:.0f} s on {result.extra['device']})")
    else:
        print(f"already cached in {path}, made by: {result.extra.get('command')} (--force recomputes)")
    return 0
