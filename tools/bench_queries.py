"""Generalised queries serving a task the bank was not distilled for: Fashion-MNIST super-classes.

A 10-class rtp bank is asked for a 3-class problem (tops = T-shirt/top, Pullover, Coat, Shirt;
footwear = Sandal, Sneaker, Ankle boot; other = Trouser, Dress, Bag). Training sets, all from the same
stored floats (or fewer) except where said:

- relabel: the bank's own examples (= one-hot queries) with their classes mapped to super-classes;
- super-class query: one query per super-class, y uniform over its member classes (r examples each);
- mixture queries: --mixtures random Dirichlet(1) vectors over each super-class's members (r examples
  each), soft targets from `query_with_targets` mapped to super-classes (= one-hot of the super-class);
- relabel + mixture queries: both sets together;
- random real: one random real training image per original class (10 images, 7840 floats, at least
  the bank's storage), relabelled.

Fresh ConvNets (the bank's recipe, --epochs, --width) are trained on each and tested on the full real
test split with super-class labels. Prints a markdown table.

    python tools/bench_queries.py --bank runs/fmnist-rtp-ipc1.safetensors --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from compressdata import load_memory_bank
from compressdata.data.sources import RealData, load_source
from compressdata.evaluate import evaluate_tensors

SUPER_CLASSES = {
    "tops": ["T-shirt/top", "Pullover", "Coat", "Shirt"],
    "footwear": ["Sandal", "Sneaker", "Ankle boot"],
    "other": ["Trouser", "Dress", "Bag"],
}


def super_map(classes: list[str]) -> torch.Tensor:
    """int64 [num_classes]: the super-class index of every original class."""
    index = {name: s for s, members in enumerate(SUPER_CLASSES.values()) for name in members}
    missing = sorted(set(classes) - set(index))
    if missing:
        raise ValueError(f"classes {missing} belong to no super-class; expected Fashion-MNIST's classes")
    return torch.tensor([index[name] for name in classes])


def training_sets(bank, mixtures: int, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (images in the bank's space, super-class labels) for every query-based set."""
    to_super = super_map(bank.classes)
    members = [[bank.class_to_idx[n] for n in names] for names in SUPER_CLASSES.values()]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        relabel = (bank.decode(), to_super[bank.hard_labels()])
        uniform = torch.zeros(len(members), bank.num_classes)
        for s, cs in enumerate(members):
            uniform[s, cs] = 1.0 / len(cs)
        x = bank.query(uniform)
        superclass = (x, torch.arange(len(members)).repeat_interleave(len(x) // len(members)))
        vectors = torch.zeros(len(members) * mixtures, bank.num_classes)
        for s, cs in enumerate(members):
            weights = -torch.log(torch.rand(mixtures, len(cs), generator=g))  # Dirichlet(1) = normalised Exp(1)
            vectors[s * mixtures:(s + 1) * mixtures][:, cs] = weights / weights.sum(dim=1, keepdim=True)
        x, t = bank.query_with_targets(vectors)
        super_targets = torch.zeros(len(t), len(members)).index_add_(1, to_super, t)
        mixture = (x, super_targets.argmax(dim=1))
    return {
        "relabel (one-hot queries)": relabel,
        "super-class query (uniform y)": superclass,
        "mixture queries": mixture,
        "relabel + mixture queries": (torch.cat([relabel[0], mixture[0]]), torch.cat([relabel[1], mixture[1]])),
    }


def random_real(train: RealData, bank, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One random real training image per original class, in the bank's space, super-class labels."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.stack([idx[torch.randint(len(idx), (1,), generator=g)][0]
                         for idx in (train.class_indices(c) for c in range(train.num_classes))])
    images = bank.normalization.apply(train.float_pixels[picks])
    return images, super_map(train.classes)[train.labels[picks]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", default="runs/fmnist-rtp-ipc1.safetensors")
    parser.add_argument("--mixtures", type=int, default=10, help="random mixture vectors per super-class")
    parser.add_argument("--networks", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bank = load_memory_bank(args.bank)
    train, test = load_source("fashion-mnist", "train"), load_source("fashion-mnist", "test")
    if bank.classes != train.classes:
        raise ValueError(f"the bank's classes {bank.classes} are not Fashion-MNIST's {train.classes}")
    super_test = RealData(test.pixels, super_map(test.classes)[test.labels], list(SUPER_CLASSES), "fashion-mnist-super",
                          "test", bank.normalization)
    sets = training_sets(bank, args.mixtures, args.seed)
    sets["random real (1 per class)"] = random_real(train, bank, args.seed)
    floats = {name: bank.storage["floats_stored"] for name in sets}
    floats["random real (1 per class)"] = 10 * 784

    print(f"bank {args.bank}: {len(bank)} examples, {bank.storage['floats_stored']} floats; ConvNet width "
          f"{args.width}, {args.epochs} epochs ({bank.recipe.optimizer} lr {bank.recipe.lr}), "
          f"{args.networks} networks; "
          f"real test split (10,000) with 3 super-class labels\n")
    print("| training set | examples | stored floats | accuracy % (mean +- std) | seconds |")
    print("|---|---|---|---|---|")
    for name, (x, y) in sets.items():
        start = time.perf_counter()
        result = evaluate_tensors(x, y, bank.recipe, super_test, networks=args.networks, epochs=args.epochs,
                                  width=args.width, seed=args.seed, device="cpu", progress=False)
        print(f"| {name} | {len(x)} | {floats[name]} | {100 * result.mean:.2f} +- {100 * result.std:.2f} | "
              f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
