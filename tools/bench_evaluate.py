"""Evaluation cost benchmark: what one standard-protocol network costs on this machine.

Times the library's own training loop (`train_network`, ConvNet-3 of width 128 on
Fashion-MNIST-shaped data) per epoch at the sizes of IPC 1, 10 and 50 banks and of the full training
split, and one test pass (`test_accuracy`) over 10000 images, three ways: eager, eager without
PyTorch's oneDNN (mkldnn) CPU kernels, and through `torch.compile` (compile_networks=True; the
one-time compile is excluded and reported apart). Each figure is the minimum over --repeats
interleaved runs (the machine may be shared). Then it extrapolates one network under the standard
protocol (300 epochs, 1000 with DSA, plus the test pass) and one full-data epoch.

    OMP_NUM_THREADS=1 python tools/bench_evaluate.py [--threads 1] [--repeats 1] [--width 128]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import torch

from compressdata.bank.metadata import Normalization, TrainingRecipe
from compressdata.data.sources import RealData
from compressdata.evaluate import resolve_training, test_accuracy, train_network
from compressdata.models import build_model

SIZES = {"IPC 1": 10, "IPC 10": 100, "IPC 50": 500}
FULL = 60000
VARIANTS = ("eager", "no oneDNN", "compiled")


def fake_split(n: int, seed: int) -> RealData:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    return RealData(pixels, torch.arange(n) % 10, [str(c) for c in range(10)], "bench", "test",
                    Normalization([0.286], [0.353]))


def network(width: int, variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("convnet", 1, 10, (28, 28), width=width)
    return torch.compile(model) if variant == "compiled" else model


def timed(variant: str, work: Callable[[], object]) -> float:
    with torch.backends.mkldnn.flags(enabled=variant != "no oneDNN"):
        start = time.perf_counter()
        work()
        return time.perf_counter() - start


Job = tuple[Callable[[], float], float]  # (a run returning wall seconds, seconds -> the reported unit)


def epoch_job(n: int, width: int, epochs: int, dsa: bool, variant: str, scale: float = 1.0) -> Job:
    """`train_network` for `epochs` epochs on `n` images; reported per epoch (times `scale`)."""
    data = fake_split(n, 0)
    recipe = resolve_training(TrainingRecipe(augmentation="dsa" if dsa else "none"), "standard", width=width,
                              epochs=epochs).recipe

    def run() -> float:
        model = network(width, variant)
        return timed(variant, lambda: train_network(model, data.images, data.labels, recipe, device="cpu"))
    return run, scale / epochs


def test_job(width: int, images: int, variant: str) -> Job:
    """`test_accuracy` over `images` images; reported per 10000."""
    test = fake_split(images, 1)
    model = network(width, variant)
    return (lambda: timed(variant, lambda: test_accuracy(model, test, "cpu"))), 10000 / images


def best_of(repeats: int, jobs: dict[str, Job]) -> tuple[dict[str, float], float]:
    """(each job's minimum over 1 + `repeats` interleaved runs in its unit, the compiled job's
    first run minus its best in wall seconds: the one-time compile)."""
    first = {name: run() for name, (run, _) in jobs.items()}
    best = dict(first)
    for _ in range(repeats):
        for name, (run, _) in jobs.items():
            best[name] = min(best[name], run())
    return {name: best[name] * unit for name, (_, unit) in jobs.items()}, first["compiled"] - best["compiled"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--test-images", type=int, default=2048, help="images timed for the test pass")
    parser.add_argument("--full-batches", type=int, default=4, help="256-image batches timed for a full epoch")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
    torch.set_num_threads(args.threads)
    rows: dict[str, dict[str, float]] = {}
    compile_seconds = []
    jobs = {f"epoch, {label} ({n} images){', DSA' if dsa else ''}":
            (lambda v, n=n, dsa=dsa: epoch_job(n, args.width, max(2, 200 // n), dsa, v))
            for label, n in SIZES.items() for dsa in (False, True)}
    batches = 256 * args.full_batches
    jobs["full-data epoch (60000 images)"] = lambda v: epoch_job(batches, args.width, 1, False, v, FULL / batches)
    jobs["test pass (10000 images)"] = lambda v: test_job(args.width, args.test_images, v)
    for name, job in jobs.items():
        rows[name], compiling = best_of(args.repeats, {v: job(v) for v in VARIANTS})
        compile_seconds.append(compiling)
    print(f"ConvNet-3 width {args.width}, {args.threads} thread(s), min of {args.repeats + 1} runs; seconds")
    print("| what | " + " | ".join(VARIANTS) + " |")
    print("|---|" + "---|" * len(VARIANTS))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[v]:.3f}" for v in VARIANTS) + " |")
    print(f"\nfirst compiled run over its best, per job (the one-time compile): "
          f"{', '.join(f'{s:.0f}' for s in compile_seconds)} s")
    print("\nOne network under the standard protocol, eager -> compiled:")
    test = rows["test pass (10000 images)"]
    for label, n in SIZES.items():
        plain, dsa = rows[f"epoch, {label} ({n} images)"], rows[f"epoch, {label} ({n} images), DSA"]
        cost = {v: (300 * plain[v] + test[v], 1000 * dsa[v] + test[v]) for v in ("eager", "compiled")}
        print(f"- {label}: {cost['eager'][0]:.0f} -> {cost['compiled'][0]:.0f} s without augmentation "
              f"(300 epochs), {cost['eager'][1]:.0f} -> {cost['compiled'][1]:.0f} s with DSA (1000 epochs)")
    full = rows["full-data epoch (60000 images)"]
    print(f"- full data: {full['eager']:.0f} -> {full['compiled']:.0f} s per epoch")


if __name__ == "__main__":
    main()
