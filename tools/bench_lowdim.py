"""Low-dimensional-structure benchmark (Kinoshita, Nishikawa & Toyoizumi, 2026): distilled vs random real
points at equal memory on synthetic multi-index tasks, against the theory's r^2 d + L.

For each (d, r) and each memory factor f, m = max(2r, ceil(f * (r^2 d + L) / d)) points are stored
(m*d floats; hard labels not counted). Distilled points (compressdata.research.lowdim.distill_points, BPTT
reverse pass) and the m random real points they start from are each used to train fresh two-layer
networks of width L (the learner's T full-batch SGD steps; random real also for --long-steps), tested
on fresh real points; the reference is the same network trained on --reference-points real points.
Prints a markdown table and writes a PNG plot.

    python tools/bench_lowdim.py --threads 1 [--pairs 16x2 32x2 64x2 32x1 32x3] [--factors 0.5 1 2 4]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from compressdata.research.lowdim import Learner, MultiIndexTask, accuracy, distill_points


def _mean_std(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values)
    return float(t.mean()), float(t.std(unbiased=False))


def _pair(text: str) -> tuple[int, int]:
    d, _, r = text.partition("x")
    return int(d), int(r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", type=_pair, default=[(16, 2), (32, 2), (64, 2), (32, 1), (32, 3)],
                        help="d x r pairs, e.g. 32x2")
    parser.add_argument("--factors", nargs="+", type=float, default=[0.5, 1.0, 2.0, 4.0],
                        help="stored floats as multiples of r^2 d + L")
    parser.add_argument("--width", type=int, default=32, help="L, the hidden width")
    parser.add_argument("--steps", type=int, default=20, help="T, inner full-batch SGD steps")
    parser.add_argument("--inner-lr", type=float, default=0.1)
    parser.add_argument("--iterations", type=int, default=80, help="outer iterations per distillation")
    parser.add_argument("--outer-lr", type=float, default=0.03)
    parser.add_argument("--networks", type=int, default=5, help="fresh networks per evaluation")
    parser.add_argument("--long-steps", type=int, default=500, help="longer training for random real")
    parser.add_argument("--reference-points", type=int, default=20000)
    parser.add_argument("--test-points", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", type=Path, default=Path("runs/lowdim.png"))
    parser.add_argument("--references-only", action="store_true",
                        help="only the reference networks (T steps and --long-steps on the real points)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    learner = Learner(width=args.width, steps=args.steps, lr=args.inner_lr)
    seeds = range(1000, 1000 + args.networks)  # evaluation inits, disjoint from distillation's
    if args.references_only:
        _references(args, learner, seeds)
        return

    print(f"L={args.width}, T={args.steps} inner steps (lr {args.inner_lr}, momentum 0.9), {args.iterations} outer "
          f"iterations (Adam {args.outer_lr}), {args.networks} networks, {args.test_points} test points\n")
    print("| d | r | r^2 d + L | m points | floats | floats / (r^2 d + L) | distilled % | random real % (T steps) "
          f"| random real % ({args.long_steps} steps) | reference % ({args.reference_points} real) | distil s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    curves: dict[tuple[int, int], list[tuple[float, ...]]] = {}
    for d, r in args.pairs:
        task = MultiIndexTask(d, r, seed=args.seed)
        g = torch.Generator().manual_seed(args.seed + 1)
        x_test, y_test = task.sample(args.test_points, g)
        x_ref, y_ref = task.sample(args.reference_points, g)
        reference = _mean_std([accuracy(learner.train(task, x_ref, y_ref, s, steps=args.long_steps), x_test, y_test)
                               for s in seeds])[0]
        theory = r * r * d + args.width
        sizes = sorted({max(2 * r, math.ceil(f * theory / d)) for f in args.factors})
        for m in sizes:
            start = time.perf_counter()
            x, y, x0, y0 = distill_points(task, learner, m, iterations=args.iterations, outer_lr=args.outer_lr,
                                          seed=args.seed)
            seconds = time.perf_counter() - start
            dist = _mean_std([accuracy(learner.train(task, x, y, s), x_test, y_test) for s in seeds])
            real = _mean_std([accuracy(learner.train(task, x0, y0, s), x_test, y_test) for s in seeds])
            real_long = _mean_std([accuracy(learner.train(task, x0, y0, s, steps=args.long_steps), x_test, y_test)
                                   for s in seeds])
            print(f"| {d} | {r} | {theory} | {m} | {m * d} | {m * d / theory:.2f} | "
                  f"{100 * dist[0]:.1f} +- {100 * dist[1]:.1f} | {100 * real[0]:.1f} +- {100 * real[1]:.1f} | "
                  f"{100 * real_long[0]:.1f} +- {100 * real_long[1]:.1f} | {100 * reference:.1f} | {seconds:.0f} |",
                  flush=True)
            curves.setdefault((d, r), []).append((m * d / theory, dist[0], real[0], real_long[0], reference))

    _plot(curves, args.plot)
    print(f"\nwrote {args.plot}")


def _references(args: argparse.Namespace, learner: Learner, seeds: range) -> None:
    """The learner trained on --reference-points real points: T steps (what distilled points are
    trained with) and --long-steps steps."""
    print(f"| d | r | reference % (T={args.steps} steps) | reference % ({args.long_steps} steps) |")
    print("|---|---|---|---|")
    for d, r in args.pairs:
        task = MultiIndexTask(d, r, seed=args.seed)
        g = torch.Generator().manual_seed(args.seed + 1)
        x_test, y_test = task.sample(args.test_points, g)
        x_ref, y_ref = task.sample(args.reference_points, g)
        short, long = (_mean_std([accuracy(learner.train(task, x_ref, y_ref, s, steps=steps), x_test, y_test)
                                  for s in seeds]) for steps in (args.steps, args.long_steps))
        print(f"| {d} | {r} | {100 * short[0]:.1f} +- {100 * short[1]:.1f} | {100 * long[0]:.1f} +- "
              f"{100 * long[1]:.1f} |", flush=True)


def _plot(curves: dict[tuple[int, int], list[tuple[float, ...]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for k, ((d, r), points) in enumerate(curves.items()):
        color = f"C{k}"
        ratio, dist, real, real_long, ref = (list(v) for v in zip(*points, strict=True))
        ax.plot(ratio, [100 * a for a in dist], "o-", color=color, label=f"d={d} r={r} distilled")
        ax.plot(ratio, [100 * a for a in real_long], "x--", color=color, alpha=0.6, label=f"d={d} r={r} random real")
        ax.axhline(100 * ref[0], color=color, lw=0.6, ls=":")
    ax.axvline(1.0, color="gray", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("stored floats / (r^2 d + L)")
    ax.set_ylabel("test accuracy %")
    ax.set_title("multi-index tasks: distilled vs random real points (dotted: reference)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


if __name__ == "__main__":
    main()
