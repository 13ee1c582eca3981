"""Storage dtypes of a bank's tensors and the one dequantisation of 8-bit tensors (spec 2.6).

A stored tensor is float32, float16, bfloat16 or 8-bit (`I8`): an 8-bit tensor NAME is stored with
`NAME.scale` (F32) and `NAME.zero_point` (I8), one pair for the whole tensor or one per row (index
of the first axis), and decodes to x = scale[g] * (q - zero_point[g]) rounded once to float32.

This module holds that dequantisation (`dequantize`, used by every decode), the quantiser
compressdata writes with (`quantize`), the straight-through simulation the distiller trains through
(`simulate`), and what a tensor costs in bytes (`TensorStorage`), so that decode, budget and
writers agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from compressdata.errors import UsageError

SCALE_SUFFIX = ".scale"
ZERO_POINT_SUFFIX = ".zero_point"
QMIN, QMAX = -128, 127
LEVELS = QMAX - QMIN  # 255 steps between the smallest and the largest code
MAX_SCALE = 2.0**120  # 255 * scale stays below the largest float32, so every decoded value is finite
PARAM_BYTES = 5  # a float32 scale and an int8 zero point
# the flag values: float dtypes, and 8-bit with one scale per tensor (`int8`) or per row (`int8-row`)
STORAGE_DTYPES = ("f32", "f16", "bf16", "int8", "int8-row")
FLOAT_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
ELEMENT_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "int8": 1, "int8-row": 1}


def scale_name(name: str) -> str:
    return name + SCALE_SUFFIX


def zero_point_name(name: str) -> str:
    return name + ZERO_POINT_SUFFIX


def is_quantized(tensors: Mapping[str, torch.Tensor], name: str) -> bool:
    """Whether stored tensor `name` is 8-bit (it then comes with a scale and a zero point)."""
    return tensors[name].dtype == torch.int8


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """float32 values of an 8-bit tensor (spec 2.6): scale[g] * (q - zero_point[g]), g the row for
    per-row parameters ([rows]) and 0 for per-tensor ones ([1]). q - zero_point is an integer in
    [-255, 255], exact in float32, so the only rounding is the product's."""
    view = (-1,) + (1,) * (q.dim() - 1)
    centred = q.to(torch.float32) - zero_point.to(torch.float32).view(view)
    return centred * scale.to(torch.float32).view(view)


