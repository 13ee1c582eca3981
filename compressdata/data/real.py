"""`RealData`: real labelled images of one split, as every reader returns them.

Pixels are in [0, 1] (kept as uint8 when the source is 8-bit), labels int64, with class names and the
`Normalization` that maps pixels to the space a bank is distilled in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from compressdata.bank.metadata import Normalization
from compressdata.errors import SourceError

Statistics = tuple[Sequence[float], Sequence[float]]  # per-channel mean and std


@dataclass
class RealData:
    """Real images and labels of one split.

    pixels: uint8 [N, C, H, W] (0-255) or float32 in [0, 1]; labels: int64 [N] in
    [0, len(classes)); normalization: pixels -> the model's input space.
    """

    pixels: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str
    normalization: Normalization
    _images: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _by_class: list[torch.Tensor] | None = field(default=None, init=False, repr=False,
                                                 compare=False)

    def __post_init__(self) -> None:
        p = self.pixels
        if not isinstance(p, torch.Tensor) or p.ndim != 4:
            raise SourceError(f"{self.name}: pixels must be a tensor [N, C, H, W]; "
                             f"got {getattr(p, 'shape', type(p).__name__)}")
        if p.dtype != torch.uint8:
            if not p.is_floating_point():
                raise SourceError(f"{self.name}: pixels must be uint8 or float; got {p.dtype}")
            self.pixels = p = p.to(torch.float32)
            if p.numel() and (p.min() < 0 or p.max() > 1):
                raise SourceError(f"{self.name}: float pixels must lie in [0, 1]; got "
                                 f"[{float(p.min()):.4g}, {float(p.max()):.4g}]")
        labels = self.labels
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point():
            raise SourceError(f"{self.name}: labels must be an integer tensor [N]; got "
                             f"{getattr(labels, 'dtype', type(labels).__name__)} "
                             f"{tuple(getattr(labels, 'shape', ()))}")
        self.labels = labels = labels.to(torch.int64)
        if labels.shape[0] != p.shape[0]:
            raise SourceError(f"{self.name}: {p.shape[0]} images but {labels.shape[0]} labels")
        self.classes = [str(c) for c in self.classes]
        if not self.classes:
            raise SourceError(f"{self.name}: classes must name at least one class")
        if labels.numel() and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise SourceError(f"{self.name}: labels must lie in [0, {len(self.classes)}); got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        _check_normalization(self.normalization, self.image_shape, self.name)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        c, h, w = self.pixels.shape[1:]
        return int(c), int(h), int(w)

    @property
    def float_pixels(self) -> torch.Tensor:
        """Pixels as float32 in [0, 1] (a new tensor for uint8 storage)."""
        if self.pixels.dtype == torch.uint8:
            return self.pixels.to(torch.float32) / 255.0
        return self.pixels

    @property
    def images(self) -> torch.Tensor:
        """All images in the normalised space, float32 [N, C, H, W] (computed once, cached)."""
        if self._images is None:
            self._images = self.normalization.apply(self.float_pixels).contiguous()
        return self._images

    def class_indices(self, c: int) -> torch.Tensor:
        """Indices (int64) of the examples of class `c`."""
        if not 0 <= int(c) < self.num_classes:
            raise SourceError(f"{self.name}: class {c} out of range [0, {self.num_classes})")
        if self._by_class is None:
            order = torch.argsort(self.labels, stable=True)
            counts = torch.bincount(self.labels, minlength=self.num_classes).tolist()
            self._by_class = list(torch.split(order, counts))
        return self._by_class[int(c)]

    def sample_class(self, c: int, n: int, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
        """`n` distinct random normalised images of class `c`, float32 [n, C, H, W]."""
        idx = self.class_indices(c)
        if not 0 < n <= idx.numel():
            raise SourceError(f"{self.name}: asked for {n} images of class {c} "
                             f"({self.classes[int(c)]!r}); it has {idx.numel()}")
        pick = idx[torch.randperm(idx.numel(), generator=generator)[:n]]
        return self.images[pick]

    def subset(self, index: torch.Tensor | Sequence[int] | slice) -> RealData:
        """The examples at `index` (same classes, name, split and normalisation)."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index)
            index = index if index.dtype == torch.bool else index.to(torch.int64)
        return RealData(self.pixels[index], self.labels[index], list(self.classes), self.name,
                        self.split, self.normalization)

    def balanced_subset(self, per_class: int, generator: torch.Generator | None = None
                        ) -> RealData:
        """`per_class` random examples of every class, grouped by class (class 0 first)."""
        picks = []
        for c in range(self.num_classes):
            idx = self.class_indices(c)
            if idx.numel() < per_class:
                raise SourceError(f"{self.name}: class {c} ({self.classes[c]!r}) has {idx.numel()} "
                                 f"examples; asked for {per_class}")
            picks.append(idx[torch.randperm(idx.numel(), generator=generator)[:per_class]])
        return self.subset(torch.cat(picks))

    def with_normalization(self, normalization: Normalization) -> RealData:
        """The same pixels seen through another normalisation (e.g. a bank's)."""
        return RealData(self.pixels, self.labels, list(self.classes), self.name, self.split,
                        normalization)


