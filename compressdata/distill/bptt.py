"""Hypergradients through an unrolled inner training run (back-propagation through time).

The inner run is T steps of SGD with momentum in PyTorch's convention, starting from v_0 = 0:

    g_t = grad_w inner_loss(f(w_t, x_t), y_t),   (x_t, y_t) = batch_fn(theta, t, generator_t)
    v_{t+1} = mu * v_t + g_t
    w_{t+1} = w_t - lr * v_{t+1}

and the outer loss is evaluated at w_T. Two ways to get d(outer loss)/d(theta):

- `reverse_hypergradient`: the reverse pass of Maclaurin et al. (2015). The forward run keeps only
  the detached weights w_t of every step (no autograd graph); the backward run recomputes step t's
  gradient from (w_t, theta) and takes one vector-Jacobian product of it, i.e. a Hessian-vector
  product, per step. Peak memory is about T copies of the weights plus one step's graph.
- `naive_unroll_hypergradient`: plain autograd through all T steps (create_graph=True). It holds
  the whole graph and is the reference for tests and benchmarks.

The network is used as a (module, parameter dict) pair through `torch.func.functional_call`, so
the engine works for any architecture. Per-step randomness reaches `batch_fn` only through the
generator it is handed, seeded from `seeds[t]`; the recomputation hands it an identically seeded
generator, so minibatch sampling and augmentation replay exactly. The module's own forward must be
deterministic given its inputs (no dropout).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Tensors = dict[str, torch.Tensor]
BatchFn = Callable[[Mapping[str, torch.Tensor], int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
OuterLossFn = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]
InnerLossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Hypergradient:
    """The outer loss at w_T and its gradients.

    grads: d(outer loss)/d(theta[name]) for every name of theta (zeros where theta is unused);
    lr_grad: d(outer loss)/d(lr) when lr was given as a tensor that requires grad, else None;
    inner_loss: the inner loss of the last inner step (for logging).
    """

    loss: torch.Tensor
    grads: Tensors
    lr_grad: torch.Tensor | None
    inner_loss: torch.Tensor


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with hard (int64 [n]) or soft (float [n, classes] distributions) targets."""
    if target.is_floating_point():
        return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    return F.cross_entropy(logits, target)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _check(params: Mapping[str, torch.Tensor], theta: Mapping[str, torch.Tensor], steps: int,
           seeds: Sequence[int]) -> None:
    if steps < 1:
        raise ValueError(f"the unroll needs at least one inner step, got steps={steps}")
    if len(seeds) != steps:
        raise ValueError(f"need one seed per inner step: steps={steps}, got {len(seeds)} seeds")
    if not params:
        raise ValueError("the network has no parameters to train")
    if not theta:
        raise ValueError("theta is empty: nothing to differentiate")


def _learnable_lr(lr: float | torch.Tensor) -> bool:
    return isinstance(lr, torch.Tensor) and lr.requires_grad


