"""Distillation objectives, by name. Every objective works with every parameterization: it only
sees the learnable tensors `theta` and decodes them through `run.synthetic`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compressdata.distill.objectives.base import Objective, ObjectiveResult, draw_seeds
from compressdata.distill.objectives.bptt import bptt_objective
from compressdata.distill.objectives.dm import dm_objective
from compressdata.distill.objectives.gm import gm_objective

if TYPE_CHECKING:
    from compressdata.distill.config import DistillConfig

OBJECTIVES: dict[str, Objective] = {"bptt": bptt_objective, "dm": dm_objective, "gm": gm_objective}


def get_objective(name: str) -> Objective:
    """The objective called `name`; ValueError naming the known ones otherwise."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES)}") from None


def objective_for(config: DistillConfig) -> Objective:
    """The config's objective with its add-ons (mim when mim_weight > 0) wrapped around it."""
    objective = get_objective(config.objective)
    if config.mim_weight > 0:
        from compressdata.distill.objectives.mim import with_mim

        objective = with_mim(objective, config.mim_weight, config.mim_temperature)
    return objective


__all__ = ["OBJECTIVES", "Objective", "ObjectiveResult", "draw_seeds", "get_objective", "objective_for"]
