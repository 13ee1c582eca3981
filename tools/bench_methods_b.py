"""Benchmark of the mtt and dwa objectives on Fashion-MNIST (CPU protocol, one torch thread).

Rows: random-real (the real-image init both methods start from), mtt and dwa, each with the pixels
parameterization (and `memory`, `lowrank` with --params pixels memory lowrank), every bank evaluated on --networks
fresh ConvNets of width --width for --eval-epochs epochs on the full test split. Prints a markdown
table (docs/methods-mtt-dwa.md has the protocol and the measured table).

    python tools/bench_methods_b.py --ipc 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from compressdata.data.sources import load_source
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.experts import ExpertConfig, train_experts
from compressdata.distiller.loop import distill
from compressdata.evaluate import evaluate_bank

PARAMS = ("pixels", "memory", "lowrank")


def _settings(args: argparse.Namespace, expert_dir: str) -> dict[str, dict]:
    # memory: K=16 bases at ds=2 at every IPC, the layout docs/methods-mtt-dwa.md measured
    common = dict(width=args.width, iterations=args.iterations, init="real", device="cpu", seed=0,
                  n_bases=16, downsample=2)
    return {
        "random-real": dict(width=args.width, device="cpu", seed=0),
        "mtt": dict(common, objective="mtt", mtt_expert_dir=expert_dir, mtt_syn_steps=10,
                    mtt_expert_epochs=2, mtt_max_start_epoch=2, inner_batch_per_class=args.mtt_batch,
                    mtt_lr_lr=0.01),
        "dwa": dict(common, objective="dwa", dwa_teacher_width=args.teacher_width,
                    dwa_teacher_epochs=args.teacher_epochs, dwa_steps=args.dwa_steps,
                    inner_batch_per_class=10, outer_lr=args.dwa_outer_lr),  # None: the objective's default
    }


def _outer(config: DistillConfig) -> str:
    if config.method == "random-real":
        return "-"
    lr, _, _ = config.resolved_outer
    optimizer, _, schedule = config.resolved_optimizer
    return f"{optimizer} lr {lr:g}" + (f" {schedule}" if schedule != "constant" else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ipc", type=float, nargs="+", default=[1.0])
    p.add_argument("--params", nargs="+", default=["pixels"], choices=PARAMS)
    p.add_argument("--objectives", nargs="+", default=["random-real", "mtt", "dwa"])
    p.add_argument("--train-examples", type=int, default=10000, help="real examples distilled from")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--experts", type=int, default=3)
    p.add_argument("--expert-epochs", type=int, default=4)
    p.add_argument("--mtt-batch", type=int, default=10, help="synthetic examples per class per step")
    p.add_argument("--teacher-width", type=int, default=32)
    p.add_argument("--teacher-epochs", type=int, default=4)
    p.add_argument("--dwa-steps", type=int, default=12)
    p.add_argument("--dwa-outer-lr", type=float, default=None,
                   help="dwa's outer lr (default: the library's, config.py; dwa's optimiser: Adam, cosine)")
    p.add_argument("--mim", type=float, nargs="+", default=[0.0], help="mim add-on weights (0: off)")
    p.add_argument("--networks", type=int, default=5)
    p.add_argument("--eval-epochs", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = load_source("fashion-mnist", "train")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:args.train_examples]
    train = train.subset(pick.sort().values)
    test = load_source("fashion-mnist", "test")
    work = Path(tempfile.mkdtemp(prefix="bench_b_"))
    started = time.perf_counter()
    if "mtt" in args.objectives:
        train_experts(ExpertConfig(experts=args.experts, epochs=args.expert_epochs, width=args.width,
                                   lr=0.05, train_examples=args.train_examples), work / "experts",
                      data=load_source("fashion-mnist", "train"), progress=False)
    print(f"experts: {args.experts} x {args.expert_epochs} epochs, {time.perf_counter() - started:.0f} s\n")
    print(f"Fashion-MNIST, {args.train_examples} training examples, evaluation: {args.networks} fresh "
          f"ConvNet-{args.width}, {args.eval_epochs} epochs, full test split, {args.threads} thread(s)\n")
    print("| IPC | parameterization | objective | outer step | accuracy % (mean +- std) | distill s | lr in recipe |")
    print("|---|---|---|---|---|---|---|")
    for ipc in args.ipc:
        for param in args.params:
            for objective, mim in ((o, m) for o in args.objectives for m in args.mim):
                if objective == "random-real" and (param != "pixels" or mim != args.mim[0]):
                    continue
                settings = dict(_settings(args, str(work / "experts"))[objective])
                axes = ({"method": "random-real"} if objective == "random-real"
                        else {"parameterization": param, "mim_weight": mim})
                config = DistillConfig.from_flat(**axes, budget_ipc=ipc,
                                       checkpoint_dir=str(work / f"{objective}-{param}-{ipc}-{mim:g}"),
                                       **settings)
                t0 = time.perf_counter()
                bank = distill(config, train, progress=False, log=lambda s: None)
                seconds = time.perf_counter() - t0
                result = evaluate_bank(bank, test, networks=args.networks, epochs=args.eval_epochs,
                                       width=args.width, progress=False)
                name = objective + (f"+mim {mim:g}" if mim and objective != "random-real" else "")
                print(f"| {ipc:g} | {param} | {name} | {_outer(config)} | {100 * result.mean:.2f} +- "
                      f"{100 * result.std:.2f} | {seconds:.0f} | {bank.recipe.lr:.4g} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