def _inner_gradient(module: nn.Module, w: Tensors, x: torch.Tensor, y: torch.Tensor,
                    loss_fn: InnerLossFn, create_graph: bool,
                    amp: torch.dtype | None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    with _autocast(x.device, amp):
        logits = functional_call(module, w, (x,))
    if amp is not None:
        logits = logits.float()
    loss = loss_fn(logits, y)
    grads = torch.autograd.grad(loss, tuple(w.values()), create_graph=create_graph)
    return loss, grads


def reverse_hypergradient(
    module: nn.Module,
    params: Mapping[str, torch.Tensor],
    theta: Mapping[str, torch.Tensor],
    batch_fn: BatchFn,
    outer_loss_fn: OuterLossFn,
    *,
    steps: int,
    seeds: Sequence[int],
    lr: float | torch.Tensor = 0.01,
    momentum: float = 0.9,
    inner_loss_fn: InnerLossFn = cross_entropy,
    store_device: torch.device | str | None = None,
    amp: torch.dtype | None = None,
) -> Hypergradient:
    """Hypergradient by the reverse pass with per-step recomputation (memory ~ T weight copies).

    module: the network, called as functional_call(module, w, (x,)); params: its initial weights w_0;
    theta: the learnable tensors handed to `batch_fn`; outer_loss_fn(w_T) -> scalar;
    lr: a float, or a scalar tensor (requires_grad=True to learn it); seeds: one per inner step;
    store_device: where the T weight copies live (default: next to the weights; "cpu" offloads);
    amp: an autocast dtype for the network's forward (e.g. torch.bfloat16), None for full precision.
    """
    _check(params, theta, steps, seeds)
    learn_lr = _learnable_lr(lr)
    lr_value = lr.detach() if isinstance(lr, torch.Tensor) else lr
    names = list(params)
    w = {k: p.detach().clone() for k, p in params.items()}
    v = {k: torch.zeros_like(p) for k, p in w.items()}
    theta_now = {k: t.detach() for k, t in theta.items()}
    stored_w: list[Tensors] = []
    stored_v: list[Tensors] = []
    inner_loss = torch.zeros(())
    for t in range(steps):
        with torch.no_grad():
            x, y = batch_fn(theta_now, t, _generator(seeds[t]))
        w_leaf = {k: p.requires_grad_(True) for k, p in w.items()}
        inner_loss, g = _inner_gradient(module, w_leaf, x, y, inner_loss_fn, False, amp)
        stored_w.append({k: p.detach().to(store_device or p.device) for k, p in w.items()})
        with torch.no_grad():
            v = {k: momentum * v[k] + gk for k, gk in zip(names, g, strict=True)}
            w = {k: w[k].detach() - lr_value * v[k] for k in names}
        if learn_lr:
            stored_v.append({k: p.to(store_device or p.device) for k, p in v.items()})

    w_final = {k: p.requires_grad_(True) for k, p in w.items()}
    outer = outer_loss_fn(w_final)
    dw = dict(zip(names, torch.autograd.grad(outer, tuple(w_final.values())), strict=True))

    theta_leaf = {k: t.detach().requires_grad_(True) for k, t in theta.items()}
    dtheta = {k: torch.zeros_like(t) for k, t in theta_leaf.items()}
    dv = {k: torch.zeros_like(p) for k, p in dw.items()}
    dlr = torch.zeros((), dtype=torch.float64, device=next(iter(dw.values())).device)
    for t in reversed(range(steps)):
        # adjoint of v_{t+1}: from w_{t+1} = w_t - lr * v_{t+1} and from v_{t+2} = mu * v_{t+1} + ...
        dv = {k: dv[k] - lr_value * dw[k] for k in names}
        if learn_lr:
            vt = stored_v[t]
            dlr -= sum((dw[k] * vt[k].to(dw[k].device)).sum().double() for k in names)
        w_t = {k: p.to(dw[k].device).requires_grad_(True) for k, p in stored_w[t].items()}
        x, y = batch_fn(theta_leaf, t, _generator(seeds[t]))
        _, g = _inner_gradient(module, w_t, x, y, inner_loss_fn, True, amp)
        inputs = (*w_t.values(), *theta_leaf.values())
        vjp = torch.autograd.grad(g, inputs, grad_outputs=tuple(dv[k] for k in names),
                                  allow_unused=True)
        with torch.no_grad():
            dw = {k: dw[k] + (hk if hk is not None else 0.0)
                  for k, hk in zip(names, vjp[: len(names)], strict=True)}
            for k, hk in zip(theta_leaf, vjp[len(names):], strict=True):
                if hk is not None:
                    dtheta[k] += hk
            dv = {k: momentum * dv[k] for k in names}
        stored_w[t] = {}
    lr_grad = dlr.to(lr.dtype) if learn_lr else None
    return Hypergradient(outer.detach(), dtheta, lr_grad, inner_loss.detach())


def naive_unroll_hypergradient(
    module: nn.Module,
    params: Mapping[str, torch.Tensor],
    theta: Mapping[str, torch.Tensor],
    batch_fn: BatchFn,
    outer_loss_fn: OuterLossFn,
    *,
    steps: int,
    seeds: Sequence[int],
    lr: float | torch.Tensor = 0.01,
    momentum: float = 0.9,
    inner_loss_fn: InnerLossFn = cross_entropy,
    amp: torch.dtype | None = None,
) -> Hypergradient:
    """Hypergradient by plain autograd through all T steps (the whole graph is kept; reference).

    Same arguments and result as `reverse_hypergradient`.
    """
    _check(params, theta, steps, seeds)
    learn_lr = _learnable_lr(lr)
    names = list(params)
    theta_leaf = {k: t.detach().requires_grad_(True) for k, t in theta.items()}
    w = {k: p.detach().clone().requires_grad_(True) for k, p in params.items()}
    v = {k: torch.zeros_like(p) for k, p in w.items()}
    inner_loss = torch.zeros(())
    for t in range(steps):
        x, y = batch_fn(theta_leaf, t, _generator(seeds[t]))
        inner_loss, g = _inner_gradient(module, w, x, y, inner_loss_fn, True, amp)
        v = {k: momentum * v[k] + gk for k, gk in zip(names, g, strict=True)}
        w = {k: w[k] - lr * v[k] for k in names}
    outer = outer_loss_fn(w)
    inputs = (*theta_leaf.values(), lr) if learn_lr else tuple(theta_leaf.values())
    grads = torch.autograd.grad(outer, inputs, allow_unused=True)
    dtheta = {k: (gk if gk is not None else torch.zeros_like(theta_leaf[k]))
              for k, gk in zip(theta_leaf, grads, strict=False)}
    lr_grad = grads[-1] if learn_lr else None
    return Hypergradient(outer.detach(), dtheta, lr_grad, inner_loss.detach())
