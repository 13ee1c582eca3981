"""Evaluation of a bank over several networks with one share of the networks per rank.

Network k (k = 0..N-1) is trained with seed `seed + k` exactly as `evaluate_bank` trains it (its
random-real baseline too, on the subset drawn with `seed`); rank r trains the networks k = r,
r + W, r + 2W, ..., and every rank gathers all accuracies in network order, so the result equals a
single-process `evaluate_bank` with the same arguments.
"""

from __future__ import annotations

from typing import Any

import torch

from compressdata.bank.metadata import RANDOM_REAL, EvaluationResult
from compressdata.data.sources import RealData
from compressdata.errors import UsageError
from compressdata.evaluate import evaluate_bank, resolve_training
from compressdata.runtime.distributed import current_world, gather_floats


def evaluate_bank_over_ranks(bank: Any, test: RealData, *, arch: str | None = None,
                             networks: int = 5, epochs: int | None = None,
                             device: torch.device | str | None = None, seed: int = 0,
                             width: int | None = 128, progress: bool = True,
                             augmentation: str | None = None, lr: float | None = None,
                             protocol: str = "recipe", baselines: bool = False,
                             train: RealData | None = None, compile_networks: bool = False,
                             check_classes: bool = True) -> EvaluationResult:
    """`evaluate_bank` with the networks split over the ranks of the process group (every rank
    returns the full result); in one process it is `evaluate_bank` itself."""
    options = {"arch": arch, "epochs": epochs, "width": width, "augmentation": augmentation, "lr": lr}
    runtime = {"device": device, "protocol": protocol, "baselines": baselines, "train": train,
               "compile_networks": compile_networks, "check_classes": check_classes}
    world = current_world()
    if world.size == 1:
        return evaluate_bank(bank, test, networks=networks, seed=seed, progress=progress, **runtime, **options)
    if networks < 1:
        raise UsageError(f"networks must be >= 1; got {networks}")
    training = resolve_training(bank.recipe, protocol, networks=networks, **options)
    mine = list(range(world.rank, networks, world.size))  # rank 0 always has network 0
    results = [evaluate_bank(bank, test, networks=1, seed=seed + k, subset_seed=seed,
                             progress=progress and world.is_main, **runtime, **options)
               for k in mine]
    seeds = [seed + k for k in range(networks)]
    template = results[0] if results else EvaluationResult(
        training.recipe.architecture, [], f"{test.name}/{test.split}", training.recipe.epochs)
    result = _with_accuracies(template, _gathered([r.accuracies[0] for r in results], networks), seeds)
    result.extra["ranks"] = world.size
    result.extra.pop("protocol_overrides", None)
    if training.overrides:
        result.extra["protocol_overrides"] = dict(training.overrides)
    if baselines:
        random_real = _gathered([r.baselines[RANDOM_REAL].accuracies[0] for r in results], networks)
        if results:
            result.baselines[RANDOM_REAL] = _with_accuracies(template.baselines[RANDOM_REAL], random_real, seeds)
    return result


def _gathered(mine: list[float], networks: int) -> list[float]:
    """All ranks' values in network order (rank r holds networks r, r + W, ...)."""
    parts = gather_floats(mine)
    size = len(parts)
    return [parts[k % size][k // size] for k in range(networks)]


def _with_accuracies(template: EvaluationResult, accuracies: list[float], seeds: list[int]) -> EvaluationResult:
    return EvaluationResult(template.architecture, accuracies, template.test, template.epochs,
                            protocol=template.protocol, baselines=dict(template.baselines),
                            extra={**template.extra, "seeds": seeds})
