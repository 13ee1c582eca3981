"""Evaluating a training set or a bank: fresh networks trained under a named protocol, each tested
once at the end on a real test split; mean and std, and optionally the baselines beside them."""

from __future__ import annotations

from typing import Any

import torch

from compressdata.bank.metadata import FULL_DATA, RANDOM_REAL, EvaluationResult, TrainingRecipe
from compressdata.data.sources import RealData
from compressdata.errors import UsageError
from compressdata.evaluate.baselines import random_real_baseline, real_images_per_class
from compressdata.evaluate.full_data import load_full_data_reference
from compressdata.evaluate.protocols import (
    RECIPE,
    SHAPED_ARCHITECTURES,
    ResolvedTraining,
    get_protocol,
    resolve_training,
)
from compressdata.evaluate.training import fresh_network_accuracies

CHANCE_FACTOR = 1.5  # a mean accuracy at most this times chance (1 / classes) is "at chance"


def evaluate_tensors(
    images: torch.Tensor,
    targets: torch.Tensor,
    recipe: TrainingRecipe,
    test: RealData,
    *,
    label_space: str = "index",
    arch: str | None = None,
    networks: int = 5,
    epochs: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    width: int | None = None,
    progress: bool = True,
    augmentation: str | None = None,
    lr: float | None = None,
    protocol: str = RECIPE,
    compile_networks: bool = False,
) -> EvaluationResult:
    """Train `networks` fresh networks (seeds seed..seed+networks-1) on (images, targets), images
    already in `test`'s normalised space, and test each once at the end on `test`.

    `protocol` names how they train (`compressdata.evaluate.protocols`): "recipe" uses `recipe`,
    "standard" the DC/DSA protocol with `recipe`'s label loss and augmentation. `arch` / `epochs`
    / `width` / `augmentation` / `lr` override it and are recorded in the result's
    extra["protocol_overrides"]; extra["recipe"] is the recipe every network trained with.
    `compile_networks` runs the networks through `torch.compile` (recorded as extra["compiled"]).
    """
    training = _resolve(recipe, protocol, networks, arch=arch, width=width, epochs=epochs,
                        augmentation=augmentation, lr=lr)
    _check_training_set(images, targets, label_space, test)
    seeds = [seed + k for k in range(networks)]
    accuracies = fresh_network_accuracies(images, targets, training.recipe, test, seeds, label_space=label_space,
                                          device=device, progress=progress,
                                          desc=f"evaluating {training.recipe.architecture}",
                                          compile_networks=compile_networks)
    result = _result(training, accuracies, test, seeds, int(images.shape[0]))
    if compile_networks:
        result.extra["compiled"] = True
    return result


def evaluate_bank(
    bank: Any,
    test: RealData,
    arch: str | None = None,
    networks: int = 5,
    epochs: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    width: int | None = None,
    progress: bool = True,
    augmentation: str | None = None,
    lr: float | None = None,
    *,
    protocol: str = RECIPE,
    baselines: bool = False,
    train: RealData | None = None,
    subset_seed: int | None = None,
    compile_networks: bool = False,
    check_classes: bool = True,
) -> EvaluationResult:
    """Evaluate a `MemoryBank` as `evaluate_tensors` does: decode once, test on `test`
    re-normalised with the bank's normalisation.

    baselines=True adds result.baselines: `random_real`, the same protocol and network seeds on a
    random subset of `train` (the real training split, required) holding as many real images per
    class as the bank's storage buys, drawn with `subset_seed` (default `seed`); and `full_data`,
    the cached full-data reference of this dataset, protocol and network when one exists
    (`compressdata baseline full`; fixed protocols only).

    The bank's class names must be the test split's (compared ignoring case and spaces: "T - shirt / top"
    is "T-shirt/top"), so that a bank is not scored on another dataset of the same shape;
    check_classes=False evaluates anyway.
    """
    if bank.num_classes != test.num_classes:
        raise UsageError(f"the bank has {bank.num_classes} classes; the test split "
                         f"{test.name}/{test.split} has {test.num_classes}")
    if check_classes:
        check_same_classes(bank.classes, test.classes, f"{test.name}/{test.split}")
    if tuple(bank.image_shape) != test.image_shape:
        raise UsageError(f"the bank decodes to {tuple(bank.image_shape)} images; the test split "
                         f"{test.name}/{test.split} has {test.image_shape}")
    if baselines and train is None:
        raise UsageError("baselines=True needs the real training split (train=...) to draw the random-real "
                         "baseline from")
    overrides = {"arch": arch, "width": width, "epochs": epochs, "augmentation": augmentation, "lr": lr}
    training = _resolve(bank.recipe, protocol, networks, **overrides)
    full = full_data_lookup(test.name, training) if baselines else None  # a bad cache file fails before training
    with torch.no_grad():
        images = bank.decode()
    test = test.with_normalization(bank.normalization)
    result = evaluate_tensors(images, bank.labels, bank.recipe, test, label_space=bank.label_space,
                              networks=networks, device=device, seed=seed, progress=progress, protocol=protocol,
                              compile_networks=compile_networks, **overrides)
    if baselines:
        seeds = result.extra["seeds"]
        per_class = real_images_per_class(bank.storage["floats_stored"], bank.image_shape, bank.num_classes)
        result.baselines[RANDOM_REAL] = random_real_baseline(
            train, test, per_class, training.recipe, seeds, normalization=bank.normalization,
            subset_seed=seed if subset_seed is None else subset_seed, device=device, progress=progress,
            compile_networks=compile_networks)
        if full is not None:
            result.baselines[FULL_DATA] = full
    return result


