"""Distilling a task together with the earlier tasks' memories (memory replay inside BPTT).

With replay, task t is distilled in the label space of every class seen so far (the bank's classes,
then the task's new ones): each inner minibatch holds `inner_batch` of the task's synthetic rows
per task class and `inner_batch` frozen, decoded earlier memories per earlier class, and the outer
loss is on `real_batch` real images per task class plus `real_batch` earlier memories per earlier
class. The new rows are so optimised to train a network together with the old ones. The earlier
memories are decoded once and never change; they are stored already, so no storage is added.
`OldMemories` samples them; `MixedSampler` builds the outer batches; the inner mixing is
`continual.distill.TaskSynthetic.minibatch`.
"""

from __future__ import annotations

import torch

from compressdata.bank.memory_bank import MemoryBank
from compressdata.distill.methods import RealSampler
from compressdata.errors import UsageError


class OldMemories:
    """Frozen decoded examples of earlier tasks with labels in the seen-class space, sampled
    class-balanced (every class that has memories contributes the same number of rows)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, n_classes: int):
        if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
            raise UsageError(f"old memories need as many labels as images (>0), got {images.shape[0]} images "
                             f"and {labels.shape[0]} labels")
        self.images = images.detach()
        self.labels = labels.to(images.device)
        self.by_class = [idx for idx in (torch.nonzero(labels.cpu() == c).flatten() for c in range(n_classes))
                         if idx.numel() > 0]

    @classmethod
    def from_bank(cls, bank: MemoryBank, seen: list[str], device: torch.device) -> OldMemories:
        """All of `bank`'s examples, decoded on `device`, labelled by their class's index in `seen`."""
        lookup = torch.tensor([seen.index(name) for name in bank.classes])
        with torch.no_grad():
            images = bank.decode(device=device).to(torch.float32)
        return cls(images, lookup[bank.hard_labels()], len(seen))

    def sample(self, per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """min(per_class, rows of the class) distinct rows of every class with memories."""
        index = torch.cat([idx[torch.randperm(idx.numel(), generator=generator)[:per_class]]
                           for idx in self.by_class]).to(self.images.device)
        return self.images[index], self.labels[index]


class MixedSampler:
    """Outer-loss batches: real images of the task's classes (labels mapped to the seen space) plus
    earlier memories, `per_class` of each class. Stands in for `RealSampler` in the BPTT objective."""

    def __init__(self, real: RealSampler, label_map: torch.Tensor, old: OldMemories):
        self.real = real
        self.label_map = label_map.to(real.images.device)
        self.old = old

    def batch(self, per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels): real task-class images first, then earlier memories."""
        x, y = self.real.batch(per_class, generator)
        x_old, y_old = self.old.sample(per_class, generator)
        return torch.cat([x, x_old.to(x.device)]), torch.cat([self.label_map[y], y_old.to(x.device)])
