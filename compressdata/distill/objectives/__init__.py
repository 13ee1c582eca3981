"""Distillation objectives, by name. Every objective works with every parameterization: it only
sees the learnable tensors `theta` and decodes them through `run.synthetic`."""

from compressdata.distill.objectives.base import Objective, ObjectiveResult, draw_seeds
from compressdata.distill.objectives.bptt import bptt_objective

OBJECTIVES: dict[str, Objective] = {"bptt": bptt_objective}


def get_objective(name: str) -> Objective:
    """The objective called `name`; ValueError naming the known ones otherwise."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES)}") from None


__all__ = ["OBJECTIVES", "Objective", "ObjectiveResult", "draw_seeds", "get_objective"]
