"""Fashion-MNIST at equal bytes (docs/bytes.md): random-real, pixels and rtp banks stored in float32,
float16 and 8 bits, the 8-bit and float16 ones post-training and quantisation-aware; prints a
markdown table, one row as each bank is evaluated.

A budget is the bytes of B plain 8-bit images per class (`--ipc-bytes 1 10`: 7,840 and 78,400 bytes
for Fashion-MNIST); every bank spends at most that many bytes in its storage dtype (spec section 7),
so float32 buys a quarter of the values 8 bits do. Random-real stores real images; pixels and rtp
are distilled with bptt. A row whose layout does not fit the budget (a float32 image is 3,136 bytes)
is printed as such.

Two evaluations: `--protocol standard` is the DC/DSA protocol of the published figures (ConvNet-3 of
width 128, 300 epochs, >= 5 networks: expensive on a CPU); `--protocol recipe` trains each bank's
own recipe, i.e. the distillation network (width `--width`), a cheap screening.

    python tools/bench_bytes.py --ipc-bytes 1 --protocol recipe --width 16 --iterations 150 --networks 3
    python tools/bench_bytes.py --ipc-bytes 1 10 --protocol standard --width 128 --iterations 2000 \\
        --unroll-steps 50 --networks 5 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from compressdata.bank.memory_bank import MemoryBank
from compressdata.data.sources import RealData, load_source
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.loop import distill
from compressdata.evaluate import evaluate_bank
from compressdata.params import layout_for_budget

METHODS = ("random-real", "pixels", "rtp")
NONE, POST, AWARE = "-", "post-training", "quantization-aware"
# Screening defaults: the CPU protocol of docs/benchmarks.md (width 16, real init, SGD outer lr 30 with
# clip 2, 10 synthetic and 32 real images per class per step), with fewer iterations and a shorter
# unroll so that a row takes minutes on one thread.
SCREENING = dict(width=16, iterations=150, unroll_steps=10, inner_batch=10, real_batch=32, outer_lr=30.0,
                 init="real")


@dataclass(frozen=True)
class Row:
    """One bank of the table: a method stored in a dtype, quantised after or during distillation."""

    method: str
    dtype: str
    mode: str

    @property
    def label(self) -> str:
        return f"{self.method} {self.dtype}" + ("" if self.mode == NONE else f" {self.mode}")


def table_rows(methods: list[str], dtypes: list[str], modes: list[str]) -> list[Row]:
    """Every (method, dtype, mode): float32 and random-real have no quantisation to be aware of."""
    rows = []
    for method in methods:
        for dtype in dtypes:
            if dtype == "f32" or method == "random-real":
                rows.append(Row(method, dtype, NONE))
            else:
                rows += [Row(method, dtype, mode) for mode in modes]
    return rows


def row_config(row: Row, budget_bytes: int, args: argparse.Namespace) -> DistillConfig:
    """The distillation run of `row` for `budget_bytes` with the command line's settings."""
    common = dict(budget_bytes=budget_bytes, storage_dtype=row.dtype, seed=args.seed, device=args.device,
                  width=args.width)
    if row.method == "random-real":
        return DistillConfig.from_flat(method="random-real", **common).validate()
    return DistillConfig.from_flat(method=row.method, quant_aware=row.mode == AWARE, iterations=args.iterations,
                                   unroll_steps=args.unroll_steps, inner_batch_per_class=args.inner_batch,
                                   real_batch_per_class=args.real_batch, outer_lr=args.outer_lr, init=args.init,
                                   n_bases=args.n_bases, downsample=args.downsample, **common).validate()


def fits(config: DistillConfig, train: RealData) -> str | None:
    """None when the budget buys a layout, else why not."""
    try:
        p = config.parameterization
        layout_for_budget(config.kind, p.budget_ipc, train.num_classes, train.image_shape, n_bases=p.n_bases,
                          downsample=p.downsample, rank=p.rank, budget_bytes=p.budget_bytes, storage=config.storage)
    except ValueError as e:  # UsageError: the budget buys no layout
        return str(e).split(" (")[0]
    return None


def run_row(row: Row, budget: int, train: RealData, test: RealData, args: argparse.Namespace) -> dict:
    """Distil (or draw) the bank of `row`, evaluate it and return the table's fields."""
    config = row_config(row, budget * math.prod(train.image_shape) * train.num_classes, args)
    result = {"ipc_bytes": budget, "budget_bytes": config.parameterization.budget_bytes, "row": row.label,
              "method": row.method, "dtype": row.dtype, "mode": row.mode}
    problem = fits(config, train)
    if problem is not None:
        return {**result, "fits": False, "problem": problem}
    started = time.perf_counter()
    bank = distill(config, train, progress=False, log=lambda s: None)
    distilled = time.perf_counter() - started
    evaluation = evaluate_bank(bank, test, networks=args.networks, epochs=args.eval_epochs, width=args.eval_width,
                               device=args.device, seed=args.seed, progress=False, protocol=args.protocol)
    if args.out_dir:
        save(bank, evaluation, row, budget, args.out_dir)
    error = bank.provenance.get("quantization", {}).get("decoded_error", {}).get("relative_rmse")
    return {**result, "fits": True, "examples": len(bank), "bytes": bank.storage["bytes_stored"],
            "values": bank.storage["floats_stored"], "relative_error": error, "distill_seconds": distilled,
            "accuracies": evaluation.accuracies, "mean": evaluation.mean, "std": evaluation.std}


