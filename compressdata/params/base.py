"""The registry of parameterizations: which tensors a kind stores and how they decode.

Every consumer (distiller, `MemoryBank`, spec test vectors) decodes through `Parameterization`, so
there is exactly one decoding rule per kind. Decoding has two steps: `prepare` (work done once per
set of stored tensors, e.g. upsampling the shared bases) and `decode_prepared` (the examples asked
for); `decode` runs both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from compressdata.params.lowrank import decode_lowrank
from compressdata.params.memory import combine, expand_bases
from compressdata.params.pixels import decode_pixels

Tensors = Mapping[str, torch.Tensor]
Index = torch.Tensor | slice | None


@dataclass(frozen=True)
class Parameterization:
    """A kind of bank: its stored tensor names, its expected ranks and its decode."""

    kind: str
    tensor_names: tuple[str, ...]
    ranks: tuple[int, ...]
    _prepare: Callable[[Tensors, tuple[int, int] | None, str], dict[str, torch.Tensor]]
    _decode: Callable[[Tensors, Index], torch.Tensor]
    _count: Callable[[Tensors], int]

    def num_examples(self, tensors: Tensors) -> int:
        """How many examples the stored tensors decode into."""
        return self._count(tensors)

    def prepare(self, tensors: Tensors, image_size: tuple[int, int] | None = None,
                upsample_mode: str = "bilinear") -> dict[str, torch.Tensor]:
        """Per-bank work shared by every example (memory: bases upsampled). Differentiable."""
        return self._prepare(tensors, image_size, upsample_mode)

    def decode_prepared(self, prepared: Tensors, index: Index = None) -> torch.Tensor:
        """Examples `index` (all when None) as float32 [n, C, H, W] from `prepare`'s output."""
        return self._decode(prepared, slice(None) if index is None else index)

    def decode(self, tensors: Tensors, index: Index = None, image_size: tuple[int, int] | None = None,
               upsample_mode: str = "bilinear") -> torch.Tensor:
        """Decode examples `index` (all when None) into float32 [n, C, H, W]. Differentiable."""
        return self.decode_prepared(self.prepare(tensors, image_size, upsample_mode), index)

    def floats_stored(self, tensors: Tensors) -> int:
        """Number of stored floats that count against the budget (labels excluded)."""
        return sum(int(tensors[name].numel()) for name in self.tensor_names)


def _memory_prepare(t: Tensors, size: tuple[int, int] | None, mode: str) -> dict[str, torch.Tensor]:
    bases = t["bases"]
    return {"expanded": expand_bases(bases, size or tuple(bases.shape[-2:]), mode), "addresses": t["addresses"]}


PARAMETERIZATIONS: dict[str, Parameterization] = {
    "memory": Parameterization(
        kind="memory",
        tensor_names=("bases", "addresses"),
        ranks=(4, 2),
        _prepare=_memory_prepare,
        _decode=lambda p, index: combine(p["addresses"][index], p["expanded"]),
        _count=lambda t: int(t["addresses"].shape[0]),
    ),
    "pixels": Parameterization(
        kind="pixels",
        tensor_names=("pixels",),
        ranks=(4,),
        _prepare=lambda t, size, mode: {"pixels": t["pixels"]},
        _decode=lambda p, index: decode_pixels(p["pixels"][index]),
        _count=lambda t: int(t["pixels"].shape[0]),
    ),
    "lowrank": Parameterization(
        kind="lowrank",
        tensor_names=("lowrank_u", "lowrank_v"),
        ranks=(4, 4),
        _prepare=lambda t, size, mode: {"lowrank_u": t["lowrank_u"], "lowrank_v": t["lowrank_v"]},
        _decode=lambda p, index: decode_lowrank(p["lowrank_u"][index], p["lowrank_v"][index]),
        _count=lambda t: int(t["lowrank_u"].shape[0]),
    ),
}


def get_parameterization(kind: str) -> Parameterization:
    """The parameterization for `kind`; ValueError naming the known kinds otherwise."""
    try:
        return PARAMETERIZATIONS[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(PARAMETERIZATIONS)}") from None