def float_values(tensors: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """`names` as the decode reads them: 8-bit tensors dequantised to float32, the others as
    stored (float32, float16 or bfloat16)."""
    out = {}
    for name in names:
        t = tensors[name]
        if t.dtype == torch.int8:
            t = dequantize(t, tensors[scale_name(name)], tensors[zero_point_name(name)])
        out[name] = t
    return out


def quantize(x: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q int8, scale float32 [G], zero_point int8 [G]) of float tensor x, G = rows or 1.

    Each group's range [min(x, 0), max(x, 0)] is spread over the 255 steps (0 is always in range,
    and with an integer zero point it decodes to exactly 0); codes are round-half-even of
    x / scale + zero_point, clamped to [-128, 127]. A group of zeros gets scale 1.
    """
    x = x.detach().to(torch.float32)
    if x.dim() == 0 or x.numel() == 0:
        raise UsageError(f"cannot quantise a tensor of shape {list(x.shape)}")
    groups = x.reshape(x.shape[0], -1) if per_row else x.reshape(1, -1)
    if not bool(torch.isfinite(groups).all()):
        raise UsageError("cannot quantise a tensor holding NaN or Inf")
    low = groups.amin(dim=1).clamp(max=0.0)
    high = groups.amax(dim=1).clamp(min=0.0)
    scale = ((high.double() - low.double()) / LEVELS).to(torch.float32)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    if bool((scale >= MAX_SCALE).any()):
        raise UsageError(f"values spread over more than {LEVELS} * 2^120: no 8-bit scale holds them")
    zero_point = (QMIN - torch.round(low / scale)).clamp(QMIN, QMAX)
    codes = (torch.round(groups / scale.unsqueeze(1)) + zero_point.unsqueeze(1)).clamp(QMIN, QMAX)
    return codes.to(torch.int8).reshape(x.shape), scale, zero_point.to(torch.int8)


@dataclass(frozen=True)
class TensorStorage:
    """How one tensor is stored: `dtype` one of STORAGE_DTYPES."""

    dtype: str = "f32"

    def __post_init__(self) -> None:
        if self.dtype not in STORAGE_DTYPES:
            raise UsageError(f"unknown storage dtype {self.dtype!r}; expected one of {', '.join(STORAGE_DTYPES)}")

    @property
    def quantized(self) -> bool:
        return self.dtype.startswith("int8")

    @property
    def per_row(self) -> bool:
        return self.dtype == "int8-row"

    def row_bytes(self, values_per_row: int) -> int:
        """Budget bytes of one row (first-axis index) of `values_per_row` values: the values, plus
        its scale and zero point when they are per row (per-tensor ones are not counted, spec 3.10)."""
        return ELEMENT_BYTES[self.dtype] * values_per_row + (PARAM_BYTES if self.per_row else 0)

    def store(self, name: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The stored tensors of float tensor x under `name`: x in the float dtype, or its 8-bit
        codes with `name.scale` and `name.zero_point`."""
        if not self.quantized:
            return {name: x.detach().to(FLOAT_DTYPES[self.dtype]).contiguous()}
        q, scale, zero_point = quantize(x, self.per_row)
        return {name: q.contiguous(), scale_name(name): scale, zero_point_name(name): zero_point}

    def round_trip(self, x: torch.Tensor) -> torch.Tensor:
        """float32 values x decodes to once stored this way."""
        stored = self.store("x", x)
        return float_values(stored, ("x",))["x"].to(torch.float32)

    def simulate(self, x: torch.Tensor) -> torch.Tensor:
        """x's stored values in the forward pass, with a straight-through gradient (identity) to x:
        the quantisation-aware distiller's view of its learnable tensors."""
        if self.dtype == "f32":
            return x
        with torch.no_grad():
            stored = self.round_trip(x)
        return stored + (x - x.detach())


def parse_storage(text: str, names: Sequence[str]) -> dict[str, TensorStorage]:
    """Per-tensor storage from a spec: one dtype for every tensor (`int8`), NAME=DTYPE pairs
    (`bases=f16,addresses=int8`; tensors not named stay f32), or both (`int8,addresses=f32`: a
    bare dtype sets the default). ValueError naming the bad entry."""
    default, per_name = "f32", {}
    for entry in (part.strip() for part in str(text).split(",")):
        if not entry:
            raise UsageError(f"storage dtype {text!r}: empty entry")
        if "=" in entry:
            name, dtype = (p.strip() for p in entry.split("=", 1))
            if name not in names:
                raise UsageError(f"storage dtype {text!r}: {name!r} is not a stored tensor here; "
                                 f"expected one of {', '.join(names)}")
            per_name[name] = TensorStorage(dtype)
        else:
            default = entry
    fallback = TensorStorage(default)
    return {name: per_name.get(name, fallback) for name in names}


def storage_label(storage: Mapping[str, TensorStorage]) -> str:
    """`int8` when every tensor shares a dtype, else `bases=int8,addresses=f16`."""
    dtypes = {s.dtype for s in storage.values()}
    if len(dtypes) == 1:
        return dtypes.pop()
    return ",".join(f"{name}={s.dtype}" for name, s in storage.items())


def simulate_storage(tensors: Mapping[str, torch.Tensor], storage: Mapping[str, TensorStorage] | None
                     ) -> dict[str, torch.Tensor]:
    """`tensors` with each one named in `storage` replaced by its straight-through stored values."""
    if not storage:
        return dict(tensors)
    return {name: storage[name].simulate(t) if name in storage else t for name, t in tensors.items()}


def store_all(tensors: Mapping[str, torch.Tensor], storage: Mapping[str, TensorStorage] | None
              ) -> dict[str, torch.Tensor]:
    """Every tensor stored as `storage` says (f32 when not named), quantisation tensors included."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        out.update((storage or {}).get(name, TensorStorage()).store(name, t))
    return out