def save(bank: MemoryBank, evaluation, row: Row, budget: int, out_dir: str) -> None:
    bank.add_evaluation(evaluation)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    name = f"fmnist-{budget}byteipc-{row.method}-{row.dtype}" + ("" if row.mode == NONE else f"-{row.mode}")
    bank.save(Path(out_dir) / f"{name}.safetensors")


HEADER = ("| 8-bit images per class (bytes) | method | storage | quantisation | examples | bytes stored | "
          "decoded error | accuracy % |\n|---|---|---|---|---|---|---|---|")


def markdown(r: dict) -> str:
    """One table line."""
    lead = f"| {r['ipc_bytes']} ({r['budget_bytes']:,}) | {r['method']} | {r['dtype']} | {r['mode']} |"
    if not r["fits"]:
        return f"{lead} - | - | - | does not fit: {r['problem']} |"
    error = "-" if r["relative_error"] is None else f"{100 * r['relative_error']:.2f} %"
    return (f"{lead} {r['examples']} | {r['bytes']:,} | {error} | "
            f"{100 * r['mean']:.2f} +- {100 * r['std']:.2f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ipc-bytes", type=int, nargs="+", default=[1, 10],
                   help="budgets: the bytes of this many 8-bit images per class")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--dtypes", nargs="+", default=["f32", "f16", "int8"],
                   choices=("f32", "f16", "bf16", "int8", "int8-row"))
    p.add_argument("--modes", nargs="+", default=[POST, AWARE], choices=(POST, AWARE),
                   help="for float16 and 8-bit distilled banks: quantised after distillation, or during it")
    p.add_argument("--protocol", default="recipe", choices=("recipe", "standard"),
                   help="evaluation: recipe (each bank's own network, a screening) or standard (ConvNet-128)")
    p.add_argument("--networks", type=int, default=3, help="fresh evaluation networks per bank")
    p.add_argument("--eval-epochs", type=int, default=None, help="default: the protocol's (300)")
    p.add_argument("--eval-width", type=int, default=None, help="recipe protocol: another network width")
    g = p.add_argument_group("distillation (defaults: the screening settings)")
    g.add_argument("--width", type=int, default=SCREENING["width"], help="ConvNet width")
    g.add_argument("--iterations", type=int, default=SCREENING["iterations"])
    g.add_argument("--unroll-steps", type=int, default=SCREENING["unroll_steps"])
    g.add_argument("--inner-batch", type=int, default=SCREENING["inner_batch"])
    g.add_argument("--real-batch", type=int, default=SCREENING["real_batch"])
    g.add_argument("--outer-lr", type=float, default=SCREENING["outer_lr"])
    g.add_argument("--init", choices=("random", "real"), default=SCREENING["init"])
    g.add_argument("--n-bases", type=int, default=None, help="rtp K (default: the budget rule)")
    g.add_argument("--downsample", type=int, default=None, help="rtp ds (default: the budget rule)")
    g.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out-dir", default=None, help="save the evaluated banks here")
    p.add_argument("--json", default=None, help="also write every row to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train, test = load_source("fashion-mnist", "train"), load_source("fashion-mnist", "test")
    print(f"protocol {args.protocol}, {args.networks} networks; distillation: width {args.width}, "
          f"{args.iterations} iterations, unroll {args.unroll_steps}, outer lr {args.outer_lr:g}, init {args.init}")
    print(HEADER, flush=True)
    results = []
    for budget in args.ipc_bytes:
        for row in table_rows(args.methods, args.dtypes, args.modes):
            results.append(run_row(row, budget, train, test, args))
            print(markdown(results[-1]), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
    print()
    for budget in args.ipc_bytes:
        print(best_line([r for r in results if r["ipc_bytes"] == budget and r["fits"]], budget))
    return 0


def best_line(rows: list[dict], budget: int) -> str:
    """The best 8-bit bank against the best float32 one at one budget."""
    def best(dtypes: tuple[str, ...]) -> dict | None:
        return max((r for r in rows if r["dtype"] in dtypes), key=lambda r: r["mean"], default=None)

    int8, f32 = best(("int8", "int8-row")), best(("f32",))
    if int8 is None or f32 is None:
        return f"{budget} 8-bit image(s) per class: no 8-bit or no float32 bank to compare"
    return (f"{budget} 8-bit image(s) per class: best 8-bit {int8['row']} {100 * int8['mean']:.2f} %, best float32 "
            f"{f32['row']} {100 * f32['mean']:.2f} %: {100 * (int8['mean'] - f32['mean']):+.2f} points")


if __name__ == "__main__":
    sys.exit(main())
