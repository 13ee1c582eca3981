"""The random-real baseline: a random real subset of the same storage as the bank, trained with the
same recipe and the same network seeds (DD-Ranking's improvement over random)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch

from compressdata.bank.metadata import EvaluationResult, Normalization, TrainingRecipe
from compressdata.data.sources import RealData
from compressdata.errors import UsageError
from compressdata.evaluate.training import fresh_network_accuracies


def real_images_per_class(floats_stored: int, image_shape: tuple[int, int, int], num_classes: int) -> int:
    """The number of real images per class whose storage (C*H*W floats each) is nearest to
    `floats_stored` floats over `num_classes` classes, at least 1. A bank made for a budget of k
    images per class stores at most k images' floats, so it gets k."""
    c, h, w = image_shape
    return max(1, math.floor(floats_stored / (c * h * w * num_classes) + 0.5))


def random_real_baseline(
    train: RealData,
    test: RealData,
    per_class: int,
    recipe: TrainingRecipe,
    seeds: Sequence[int],
    *,
    normalization: Normalization,
    subset_seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    compile_networks: bool = False,
) -> EvaluationResult:
    """Accuracy of fresh networks (one per seed) trained with `recipe` on `per_class` random real
    training images per class, drawn with `subset_seed`, seen through `normalization` (the bank's)
    and tested on `test` (already in that normalisation). Real labels are hard, so the label loss
    is cross-entropy whatever the recipe's."""
    if train.classes != test.classes:
        raise UsageError(f"the training split {train.name}/{train.split} and the test split "
                         f"{test.name}/{test.split} name different classes")
    subset = train.balanced_subset(per_class, torch.Generator().manual_seed(subset_seed))
    subset = subset.with_normalization(normalization)
    hard = replace(recipe, label_loss="cross_entropy", label_temperature=1.0)
    accuracies = fresh_network_accuracies(subset.images, subset.labels, hard, test, seeds, device=device,
                                          progress=progress, desc="random real baseline",
                                          compile_networks=compile_networks)
    return EvaluationResult(
        architecture=recipe.architecture, accuracies=accuracies, test=f"{test.name}/{test.split}",
        epochs=recipe.epochs,
        extra={"per_class": per_class, "train_examples": len(subset), "subset_seed": subset_seed,
               "source": f"{train.name}/{train.split}", "seeds": list(seeds)})
