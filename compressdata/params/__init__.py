"""Parameterizations: how stored tensors decode into examples (the one decode, 8-bit dequantisation
included) and budget rules in bytes."""

from compressdata.params.base import PARAMETERIZATIONS, Parameterization, get_parameterization
from compressdata.params.budget import Layout, layout_for_budget
from compressdata.params.lowrank import decode_lowrank
from compressdata.params.memory import decode_memory, upsample
from compressdata.params.pixels import decode_pixels
from compressdata.params.quant import STORAGE_DTYPES, TensorStorage, dequantize, parse_storage

__all__ = [
    "PARAMETERIZATIONS",
    "STORAGE_DTYPES",
    "Layout",
    "Parameterization",
    "TensorStorage",
    "decode_lowrank",
    "decode_memory",
    "decode_pixels",
    "dequantize",
    "get_parameterization",
    "layout_for_budget",
    "parse_storage",
    "upsample",
]
