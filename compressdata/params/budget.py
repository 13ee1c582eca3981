"""Storage budget rules: how many stored floats an images-per-class budget buys per kind.

All kinds spend the same number of floats for the same budget, IPC * C*H*W * n_classes
(labels not counted), so a budget always means the same storage.
"""

from __future__ import annotations

from dataclasses import dataclass

from compressdata.errors import UsageError


@dataclass(frozen=True)
class Layout:
    """What a budget buys: examples per class and the kind's own sizes."""

    kind: str
    per_class: int
    n_bases: int = 0
    downsample: int = 1
    rank: int = 0
    floats: int = 0

    def describe(self) -> str:
        """One line for logs: the layout and the floats it stores."""
        extra = {
            "memory": f"K={self.n_bases} bases at ds={self.downsample}, ",
            "lowrank": f"rank {self.rank}, ",
        }.get(self.kind, "")
        return f"{self.kind}: {extra}{self.per_class} examples per class, {self.floats} floats"


# Default memory layout: half of the budget's floats go to the bases, and the bases are stored at
# the finest resolution at which that half still buys this many bases per class. Measured on
# Fashion-MNIST (docs/benchmarks.md): at IPC 1 that is ds=2 (eight full-resolution bases lose 3.9
# points to 24 at ds=2, and 48 at ds=4 lose 2.0); at IPC 10 it is ds=1 (48 full-resolution bases
# beat 64 at ds=2 by 1.4).
BASES_SHARE = 0.5
MIN_BASES_PER_CLASS = 2


def default_downsample(budget_ipc: float, n_classes: int, image_shape: tuple[int, int, int]) -> int:
    """The smallest ds (1, 2, 4, ... dividing H and W) at which half the budget buys at least
    MIN_BASES_PER_CLASS bases per class; the coarsest such ds when none does."""
    _, h, w = image_shape
    ds = 1
    while (default_n_bases(budget_ipc, n_classes, image_shape, ds) < MIN_BASES_PER_CLASS * n_classes
           and h % (2 * ds) == 0 and w % (2 * ds) == 0):
        ds *= 2
    return ds


def default_n_bases(budget_ipc: float, n_classes: int, image_shape: tuple[int, int, int],
                    downsample: int) -> int:
    """K: as many bases at `downsample` as half the budget's floats hold (at least 1)."""
    c, h, w = image_shape
    total = budget_ipc * c * h * w * n_classes
    return max(1, int(BASES_SHARE * total // (c * (h // downsample) * (w // downsample))))


def layout_for_budget(
    kind: str,
    budget_ipc: float,
    n_classes: int,
    image_shape: tuple[int, int, int],
    n_bases: int | None = None,
    downsample: int | None = None,
    rank: int = 2,
) -> Layout:
    """The largest layout of `kind` whose stored floats fit IPC * C*H*W * n_classes.

    memory: K*C*(H/ds)*(W/ds) + r*K*n_classes floats (the official `Img_per_Cls_budget.py` rule);
    `downsample` and `n_bases` left as None follow `default_downsample` and `default_n_bases`.
    lowrank: r_img * C*rank*(H+W) floats per example; pixels: C*H*W per example.
    """
    c, h, w = image_shape
    if budget_ipc <= 0 or n_classes <= 0:
        raise UsageError(f"budget_ipc and n_classes must be positive, got {budget_ipc}, {n_classes}")
    total = int(budget_ipc * c * h * w * n_classes)
    if kind == "pixels":
        per_class = total // (c * h * w * n_classes)
        return _checked(Layout("pixels", per_class, floats=per_class * n_classes * c * h * w))
    if kind == "memory":
        if downsample is None:
            downsample = default_downsample(budget_ipc, n_classes, image_shape)
        if h % downsample or w % downsample:
            raise UsageError(f"downsample {downsample} does not divide the image size {h}x{w}")
        if n_bases is None:
            n_bases = default_n_bases(budget_ipc, n_classes, image_shape, downsample)
        base_floats = n_bases * c * (h // downsample) * (w // downsample)
        per_class = (total - base_floats) // (n_bases * n_classes)
        floats = base_floats + per_class * n_bases * n_classes
        return _checked(Layout("memory", per_class, n_bases, downsample, floats=floats))
    if kind == "lowrank":
        per_example = c * rank * (h + w)
        per_class = total // (per_example * n_classes)
        floats = per_class * n_classes * per_example
        return _checked(Layout("lowrank", per_class, rank=rank, floats=floats))
    raise UsageError(f"unknown kind {kind!r}; expected memory, pixels or lowrank")


def _checked(layout: Layout) -> Layout:
    if layout.per_class < 1:
        raise UsageError(
            f"budget too small for {layout.kind}: it buys {layout.per_class} examples per class "
            "(use fewer bases, a larger downsample or a larger budget)"
        )
    return layout
