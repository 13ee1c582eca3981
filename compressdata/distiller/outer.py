"""The outer optimiser steps of the distiller: SGD with momentum or Adam, after clipping the total
gradient norm, with a constant or cosine learning-rate schedule.

Both are functional (inputs unchanged, new dicts out) so a `DistillState` is a value: the state a
step needs is the iteration (Adam's step count), the first-moment buffers (`momentum`: SGD's momentum
buffer or Adam's exp_avg) and, for Adam, the second moments (exp_avg_sq).
"""

from __future__ import annotations

import math

import torch

from compressdata.errors import UsageError

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")
ADAM_EPS = 1e-8


def scheduled_lr(lr: float, schedule: str, iteration: int, iterations: int) -> float:
    """The lr of the step made at `iteration` (0-based) of `iterations`: constant, or cosine
    lr * 0.5 * (1 + cos(pi * iteration / iterations))."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * iteration / iterations))
    raise UsageError(f"unknown outer schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")


def clip_scale(grads: dict[str, torch.Tensor], clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(total gradient norm, the factor <= 1 that clips it to `clip`; math.inf: no clipping)."""
    norm = torch.sqrt(sum(g.double().pow(2).sum() for g in grads.values()))
    return norm, torch.clamp(clip / (norm + 1e-6), max=1.0)


def outer_sgd_step(theta: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
                   momentum: dict[str, torch.Tensor], lr: float, mu: float, clip: float
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """SGD with momentum (PyTorch semantics) after clipping the total gradient norm to `clip`
    (math.inf: no clipping).

    Returns new dicts (theta', momentum', the gradient norm before clipping); inputs are unchanged.
    """
    with torch.no_grad():
        norm, scale = clip_scale(grads, clip)
        new_momentum = {k: mu * momentum[k] + grads[k] * scale.to(grads[k].dtype) for k in theta}
        new_theta = {k: theta[k] - lr * new_momentum[k] for k in theta}
    return new_theta, new_momentum, norm


def outer_adam_step(theta: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
                    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], step: int, lr: float,
                    betas: tuple[float, float], clip: float
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor],
                               torch.Tensor]:
    """Adam (torch.optim.Adam semantics: bias-corrected, eps 1e-8, no weight decay) after clipping the
    total gradient norm to `clip`; `step` is the 1-based count of this step.

    Returns new dicts (theta', first moments', second moments', the gradient norm before clipping);
    inputs are unchanged.
    """
    if step < 1:
        raise UsageError(f"Adam's step count starts at 1, got {step}")
    b1, b2 = betas
    with torch.no_grad():
        norm, scale = clip_scale(grads, clip)
        clipped = {k: grads[k] * scale.to(grads[k].dtype) for k in theta}
        new_first = {k: torch.lerp(first[k], clipped[k], 1 - b1) for k in theta}
        new_second = {k: torch.addcmul(second[k] * b2, clipped[k], clipped[k], value=1 - b2) for k in theta}
        step_size = lr / (1 - b1 ** step)
        correction2 = math.sqrt(1 - b2 ** step)
        new_theta = {k: torch.addcdiv(theta[k], new_first[k], new_second[k].sqrt() / correction2 + ADAM_EPS,
                                      value=-step_size) for k in theta}
    return new_theta, new_first, new_second, norm
