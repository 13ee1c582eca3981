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

from compressdata.errors import UsageError

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
        raise UsageError(f"the unroll needs at least one inner step, got steps={steps}")
    if len(seeds) != steps:
        raise UsageError(f"need one seed per inner step: steps={steps}, got {len(seeds)} seeds")
    if not params:
        raise UsageError("the network has no parameters to train")
    if not theta:
        raise UsageError("theta is empty: nothing to differentiate")


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


def step_graph_bytes(module: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                     inner_loss_fn: InnerLossFn = cross_entropy, amp: torch.dtype | None = None) -> int:
    """Bytes autograd keeps for one inner step's double backward on batch (x, y): the tensors its
    graph saves, each storage counted once (what `kept_graphs` costs per step)."""
    storages: dict[tuple[int, str], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[(storage.data_ptr(), str(tensor.device))] = storage.nbytes()
        return tensor

    w = {k: p.detach().requires_grad_(True) for k, p in params.items()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _inner_gradient(module, w, x.detach().requires_grad_(True), y, inner_loss_fn, True, amp)
    return sum(storages.values())


def _window(steps: int, window: int | None) -> int:
    if window is None:
        return steps
    if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= steps:
        raise UsageError(f"window must be an int in [1, steps={steps}] (the last steps differentiated), "
                         f"got {window!r}")
    return window


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
    window: int | None = None,
    kept_graphs: int = 0,
) -> Hypergradient:
    """Hypergradient by the reverse pass with per-step recomputation (memory ~ T weight copies).

    module: the network, called as functional_call(module, w, (x,)); params: its initial weights w_0;
    theta: the learnable tensors handed to `batch_fn`; outer_loss_fn(w_T) -> scalar;
    lr: a float, or a scalar tensor (requires_grad=True to learn it); seeds: one per inner step;
    store_device: where the T weight copies live (default: next to the weights; "cpu" offloads);
    amp: an autocast dtype for the network's forward (e.g. torch.bfloat16), None for full precision;
    window: differentiate only the last `window` steps (truncated BPTT; the earlier steps still train
    the network but store nothing and pass no gradient), None for all;
    kept_graphs: keep the double-backward graphs of the last `kept_graphs` differentiated steps from
    the forward run instead of recomputing them in the reverse pass (same result, faster, ~one step's
    graph of memory each).
    """
    _check(params, theta, steps, seeds)
    window = _window(steps, window)
    first = steps - window  # steps before `first` are not differentiated
    kept_from = steps - min(max(int(kept_graphs), 0), window)
    learn_lr = _learnable_lr(lr)
    lr_value = lr.detach() if isinstance(lr, torch.Tensor) else lr
    names = list(params)
    w = [p.detach().clone() for p in params.values()]
    v = [torch.zeros_like(p) for p in w]
    theta_now = {k: t.detach() for k, t in theta.items()}
    theta_leaf = {k: t.detach().requires_grad_(True) for k, t in theta.items()}
    stored_w: dict[int, list[torch.Tensor]] = {}
    stored_v: dict[int, list[torch.Tensor]] = {}
    kept: dict[int, tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]] = {}
    inner_loss = torch.zeros(())
    for t in range(steps):
        keep = t >= kept_from
        with torch.set_grad_enabled(keep):
            x, y = batch_fn(theta_leaf if keep else theta_now, t, _generator(seeds[t]))
        w_leaf = [p.requires_grad_(True) for p in w]
        inner_loss, g = _inner_gradient(module, dict(zip(names, w_leaf, strict=True)), x, y,
                                        inner_loss_fn, keep, amp)
        if keep:
            kept[t] = (w_leaf, g)
        elif t >= first:
            stored_w[t] = [p.detach().to(store_device) if store_device else p.detach() for p in w]
        with torch.no_grad():
            v = [momentum * vk + gk.detach() for vk, gk in zip(v, g, strict=True)]
            w = [wk.detach() - lr_value * vk for wk, vk in zip(w, v, strict=True)]
        if learn_lr and t >= first:
            stored_v[t] = [p.to(store_device) if store_device else p for p in v]

    w_final = [p.requires_grad_(True) for p in w]
    outer = outer_loss_fn(dict(zip(names, w_final, strict=True)))
    dw = list(torch.autograd.grad(outer, w_final))

    dtheta = {k: torch.zeros_like(t) for k, t in theta_leaf.items()}
    dv = [torch.zeros_like(p) for p in dw]
    dlr = torch.zeros((), dtype=torch.float64, device=dw[0].device)
    for t in reversed(range(first, steps)):
        # adjoint of v_{t+1}: from w_{t+1} = w_t - lr * v_{t+1} and from v_{t+2} = mu * v_{t+1} + ...
        dv = [dvk - lr_value * dwk for dvk, dwk in zip(dv, dw, strict=True)]
        if learn_lr:
            dlr -= sum((dwk * vk.to(dwk.device)).sum().double()
                       for dwk, vk in zip(dw, stored_v.pop(t), strict=True))
        if t in kept:
            w_t, g = kept.pop(t)
        else:
            w_t = [p.to(dwk.device).requires_grad_(True) for p, dwk in zip(stored_w.pop(t), dw, strict=True)]
            x, y = batch_fn(theta_leaf, t, _generator(seeds[t]))
            _, g = _inner_gradient(module, dict(zip(names, w_t, strict=True)), x, y, inner_loss_fn, True, amp)
        vjp = torch.autograd.grad(g, (*w_t, *theta_leaf.values()), grad_outputs=dv, allow_unused=True)
        with torch.no_grad():
            dw = [dwk + hk if hk is not None else dwk for dwk, hk in zip(dw, vjp[: len(names)], strict=True)]
            for k, hk in zip(theta_leaf, vjp[len(names):], strict=True):
                if hk is not None:
                    dtheta[k] += hk
            dv = [momentum * dvk for dvk in dv]
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
    window: int | None = None,
) -> Hypergradient:
    """Hypergradient by plain autograd through the unroll (the whole graph is kept; reference).

    Same arguments and result as `reverse_hypergradient`; with `window`, the first steps - window
    steps run detached (no graph) and autograd covers the rest.
    """
    _check(params, theta, steps, seeds)
    first = steps - _window(steps, window)
    learn_lr = _learnable_lr(lr)
    names = list(params)
    theta_leaf = {k: t.detach().requires_grad_(True) for k, t in theta.items()}
    w = {k: p.detach().clone().requires_grad_(True) for k, p in params.items()}
    v = {k: torch.zeros_like(p) for k, p in w.items()}
    inner_loss = torch.zeros(())
    for t in range(steps):
        differentiated = t >= first
        with torch.set_grad_enabled(differentiated):
            x, y = batch_fn(theta_leaf if differentiated else theta, t, _generator(seeds[t]))
        inner_loss, g = _inner_gradient(module, w, x, y, inner_loss_fn, differentiated, amp)
        if not differentiated:
            g = tuple(gk.detach() for gk in g)
        step_lr = lr if differentiated else (lr.detach() if isinstance(lr, torch.Tensor) else lr)
        v = {k: momentum * v[k] + gk for k, gk in zip(names, g, strict=True)}
        w = {k: w[k] - step_lr * v[k] for k in names}
        if not differentiated:  # before the window the state is a constant
            w = {k: p.detach().requires_grad_(True) for k, p in w.items()}
    outer = outer_loss_fn(w)
    inputs = (*theta_leaf.values(), lr) if learn_lr else tuple(theta_leaf.values())
    grads = torch.autograd.grad(outer, inputs, allow_unused=True)
    dtheta = {k: (gk if gk is not None else torch.zeros_like(theta_leaf[k]))
              for k, gk in zip(theta_leaf, grads, strict=False)}
    lr_grad = grads[-1] if learn_lr else None
    if learn_lr and lr_grad is None:
        lr_grad = torch.zeros_like(lr)
    return Hypergradient(outer.detach(), dtheta, lr_grad, inner_loss.detach())
