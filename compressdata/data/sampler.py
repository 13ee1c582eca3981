"""Class-balanced batches of real (or frozen) examples: the one sampler the distiller draws from.

`BalancedSampler` is the protocol every sampler keeps (the in-memory `ClassBalancedSampler`, the
streaming `data.streaming.StreamingSampler`): `images` and `labels` on the run's device, `by_class`
(rows of each class), `class_index(per_class, generator)` (rows of `per_class` distinct examples of
every class, fewer where a class has fewer) and `batch(per_class, generator)` (those rows' images and
labels). All randomness comes from the generator handed in, so a resumed run draws the same rows.
"""

from __future__ import annotations

from typing import Protocol

import torch

from compressdata.errors import UsageError


class BalancedSampler(Protocol):
    """What the distiller needs of its real data: class-balanced random rows and batches."""

    images: torch.Tensor
    labels: torch.Tensor

    @property
    def by_class(self) -> list[torch.Tensor]: ...

    def class_index(self, per_class: int, generator: torch.Generator) -> torch.Tensor: ...

    def batch(self, per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...


class ClassBalancedSampler:
    """Class-balanced random batches from examples in memory ([N, C, H, W] with int labels).

    Every class of 0..n_classes-1 must have examples, unless `skip_empty`: then classes without any
    are left out of every batch (earlier tasks' memories cover only the classes seen so far)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, n_classes: int, *, skip_empty: bool = False):
        if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
            raise UsageError(f"a sampler needs as many labels as images (> 0), got {images.shape[0]} images and "
                             f"{labels.shape[0]} labels")
        self.images = images
        self.labels = labels.to(images.device)
        rows = [torch.nonzero(labels.cpu() == c).flatten() for c in range(n_classes)]
        empty = [c for c, idx in enumerate(rows) if idx.numel() == 0]
        if empty and not skip_empty:
            raise UsageError(f"the real data have no examples of class(es) {empty}")
        self._by_class = [idx for idx in rows if idx.numel() > 0]

    @property
    def by_class(self) -> list[torch.Tensor]:
        """Rows of each class (classes without examples left out)."""
        return self._by_class

    def class_index(self, per_class: int, generator: torch.Generator) -> torch.Tensor:
        """Rows of `per_class` distinct examples of every class (fewer if a class is smaller)."""
        picks = [idx[torch.randperm(idx.numel(), generator=generator)[:per_class]] for idx in self._by_class]
        return torch.cat(picks)

    def batch(self, per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A class-balanced batch (images, labels) on the images' device."""
        index = self.class_index(per_class, generator).to(self.images.device)
        return self.images[index], self.labels[index]
