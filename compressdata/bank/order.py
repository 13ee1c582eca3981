"""Orders of a bank's rows."""

from __future__ import annotations

import torch


def interleaved_rows(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Row indices that take the classes in turn: the first row of every class (in class order), then
    the second, ...; rows of a class keep their order, and classes that run out drop from the turn."""
    rank = torch.zeros(len(labels), dtype=torch.int64)
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        rank[members] = torch.arange(len(members))
    return torch.argsort(rank * max(num_classes, 1) + labels.to(torch.int64), stable=True)
