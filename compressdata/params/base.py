"""The registry of parameterizations: which tensors a kind stores and how they decode.

Every consumer (distiller, `MemoryBank`, spec test vectors) decodes through `Parameterization.decode`,
so there is exactly one decoding rule per kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from compressdata.params.lowrank import decode_lowrank
from compressdata.params.memory import decode_memory
from compressdata.params.pixels import decode_pixels

Tensors = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Parameterization:
    """A kind of bank: its stored tensor names, its expected ranks and its decode."""

    kind: str
    tensor_names: tuple[str, ...]
    ranks: tuple[int, ...]
    _decode: Callable[[Tensors, tuple[int, int], str], torch.Tensor]
    _rows: Callable[[Tensors, torch.Tensor | slice], dict[str, torch.Tensor]]
    _count: Callable[[Tensors], int]

    def num_examples(self, tensors: Tensors) -> int:
        """How many examples the stored tensors decode into."""
        return self._count(tensors)

    def decode(
        self,
        tensors: Tensors,
        index: torch.Tensor | slice | None = None,
        image_size: tuple[int, int] | None = None,
        upsample_mode: str = "bilinear",
    ) -> torch.Tensor:
        """Decode examples `index` (all when None) into float32 [n, C, H, W]. Differentiable."""
        selected = dict(tensors) if index is None else self._rows(tensors, index)
        return self._decode(selected, image_size, upsample_mode)

    def floats_stored(self, tensors: Tensors) -> int:
        """Number of stored floats that count against the budget (labels excluded)."""
        return sum(int(tensors[name].numel()) for name in self.tensor_names)


def _memory_rows(t: Tensors, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
    return {"bases": t["bases"], "addresses": t["addresses"][index]}


def _memory_decode(t: Tensors, size: tuple[int, int] | None, mode: str) -> torch.Tensor:
    bases = t["bases"]
    return decode_memory(bases, t["addresses"], size or tuple(bases.shape[-2:]), mode)


def _per_example_rows(names: tuple[str, ...]) -> Callable[[Tensors, torch.Tensor | slice], dict]:
    def rows(t: Tensors, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        return {name: t[name][index] for name in names}

    return rows


PARAMETERIZATIONS: dict[str, Parameterization] = {
    "memory": Parameterization(
        kind="memory",
        tensor_names=("bases", "addresses"),
        ranks=(4, 2),
        _decode=_memory_decode,
        _rows=_memory_rows,
        _count=lambda t: int(t["addresses"].shape[0]),
    ),
    "pixels": Parameterization(
        kind="pixels",
        tensor_names=("pixels",),
        ranks=(4,),
        _decode=lambda t, size, mode: decode_pixels(t["pixels"]),
        _rows=_per_example_rows(("pixels",)),
        _count=lambda t: int(t["pixels"].shape[0]),
    ),
    "lowrank": Parameterization(
        kind="lowrank",
        tensor_names=("lowrank_u", "lowrank_v"),
        ranks=(4, 4),
        _decode=lambda t, size, mode: decode_lowrank(t["lowrank_u"], t["lowrank_v"]),
        _rows=_per_example_rows(("lowrank_u", "lowrank_v")),
        _count=lambda t: int(t["lowrank_u"].shape[0]),
    ),
}


def get_parameterization(kind: str) -> Parameterization:
    """The parameterization for `kind`; ValueError naming the known kinds otherwise."""
    try:
        return PARAMETERIZATIONS[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(PARAMETERIZATIONS)}") from None