def chance_warning(result: EvaluationResult, num_classes: int) -> str | None:
    """A warning when `result` is at chance level (mean accuracy at most CHANCE_FACTOR / num_classes), else None."""
    chance = 1 / max(num_classes, 1)
    if result.mean > CHANCE_FACTOR * chance:
        return None
    return (f"accuracy {100 * result.mean:.2f} % is at chance level ({100 * chance:.1f} % for {num_classes} "
            "classes): the networks learned nothing from the bank. The distillation likely failed (too few "
            "iterations, an initialisation that did not move, a poor outer lr); look at it with "
            "`compressdata preview BANK --contrast`")


def check_same_classes(bank_classes: list[str], test_classes: list[str], test_name: str) -> None:
    """UsageError naming the first classes that differ, unless the names agree ignoring case and spaces."""
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(bank_classes, test_classes, strict=True))
              if _class_key(a) != _class_key(b)]
    if not differ:
        return
    shown = "; ".join(f"class {i}: {a!r} vs {b!r}" for i, a, b in differ[:3])
    more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
    raise UsageError(f"the bank's class names differ from the test split {test_name}'s: {shown}{more}; is this the "
                     "dataset the bank was distilled from?", hint="pass check_classes=False to evaluate anyway",
                     cli_hint="pass --allow-class-mismatch to evaluate anyway")


def _class_key(name: str) -> str:
    return "".join(str(name).split()).casefold()


def full_data_lookup(dataset: str, training: ResolvedTraining) -> EvaluationResult | None:
    """The cached full-data reference for an evaluation trained as `training` (None for the
    `recipe` protocol, which has none, or when none is cached)."""
    if get_protocol(training.protocol).recipe is None:
        return None
    return load_full_data_reference(dataset, training.protocol, training.network_key())


def _resolve(recipe: TrainingRecipe, protocol: str, networks: int, **overrides: Any) -> ResolvedTraining:
    if networks < 1:
        raise UsageError(f"networks must be >= 1; got {networks}")
    return resolve_training(recipe, protocol, networks=networks, **overrides)


def _check_training_set(images: torch.Tensor, targets: torch.Tensor, label_space: str, test: RealData) -> None:
    if tuple(images.shape[1:]) != test.image_shape:
        raise UsageError(f"training images have shape {tuple(images.shape[1:])}; the test split "
                         f"{test.name}/{test.split} has {test.image_shape}")
    if label_space == "index" and targets.numel() and int(targets.max()) >= test.num_classes:
        raise UsageError(f"labels reach class {int(targets.max())}; the test split has "
                         f"{test.num_classes} classes")
    if label_space != "index" and targets.ndim == 2 and targets.shape[1] != test.num_classes:
        raise UsageError(f"soft labels have {targets.shape[1]} classes; the test split has "
                         f"{test.num_classes}")


def _result(training: ResolvedTraining, accuracies: list[float], test: RealData, seeds: list[int],
            train_examples: int) -> EvaluationResult:
    recipe = training.recipe
    extra: dict[str, Any] = {"seeds": seeds, "train_examples": train_examples,
                             "augmentation": recipe.augmentation, "lr": recipe.lr, "recipe": recipe.to_dict()}
    if recipe.architecture in SHAPED_ARCHITECTURES:
        extra.update({"width": 128, "depth": 3} | recipe.network_options())
    if training.overrides:
        extra["protocol_overrides"] = dict(training.overrides)
    return EvaluationResult(architecture=recipe.architecture, accuracies=accuracies,
                            test=f"{test.name}/{test.split}", epochs=recipe.epochs, protocol=training.protocol,
                            extra=extra)
