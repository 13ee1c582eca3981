"""Distillation objectives, by name. Every objective works with every parameterization: it only
sees the learnable tensors `theta` and decodes them through `run.synthetic`.

Each objective module registers its name and its option group (a frozen dataclass, e.g. `MTTOptions`)
with `distill.options`, so `DistillConfig` and the `distill` command line know them. Some objectives also
learn extra tensors that are not stored (EXTRA_THETA, e.g. mtt's `syn_lr`) or
decide how the bank is labelled and trained on (FINISHERS, e.g. dwa's teacher soft labels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from compressdata.bank.metadata import TrainingRecipe
from compressdata.distiller.objectives.base import Objective, ObjectiveResult, draw_seeds
from compressdata.distiller.objectives.bptt import bptt_objective
from compressdata.distiller.objectives.dm import dm_objective
from compressdata.distiller.objectives.dwa import dwa_finish, dwa_objective
from compressdata.distiller.objectives.gm import gm_objective
from compressdata.distiller.objectives.mim import with_mim
from compressdata.distiller.objectives.mtt import mtt_extra_theta, mtt_finish, mtt_objective
from compressdata.distiller.run import DistillRun
from compressdata.errors import UsageError

if TYPE_CHECKING:
    from compressdata.distiller.config import DistillConfig

OBJECTIVES: dict[str, Objective] = {"bptt": bptt_objective, "dm": dm_objective, "gm": gm_objective,
                                    "mtt": mtt_objective, "dwa": dwa_objective}

# extra(run) -> learnable tensors added to theta at initialisation (never stored in the bank).
ExtraTheta = Callable[[DistillRun], dict[str, torch.Tensor]]
EXTRA_THETA: dict[str, ExtraTheta] = {"mtt": mtt_extra_theta}

# finish(run, theta, recipe, labels, label_space) -> (recipe, labels, label_space) of the bank.
Finisher = Callable[[DistillRun, dict[str, torch.Tensor], TrainingRecipe, torch.Tensor, str],
                    tuple[TrainingRecipe, torch.Tensor, str]]
FINISHERS: dict[str, Finisher] = {"mtt": mtt_finish, "dwa": dwa_finish}


def get_objective(name: str) -> Objective:
    """The objective called `name`; ValueError naming the known ones otherwise."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise UsageError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES)}") from None


def objective_for(config: DistillConfig) -> Objective:
    """The config's objective with its add-ons (mim when mim_weight > 0) wrapped around it."""
    objective = get_objective(config.objective)
    if config.mim.enabled:
        objective = with_mim(objective, config.mim.weight, config.mim.temperature)
    return objective


__all__ = ["EXTRA_THETA", "FINISHERS", "OBJECTIVES", "Objective", "ObjectiveResult", "draw_seeds", "get_objective",
           "objective_for"]
