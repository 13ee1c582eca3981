"""Evaluation of a bank over several networks with one share of the networks per rank.

Network k (k = 0..N-1) is trained with seed `seed + k` exactly as `evaluate_bank` trains it; rank r
trains the networks k = r, r + W, r + 2W, ..., and every rank gathers all accuracies in network order, so
the result equals a single-process `evaluate_bank` with the same arguments.
"""

from __future__ import annotations

from typing import Any

import torch

from compressdata.bank.metadata import EvaluationResult
from compressdata.data.sources import RealData
from compressdata.distill.distributed import current_world, gather_floats
from compressdata.evaluate import evaluate_bank


def evaluate_bank_over_ranks(bank: Any, test: RealData, *, arch: str | None = None,
                             networks: int = 5, epochs: int | None = None,
                             device: torch.device | str | None = None, seed: int = 0,
                             width: int = 128, progress: bool = True,
                             augmentation: str | None = None, lr: float | None = None) -> EvaluationResult:
    """`evaluate_bank` with the networks split over the ranks of the process group (every rank
    returns the full result); in one process it is `evaluate_bank` itself."""
    world = current_world()
    if world.size == 1:
        return evaluate_bank(bank, test, arch=arch, networks=networks, epochs=epochs,
                             device=device, seed=seed, width=width, progress=progress,
                             augmentation=augmentation, lr=lr)
    if networks < 1:
        raise ValueError(f"networks must be >= 1; got {networks}")
    mine = list(range(world.rank, networks, world.size))  # rank 0 always has network 0
    results = [evaluate_bank(bank, test, arch=arch, networks=1, epochs=epochs, device=device,
                             seed=seed + k, width=width, progress=progress and world.is_main,
                             augmentation=augmentation, lr=lr)
               for k in mine]
    parts = gather_floats([r.accuracies[0] for r in results])
    accuracies = [parts[k % world.size][k // world.size] for k in range(networks)]
    template = results[0] if results else EvaluationResult(
        arch or bank.recipe.architecture, [], f"{test.name}/{test.split}",
        epochs if epochs is not None else bank.recipe.epochs)
    extra = dict(template.extra)
    extra["seeds"] = [seed + k for k in range(networks)]
    extra["ranks"] = world.size
    return EvaluationResult(template.architecture, accuracies, template.test, template.epochs,
                            extra=extra)
