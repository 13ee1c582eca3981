"""Drop-in replacement: a plain torchvision FashionMNIST training script in which one line
changes to train on a memory bank instead of the 60,000 real images.

    # train_set = datasets.FashionMNIST(root, train=True, transform=transform)
    train_set = MemoryDataset(load_memory_bank(BANK), output="pil", transform=transform)

`output="pil"` hands the script PIL images exactly like torchvision does, so its own
ToTensor() + Normalize() pipeline runs unchanged. (For a bank distilled with ZCA whitening use
`output="tensor"` and drop the transform: the pixels alone do not carry the whitening.)

Usage (nothing is downloaded; the real data comes from /usr/share/datasets/fashion-mnist):
    python tools/dropin_example.py --bank out/fmnist.safetensors   # a bank file
    python tools/dropin_example.py --bank user/fmnist-mem           # a Hub dataset repo
    python tools/dropin_example.py --baseline-ipc 10                # 10 random real images per
                                                                    # class, saved as a bank first
    python tools/dropin_example.py --real --epochs 2                # the original script
Prints the accuracy on the real 10,000-image test split.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from compressdata import MemoryBank, MemoryDataset, load_memory_bank
from compressdata.data.sources import load_source

IDX_SOURCE = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def torchvision_root(cache: Path) -> Path:
    """A torchvision `root` holding FashionMNIST/raw/*, unpacked from the local gzip IDX files."""
    raw = cache / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        target = raw / name
        if not target.exists():
            fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as out, gzip.open(IDX_SOURCE / f"{name}.gz") as src:
                shutil.copyfileobj(src, out)
            os.replace(tmp, target)
    return cache


def baseline_bank(per_class: int, seed: int, path: Path) -> Path:
    """Save `per_class` random real training images per class as a `pixels` bank."""
    real = load_source("fashion-mnist", split="train")
    subset = real.balanced_subset(per_class, torch.Generator().manual_seed(seed))
    bank = MemoryBank(
        pixels=subset.images, labels=subset.labels, classes=subset.classes,
        normalization=subset.normalization,
        provenance={"source": {"dataset": "fashion-mnist", "split": "train"},
                    "method": {"name": "random-real", "per_class": per_class, "seed": seed}},
    )
    bank.save(path)
    return path


# ---------------------------------------------------------------------------------------------
# The training script as anyone writes it for torchvision's FashionMNIST.
# ---------------------------------------------------------------------------------------------


class Net(nn.Module):
    """A small convolutional network (two conv blocks, one hidden layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
                                        nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def train(args: argparse.Namespace, root: Path) -> float:
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((0.2860,), (0.3530,))])
    if args.bank is None:
        train_set = datasets.FashionMNIST(root, train=True, download=False, transform=transform)
    else:  # the one changed line:
        train_set = MemoryDataset(load_memory_bank(args.bank), output="pil", transform=transform)
    test_set = datasets.FashionMNIST(root, train=False, download=False, transform=transform)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=1000)

    model = Net().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(args.epochs // 2, 1),
                                                gamma=0.1)
    for epoch in range(args.epochs):
        model.train()
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
        scheduler.step()
        if (epoch + 1) % max(args.epochs // 5, 1) == 0:
            print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}")

    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in test_loader:
            predictions = model(images.to(device)).argmax(dim=1)
            correct += (predictions == labels.to(device)).sum().item()
    return correct / len(test_set)


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bank", help="bank file or Hub id to train on")
    source.add_argument("--baseline-ipc", type=int, help="make a random-real bank of N per class")
    source.add_argument("--real", action="store_true", help="train on the 60,000 real images")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs (default 300 on a bank, 2 on the real data)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "compressdata-dropin",
                        help="folder for the unpacked torchvision files (and a baseline bank)")
    args = parser.parse_args()
    root = torchvision_root(args.cache)
    if args.baseline_ipc is not None:
        path = args.cache / f"random-real-ipc{args.baseline_ipc}-seed{args.seed}.safetensors"
        args.bank = str(baseline_bank(args.baseline_ipc, args.seed, path))
    if args.epochs is None:
        args.epochs = 2 if args.real else 300
    start = time.perf_counter()
    accuracy = train(args, root)
    what = "the real training set" if args.bank is None else args.bank
    print(f"trained on {what} for {args.epochs} epochs in {time.perf_counter() - start:.0f} s; "
          f"accuracy on the real Fashion-MNIST test split (10,000 images): {100 * accuracy:.2f}%")


if __name__ == "__main__":
    main()
