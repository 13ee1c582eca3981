"""Storage budget rules: how many stored values a budget in bytes buys per kind (spec section 7).

A budget is a number of bytes B, spent on the kind's stored tensors (labels not counted), each value
at its storage dtype's size (float32 4, float16 and bfloat16 2, 8-bit 1, plus 5 bytes per row for
per-row scales and zero points: `params.quant.TensorStorage.row_bytes`). A budget of b images per
class (IPC) is the bytes of b float32 images per class, B = 4 * floor(b * C*H*W * n_classes): in
float32 that is the floats rule of the addressable-memories paper, and every kind spends the same
bytes for the same budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from compressdata.errors import UsageError
from compressdata.params.base import PARAMETERIZATIONS
from compressdata.params.quant import TensorStorage

FLOAT32_BYTES = 4
F32 = TensorStorage("f32")

@dataclass(frozen=True)
class Layout:
    """What a budget buys: examples per class and the kind's own sizes; `floats` the stored values
    and `bytes` the budget bytes they take in their storage dtypes (`storage`, f32 when empty)."""

    kind: str
    per_class: int
    n_bases: int = 0
    downsample: int = 1
    rank: int = 0
    floats: int = 0
    bytes: int = 0
    storage: Mapping[str, TensorStorage] = field(default_factory=dict, hash=False)

    def describe(self) -> str:
        """One line for logs: the layout and the values and bytes it stores."""
        extra = {
            "memory": f"K={self.n_bases} bases at ds={self.downsample}, ",
            "lowrank": f"rank {self.rank}, ",
        }.get(self.kind, "")
        dtypes = ", ".join(f"{name} {s.dtype}" for name, s in self.storage.items()) or "f32"
        return f"{self.kind}: {extra}{self.per_class} examples per class, {self.floats} values ({dtypes}), " \
               f"{self.bytes} bytes"


# Default memory layout: half of the budget's bytes go to the bases, and the bases are stored at
# the finest resolution at which that half still buys this many bases per class. Measured on
# Fashion-MNIST (docs/benchmarks.md): at IPC 1 that is ds=2 (eight full-resolution bases lose 3.9
# points to 24 at ds=2, and 48 at ds=4 lose 2.0); at IPC 10 it is ds=1 (48 full-resolution bases
# beat 64 at ds=2 by 1.4).
BASES_SHARE = 0.5
MIN_BASES_PER_CLASS = 2


def budget_bytes_of(budget_ipc: float | None, n_classes: int, image_shape: tuple[int, int, int],
                    budget_bytes: int | None = None) -> int:
    """The budget in bytes: `budget_bytes` when given, else the bytes of `budget_ipc` float32 images
    per class, 4 * floor(budget_ipc * C*H*W * n_classes)."""
    if budget_bytes is not None:
        return int(budget_bytes)
    c, h, w = image_shape
    return FLOAT32_BYTES * int(budget_ipc * c * h * w * n_classes)


def default_downsample(budget_ipc: float | None, n_classes: int, image_shape: tuple[int, int, int], *,
                       budget_bytes: int | None = None, bases: TensorStorage = F32) -> int:
    """The smallest ds (1, 2, 4, ... dividing H and W) at which half the budget buys at least
    MIN_BASES_PER_CLASS bases per class; the coarsest such ds when none does."""
    _, h, w = image_shape
    ds = 1
    while (default_n_bases(budget_ipc, n_classes, image_shape, ds, budget_bytes=budget_bytes, bases=bases)
           < MIN_BASES_PER_CLASS * n_classes and h % (2 * ds) == 0 and w % (2 * ds) == 0):
        ds *= 2
    return ds


def default_n_bases(budget_ipc: float | None, n_classes: int, image_shape: tuple[int, int, int], downsample: int, *,
                    budget_bytes: int | None = None, bases: TensorStorage = F32) -> int:
    """K: as many bases at `downsample`, stored as `bases`, as half the budget's bytes hold (at least 1)."""
    c, h, w = image_shape
    total = budget_bytes_of(budget_ipc, n_classes, image_shape, budget_bytes)
    return max(1, int(BASES_SHARE * total // bases.row_bytes(c * (h // downsample) * (w // downsample))))


def layout_for_budget(
    kind: str,
    budget_ipc: float | None,
    n_classes: int,
    image_shape: tuple[int, int, int],
    n_bases: int | None = None,
    downsample: int | None = None,
    rank: int = 2,
    *,
    budget_bytes: int | None = None,
    storage: Mapping[str, TensorStorage] | None = None,
) -> Layout:
    """The largest layout of `kind` whose stored tensors fit the budget: `budget_bytes` when given
    (budget_ipc is then ignored, None allowed), else `budget_ipc` float32 images per class; `storage`
    gives each tensor's dtype (f32 when absent).

    memory: K bases [C, h, w] + r*n_classes address rows [K] (the official `Img_per_Cls_budget.py`
    rule, in bytes); `downsample` and `n_bases` left as None follow `default_downsample` and
    `default_n_bases`. lowrank: per example C*H*rank + C*rank*W values; pixels: C*H*W per example.
    """
    c, h, w = image_shape
    if budget_bytes is None and not (budget_ipc is not None and budget_ipc > 0):
        raise UsageError(f"budget_ipc must be positive, got {budget_ipc}")
    if budget_bytes is not None and not (isinstance(budget_bytes, int) and budget_bytes > 0):
        raise UsageError(f"budget_bytes must be a positive integer, got {budget_bytes!r}")
    if n_classes <= 0:
        raise UsageError(f"n_classes must be positive, got {n_classes}")
    storage = dict(storage or {})
    names = PARAMETERIZATIONS[kind].tensor_names if kind in PARAMETERIZATIONS else ()
    dtype = {name: storage.get(name, F32) for name in names}
    total = budget_bytes_of(budget_ipc, n_classes, image_shape, budget_bytes)
    if kind == "pixels":
        cost = dtype["pixels"].row_bytes(c * h * w)
        per_class = total // (cost * n_classes)
        n = per_class * n_classes
        return _checked(Layout("pixels", per_class, floats=n * c * h * w, bytes=n * cost, storage=dtype))
    if kind == "memory":
        bases = dtype["bases"]
        if downsample is None:
            downsample = default_downsample(budget_ipc, n_classes, image_shape, budget_bytes=total, bases=bases)
        if h % downsample or w % downsample:
            raise UsageError(f"downsample {downsample} does not divide the image size {h}x{w}")
        if n_bases is None:
            n_bases = default_n_bases(budget_ipc, n_classes, image_shape, downsample, budget_bytes=total, bases=bases)
        base_values = c * (h // downsample) * (w // downsample)
        base_bytes = n_bases * bases.row_bytes(base_values)
        row_bytes = dtype["addresses"].row_bytes(n_bases)
        per_class = max(0, (total - base_bytes) // (row_bytes * n_classes))
        n = per_class * n_classes
        return _checked(Layout("memory", per_class, n_bases, downsample, floats=n_bases * base_values + n * n_bases,
                               bytes=base_bytes + n * row_bytes, storage=dtype))
    if kind == "lowrank":
        u_values, v_values = c * h * rank, c * rank * w
        cost = dtype["lowrank_u"].row_bytes(u_values) + dtype["lowrank_v"].row_bytes(v_values)
        per_class = total // (cost * n_classes)
        n = per_class * n_classes
        return _checked(Layout("lowrank", per_class, rank=rank, floats=n * (u_values + v_values), bytes=n * cost,
                               storage=dtype))
    raise UsageError(f"unknown kind {kind!r}; expected memory, pixels or lowrank")


def _checked(layout: Layout) -> Layout:
    if layout.per_class < 1:
        raise UsageError(
            f"budget too small for {layout.kind}: it buys {layout.per_class} examples per class "
            "(use fewer bases, a larger downsample, a smaller storage dtype or a larger budget)"
        )
    return layout
