"""The registry of parameterizations: which tensors a kind stores and how they decode.

Every consumer (distiller, `MemoryBank`, spec test vectors) decodes through `Parameterization`, so
there is exactly one decoding rule per kind. Decoding has two steps: `prepare` (work done once per
set of stored tensors: 8-bit tensors dequantised (`params.quant`), the shared bases upsampled) and
`decode_prepared` (the examples asked for); `decode` runs both.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from compressdata.errors import UsageError
from compressdata.params.lowrank import decode_lowrank
from compressdata.params.memory import combine, decode_combined_first, expand_bases, upsample_first
from compressdata.params.pixels import decode_pixels
from compressdata.params.quant import float_values, scale_name, zero_point_name

Tensors = Mapping[str, torch.Tensor]
Prepared = dict[str, Any]  # tensors, and for a memory bank decoded combine-first its image size and mode
Index = torch.Tensor | slice | None
FLOAT32 = 4


DECODE_LIMIT_BYTES = 4 * 2**30
DECODE_LIMIT_ENV = "COMPRESSDATA_MAX_DECODE_BYTES"


def decode_limit() -> int:
    """The most working memory (bytes) one decode may allocate: $COMPRESSDATA_MAX_DECODE_BYTES, else 4 GiB."""
    text = os.environ.get(DECODE_LIMIT_ENV)
    if text is None:
        return DECODE_LIMIT_BYTES
    if not text.strip().isdigit():
        raise UsageError(f"{DECODE_LIMIT_ENV} must be a number of bytes, got {text!r}")
    return int(text)


@dataclass(frozen=True)
class DecodeMemory:
    """Working memory (bytes, beyond the stored tensors) a decode allocates: `prepared` once per
    bank and device (memory: the upsampled bases), `per_example` for each example of a batch
    (the float32 output included). An upper estimate of what compressdata's decode allocates."""

    prepared: int
    per_example: int

    def for_examples(self, n: int) -> int:
        """Bytes to decode a batch of `n` examples (the prepared tensors included)."""
        return self.prepared + n * self.per_example

    def max_batch(self, limit: int) -> int:
        """The most examples one batch may hold within `limit` bytes (0: not even one)."""
        return max(0, (limit - self.prepared) // self.per_example)


@dataclass(frozen=True)
class Parameterization:
    """A kind of bank: its stored tensor names, its expected ranks and its decode."""

    kind: str
    tensor_names: tuple[str, ...]
    ranks: tuple[int, ...]
    _prepare: Callable[[Tensors, tuple[int, int] | None, str], Prepared]
    _decode: Callable[[Prepared, Index], torch.Tensor]
    _count: Callable[[Tensors], int]
    _memory: Callable[[Mapping[str, Sequence[int]], tuple[int, int]], DecodeMemory]

    def num_examples(self, tensors: Tensors) -> int:
        """How many examples the stored tensors decode into."""
        return self._count(tensors)

    def prepare(self, tensors: Tensors, image_size: tuple[int, int] | None = None,
                upsample_mode: str = "bilinear") -> Prepared:
        """Per-bank work shared by every example: 8-bit tensors dequantised (spec 2.6); memory: bases
        upsampled, when they fit `params.memory.EXPAND_LIMIT_BYTES`. Differentiable in float tensors."""
        return self._prepare(float_values(tensors, self.tensor_names), image_size, upsample_mode)

    def decode_memory(self, shapes: Mapping[str, Sequence[int]], image_size: tuple[int, int],
                      quantized: Sequence[str] = ()) -> DecodeMemory:
        """The working memory `prepare` + `decode_prepared` allocate for stored tensors of these shapes;
        `quantized` names the 8-bit ones, dequantised once (float32 copies) by `prepare`."""
        memory = self._memory(shapes, image_size)
        copies = sum(FLOAT32 * math.prod(shapes[name]) for name in quantized)
        return DecodeMemory(memory.prepared + copies, memory.per_example)

    def decode_prepared(self, prepared: Prepared, index: Index = None) -> torch.Tensor:
        """Examples `index` (all when None) as float32 [n, C, H, W] from `prepare`'s output."""
        return self._decode(prepared, slice(None) if index is None else index)

    def decode(self, tensors: Tensors, index: Index = None, image_size: tuple[int, int] | None = None,
               upsample_mode: str = "bilinear") -> torch.Tensor:
        """Decode examples `index` (all when None) into float32 [n, C, H, W]. Differentiable."""
        return self.decode_prepared(self.prepare(tensors, image_size, upsample_mode), index)

    def floats_stored(self, tensors: Tensors) -> int:
        """Number of stored values that count against the budget (labels excluded; an 8-bit value
        counts as one, its scale and zero point not at all)."""
        return sum(int(tensors[name].numel()) for name in self.tensor_names)

    def bytes_stored(self, tensors: Tensors) -> int:
        """Bytes that count against a budget (spec 3.10): the kind's tensors and their per-row scales
        and zero points; labels, ZCA tensors and per-tensor scales and zero points (one value each,
        constants of the file like its normalisation) excluded."""
        total = 0
        for name in self.tensor_names:
            total += tensor_bytes(tensors[name])
            for companion in (scale_name(name), zero_point_name(name)):
                if companion in tensors and tensors[companion].numel() > 1:
                    total += tensor_bytes(tensors[companion])
        return total


def tensor_bytes(t: torch.Tensor) -> int:
    """The bytes a tensor takes in the file's data section: elements x dtype size."""
    return int(t.numel()) * t.element_size()


def _memory_prepare(t: Tensors, size: tuple[int, int] | None, mode: str) -> Prepared:
    bases = t["bases"]
    size = tuple(size or bases.shape[-2:])
    if upsample_first(bases.shape[0], bases.shape[1], bases.shape[-2:], size):
        return {"expanded": expand_bases(bases, size, mode), "addresses": t["addresses"]}
    return {"bases": bases.to(torch.float32), "addresses": t["addresses"], "image_size": size, "mode": mode}


def _memory_decode(p: Prepared, index: torch.Tensor | slice) -> torch.Tensor:
    if "expanded" in p:
        return combine(p["addresses"][index], p["expanded"])
    return decode_combined_first(p["addresses"][index], p["bases"], p["image_size"], p["mode"])


def _memory_memory(shapes: Mapping[str, Sequence[int]], size: tuple[int, int]) -> DecodeMemory:
    k, c, h, w = shapes["bases"]
    full = c * size[0] * size[1]
    address_row = 2 * FLOAT32 * k  # the gathered row and its float32 copy
    if upsample_first(k, c, (h, w), size):
        return DecodeMemory(FLOAT32 * k * (full + c * h * w), address_row + FLOAT32 * full)
    return DecodeMemory(FLOAT32 * k * c * h * w, address_row + FLOAT32 * (c * h * w + full))


def _pixels_memory(shapes: Mapping[str, Sequence[int]], size: tuple[int, int]) -> DecodeMemory:
    return DecodeMemory(0, 2 * FLOAT32 * math.prod(shapes["pixels"][1:]))


def _lowrank_memory(shapes: Mapping[str, Sequence[int]], size: tuple[int, int]) -> DecodeMemory:
    factors = math.prod(shapes["lowrank_u"][1:]) + math.prod(shapes["lowrank_v"][1:])
    c, h = shapes["lowrank_u"][1:3]
    return DecodeMemory(0, 2 * FLOAT32 * factors + FLOAT32 * c * h * shapes["lowrank_v"][3])


PARAMETERIZATIONS: dict[str, Parameterization] = {
    "memory": Parameterization(
        kind="memory",
        tensor_names=("bases", "addresses"),
        ranks=(4, 2),
        _prepare=_memory_prepare,
        _decode=_memory_decode,
        _count=lambda t: int(t["addresses"].shape[0]),
        _memory=_memory_memory,
    ),
    "pixels": Parameterization(
        kind="pixels",
        tensor_names=("pixels",),
        ranks=(4,),
        _prepare=lambda t, size, mode: {"pixels": t["pixels"]},
        _decode=lambda p, index: decode_pixels(p["pixels"][index]),
        _count=lambda t: int(t["pixels"].shape[0]),
        _memory=_pixels_memory,
    ),
    "lowrank": Parameterization(
        kind="lowrank",
        tensor_names=("lowrank_u", "lowrank_v"),
        ranks=(4, 4),
        _prepare=lambda t, size, mode: {"lowrank_u": t["lowrank_u"], "lowrank_v": t["lowrank_v"]},
        _decode=lambda p, index: decode_lowrank(p["lowrank_u"][index], p["lowrank_v"][index]),
        _count=lambda t: int(t["lowrank_u"].shape[0]),
        _memory=_lowrank_memory,
    ),
}


def get_parameterization(kind: str) -> Parameterization:
    """The parameterization for `kind`; ValueError naming the known kinds otherwise."""
    try:
        return PARAMETERIZATIONS[kind]
    except KeyError:
        raise UsageError(f"unknown kind {kind!r}; expected one of {sorted(PARAMETERIZATIONS)}") from None