def _check_normalization(norm: Normalization, shape: tuple[int, int, int], name: str) -> None:
    c, h, w = shape
    if not isinstance(norm, Normalization):
        raise SourceError(f"{name}: normalization must be a Normalization; got {type(norm).__name__}")
    if len(norm.mean) != c or len(norm.std) != c:
        raise SourceError(f"{name}: normalization has {len(norm.mean)} means and {len(norm.std)} "
                         f"stds; the images have {c} channels")
    if any(not s > 0 for s in norm.std):
        raise SourceError(f"{name}: normalization std must be > 0; got {norm.std}")
    if norm.zca_whiten is not None:
        d = c * h * w
        if tuple(norm.zca_whiten.shape) != (d, d) or norm.zca_mean is None or \
                tuple(norm.zca_mean.shape) != (d,):
            raise SourceError(f"{name}: ZCA tensors must be zca_mean [{d}] and zca_whiten [{d}, {d}]"
                             f"; got {_shape(norm.zca_mean)} and {_shape(norm.zca_whiten)}")


def _shape(t: torch.Tensor | None) -> Any:
    return None if t is None else list(t.shape)


def channel_stats(pixels: torch.Tensor, chunk: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixels in [0, 1] (uint8 0-255 or float) [N, C, H, W]."""
    scale = 255.0 if pixels.dtype == torch.uint8 else 1.0
    total = torch.zeros(pixels.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, pixels.shape[0], chunk):
        block = pixels[start:start + chunk].to(torch.float64) / scale
        total += block.sum(dim=(0, 2, 3))
        squares += (block * block).sum(dim=(0, 2, 3))
    count = pixels.shape[0] * pixels.shape[2] * pixels.shape[3]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.tolist(), std.tolist()


def real_data(pixels: torch.Tensor, labels: torch.Tensor, classes: Sequence[str] | None, name: str, split: str,
              statistics: Statistics | None = None) -> RealData:
    """RealData normalised with `statistics` (per-channel mean, std: a preset's), else with the split's own
    per-channel mean and std; classes None names them "0".."K-1"."""
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1 if labels.numel() else 1)]
    if statistics is not None:
        norm = Normalization(mean=list(statistics[0]), std=list(statistics[1]))
    else:
        mean, std = channel_stats(pixels)
        norm = Normalization(mean=mean, std=std)
    return RealData(pixels, labels, list(classes), name, split, norm)


def check_split(split: str, source: str) -> None:
    """Sources with a train / test split accept those two names only."""
    if split not in ("train", "test"):
        raise SourceError(f"{source}: split must be 'train' or 'test'; got {split!r}")
