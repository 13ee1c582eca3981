"""Parameterizations: how stored tensors decode into examples (the one decode) and budget rules."""

from compressdata.params.base import PARAMETERIZATIONS, Parameterization, get_parameterization
from compressdata.params.budget import Layout, layout_for_budget
from compressdata.params.lowrank import decode_lowrank
from compressdata.params.memory import decode_memory, upsample
from compressdata.params.pixels import decode_pixels

__all__ = [
    "PARAMETERIZATIONS",
    "Layout",
    "Parameterization",
    "decode_lowrank",
    "decode_memory",
    "decode_pixels",
    "get_parameterization",
    "layout_for_budget",
    "upsample",
]
