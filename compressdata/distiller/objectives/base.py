"""The objective interface: one outer iteration's loss and gradients for the synthetic tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from compressdata.distiller.run import DistillRun

SEED_BOUND = 2**62


@dataclass
class ObjectiveResult:
    """loss: the iteration's objective value; grads: d(loss)/d(theta[name]) for every name of theta
    (zeros where unused); metrics: extra numbers for the JSONL log (JSON-able)."""

    loss: float
    grads: dict[str, torch.Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)


# objective(run, theta, generator) -> ObjectiveResult. All randomness must come from `generator`
# (a CPU generator whose state is checkpointed), so resumed runs replay exactly. theta is not
# modified; the outer optimiser step is shared by all objectives (see `distill.outer`).
Objective = Callable[[DistillRun, dict[str, torch.Tensor], torch.Generator], ObjectiveResult]


def draw_seeds(generator: torch.Generator, n: int) -> list[int]:
    """n independent seeds from `generator` (one draw, so the generator advances the same way)."""
    return torch.randint(0, SEED_BOUND, (n,), generator=generator).tolist()
