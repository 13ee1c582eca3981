"""Distilling a task together with the earlier tasks' memories (memory replay inside BPTT).

With replay, task t is distilled in the label space of every class seen so far (the bank's classes,
then the task's new ones): each inner minibatch holds `inner_batch` of the task's synthetic rows
per task class and `inner_batch` frozen, decoded earlier memories per earlier class, and the outer
loss is on `real_batch` real images per task class plus `real_batch` earlier memories per earlier
class. The new rows are so optimised to train a network together with the old ones. The earlier
memories are decoded once and never change; they are stored already, so no storage is added.
`old_memories` samples them; `MixedSampler` builds the outer batches; the inner mixing is
`continual.distill.TaskSynthetic.minibatch`.
"""

from __future__ import annotations

import torch

from compressdata.bank.memory_bank import MemoryBank
from compressdata.data.sampler import BalancedSampler, ClassBalancedSampler


def old_memories(bank: MemoryBank, seen: list[str], device: torch.device) -> ClassBalancedSampler:
    """All of `bank`'s examples, decoded on `device` and frozen, labelled by their class's index in `seen`,
    sampled class-balanced over the classes that have memories."""
    lookup = torch.tensor([seen.index(name) for name in bank.classes])
    with torch.no_grad():
        images = bank.decode(device=device).to(torch.float32)
    return ClassBalancedSampler(images.detach(), lookup[bank.hard_labels()], len(seen), skip_empty=True)


class MixedSampler:
    """Outer-loss batches: real images of the task's classes (labels mapped to the seen space) plus
    earlier memories, `per_class` of each class: the run's real `BalancedSampler` in the BPTT objective."""

    def __init__(self, real: BalancedSampler, label_map: torch.Tensor, old: BalancedSampler):
        self.real = real
        self.label_map = label_map.to(real.images.device)
        self.old = old

    def batch(self, per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels): real task-class images first, then earlier memories."""
        x, y = self.real.batch(per_class, generator)
        x_old, y_old = self.old.batch(per_class, generator)
        return torch.cat([x, x_old.to(x.device)]), torch.cat([self.label_map[y], y_old.to(x.device)])
