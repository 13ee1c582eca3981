"""Autograd helpers shared by the objectives that differentiate their loss directly (dm, gm, mim)."""

from __future__ import annotations

import torch


def leaf_copy(theta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached copies of theta that require grad (theta itself is left untouched)."""
    return {k: v.detach().requires_grad_(True) for k, v in theta.items()}


def theta_grads(loss: torch.Tensor, leaves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """d(loss)/d(leaves[name]) for every name, zeros where the loss does not depend on it."""
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
    return {n: torch.zeros_like(leaves[n]) if g is None else g.detach()
            for n, g in zip(names, grads, strict=True)}


def add_grads(total: dict[str, torch.Tensor] | None, grads: dict[str, torch.Tensor],
              weight: float = 1.0) -> dict[str, torch.Tensor]:
    """total + weight * grads (a new dict; `total` None means zeros)."""
    if total is None:
        return {k: weight * g for k, g in grads.items()}
    return {k: total[k] + weight * grads[k] for k in total}


def class_rows(labels: torch.Tensor, c: int) -> torch.Tensor:
    """Positions of class `c` in a batch with int labels `labels`."""
    return torch.nonzero(labels == c).flatten()
