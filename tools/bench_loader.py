"""Loader benchmark: MemoryDataset vs torchvision's FashionMNIST, and decode vs a plain copy.

Prints one table measured in one run on this machine. Targets (issue 2): MemoryDataset at least
10x torchvision's loader with tensor output; `bank.decode` within 3x of copying the same bytes.

    python tools/bench_loader.py [--root /usr/share/datasets/fashion-mnist] [--images 60000]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from compressdata import MemoryBank, MemoryDataset, Normalization

FMNIST_MEAN, FMNIST_STD = [0.2861], [0.3530]


def torchvision_fashion_mnist(root: Path, workdir: Path):
    """torchvision's FashionMNIST over the local IDX files (decompressed where it expects them)."""
    from torchvision import datasets, transforms

    raw = workdir / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in root.glob("*-ubyte.gz"):
        with gzip.open(gz) as src, open(raw / gz.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(FMNIST_MEAN, FMNIST_STD)])
    return datasets.FashionMNIST(str(workdir), train=True, transform=tf, download=False)


def fashion_mnist_sized_bank(n_examples: int, n_bases: int, downsample: int = 2) -> MemoryBank:
    """A memory bank shaped like a Fashion-MNIST bank (K bases at ds=2), `n_examples` addresses."""
    g = torch.Generator().manual_seed(0)
    side = 28 // downsample
    return MemoryBank(
        bases=torch.randn(n_bases, 1, side, side, generator=g),
        addresses=torch.randn(n_examples, n_bases, generator=g) / n_bases**0.5,
        labels=torch.arange(n_examples) % 10,
        classes=[str(i) for i in range(10)],
        image_size=(28, 28),
        normalization=Normalization(FMNIST_MEAN, FMNIST_STD),
    )


def images_per_second(dataset, num_workers: int, batch_size: int, max_images: int) -> float:
    """Throughput of a shuffled DataLoader pass over up to `max_images` images (after one warm-up batch)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0), persistent_workers=False)
    seen, start = 0, None
    for images, _ in loader:
        if start is None:
            start = time.perf_counter()
            continue
        seen += images.shape[0]
        if seen >= max_images:
            break
    return seen / (time.perf_counter() - start)


def best_rate(fn: Callable[[], None], n_images: int, repeats: int = 20) -> float:
    """Images per second of `fn` (best of `repeats` timings after a warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n_images / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--images", type=int, default=60000, help="images per DataLoader measurement")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--decode-bases", type=int, nargs="+", default=[16, 64],
                        help="numbers of bases K for the decode-vs-copy rows (16 is the distiller's default)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads in the main process (DataLoader workers use 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bank = fashion_mnist_sized_bank(60000, n_bases=args.decode_bases[0])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tv = torchvision_fashion_mnist(args.root, Path(tmp))
        mem = MemoryDataset(bank)
        for workers in (0, 2):
            tv_rate = images_per_second(tv, workers, args.batch_size, args.images)
            mem_rate = images_per_second(mem, workers, args.batch_size, args.images)
            rows.append((f"DataLoader, num_workers={workers}", "torchvision FashionMNIST", tv_rate,
                         "MemoryDataset (tensor)", mem_rate, 10.0))

    index = torch.randperm(len(bank), generator=torch.Generator().manual_seed(1))[: args.batch_size]
    for n_bases in args.decode_bases:
        sized = fashion_mnist_sized_bank(60000, n_bases=n_bases)
        decoded = sized.decode()
        copy_rate = best_rate(lambda d=decoded: d.index_select(0, index), args.batch_size)
        decode_rate = best_rate(lambda b=sized: b.decode(index), args.batch_size)
        rows.append((f"batch of {args.batch_size}, K={n_bases}", "copy of decoded bytes", copy_rate,
                     "bank.decode", decode_rate, 1 / 3))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bank: {bank}")
    header = (f"| {'measurement':<30} | {'baseline':<26} | {'img/s':>10} | {'compressdata':<22} | {'img/s':>10} "
              "| ratio | target |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for what, base_name, base, ours_name, ours, target in rows:
        ratio = ours / base
        verdict = "ok" if ratio >= target else "MISSED"
        print(f"| {what:<30} | {base_name:<26} | {base:>10,.0f} | {ours_name:<22} | {ours:>10,.0f} | "
              f"{ratio:5.2f} | >= {target:.2f} {verdict} |")


if __name__ == "__main__":
    main()
