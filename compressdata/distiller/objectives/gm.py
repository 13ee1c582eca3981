"""Objective `gm`: per-class gradient matching with DSA (DC: Zhao, Mopuri & Bilen, ICLR 2021;
DSA: Zhao & Bilen, ICML 2021).

One outer iteration is one round of DC's outer loop on a fresh network: `gm_outer_loop` times,
for every class, the network-parameter gradients of the cross-entropy on a real class batch and on
the synthetic class examples are compared with DC's layer-wise distance (`gradient_distance`); the
synthetic side is differentiated through its gradient (double backward). Between two matchings the
network takes `gm_inner_loop` plain SGD steps (lr `inner_lr`) on synthetic minibatches, as DC
trains it on the synthetic set. The matchings' gradients are summed and applied in ONE shared outer
step, so the outer lr plays the role of DC's lr_img per matching (to first order). With DSA each
class draws one augmentation shared by its real and synthetic batch (siamese).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from compressdata.distiller.objectives.base import ObjectiveResult, draw_seeds
from compressdata.distiller.objectives.grads import add_grads, class_rows, leaf_copy, theta_grads
from compressdata.distiller.options import positive_int, register_objective
from compressdata.distiller.run import DistillRun, autocast, fresh_network, shared_augment
from compressdata.errors import UsageError


@dataclass(frozen=True)
class GMOptions:
    """gm: gradient matching (DC / DSA)."""

    outer_loop: int | None = None
    """matchings per outer iteration (default: 1 below IPC 10, else 5)"""
    inner_loop: int | None = None
    """network SGD steps between matchings (default: 1 below IPC 10, else 10)"""

    def resolved(self, config: Any) -> GMOptions:
        """The loops actually used: given, else DC's rule scaled to the CPU (budget < 10 images per class:
        1, 1; else 5, 10 instead of DC's 10, 50)."""
        outer, inner = (1, 1) if config.parameterization.budget_ipc < 10 else (5, 10)
        return GMOptions(self.outer_loop or outer, self.inner_loop or inner)

    def validate(self, config: Any) -> None:
        for name in ("outer_loop", "inner_loop"):
            if getattr(self, name) is not None:
                positive_int(f"gm_{name}", getattr(self, name))


register_objective("gm", GMOptions)

EPS = 1e-6


def gradient_distance(syn: Sequence[torch.Tensor], real: Sequence[torch.Tensor]) -> torch.Tensor:
    """DC's distance between two lists of parameter gradients: for every parameter of two or more
    dimensions, viewed as [out, rest], the sum over output rows of 1 - cosine(syn row, real row);
    one-dimensional parameters (biases, norm affines) are left out, as in DC."""
    if len(syn) != len(real):
        raise UsageError(f"gradient lists differ in length: {len(syn)} vs {len(real)}")
    total = syn[0].new_zeros((), dtype=torch.float32)
    for gs, gr in zip(syn, real, strict=True):
        if gs.shape != gr.shape:
            raise UsageError(f"gradient shapes differ: {tuple(gs.shape)} vs {tuple(gr.shape)}")
        if gs.ndim < 2:
            continue
        gs, gr = gs.float().flatten(1), gr.float().flatten(1)
        cosine = (gs * gr).sum(1) / (gs.norm(dim=1) * gr.norm(dim=1) + EPS)
        total = total + (1 - cosine).sum()
    return total


def gm_objective(run: DistillRun, theta: dict[str, torch.Tensor],
                 generator: torch.Generator) -> ObjectiveResult:
    """Summed per-class gradient-matching distance over one DC outer-loop round, and its gradients."""
    config = run.config
    gm = config.gm.resolved(config)
    outer_loop, inner_loop = gm.outer_loop, gm.inner_loop
    n_classes = run.data.num_classes
    per_round = 2 + n_classes + 2 * inner_loop
    seeds = draw_seeds(generator, 1 + outer_loop * per_round)
    module, params = fresh_network(config, run.data.image_shape, n_classes, seeds[0], run.device)
    leaves = leaf_copy(theta)
    grads: dict[str, torch.Tensor] | None = None
    losses = []
    for round_ in range(outer_loop):
        s = seeds[1 + round_ * per_round: 1 + (round_ + 1) * per_round]
        loss = _matching_loss(run, module, params, leaves, s[0], s[1], s[2:2 + n_classes])
        grads = add_grads(grads, theta_grads(loss, leaves))
        losses.append(float(loss.detach()))
        if round_ < outer_loop - 1:
            params = _train_on_synthetic(run, module, params, theta, s[2 + n_classes:])
    return ObjectiveResult(sum(losses) / len(losses), grads, {"gm_rounds": outer_loop})


def _matching_loss(run: DistillRun, module: torch.nn.Module, params: dict[str, torch.Tensor],
                   leaves: dict[str, torch.Tensor], real_seed: int, syn_seed: int,
                   class_seeds: Sequence[int]) -> torch.Tensor:
    config = run.config
    x_real, y_real = run.real.batch(config.outer.real_batch_per_class,
                                    torch.Generator().manual_seed(real_seed))
    index = run.synthetic.sample_index(config.inner.batch_per_class,
                                       torch.Generator().manual_seed(syn_seed)).to(run.device)
    x_syn, t_syn = run.synthetic.decode(leaves, index), run.synthetic.targets(leaves, index)
    y_syn = index // run.synthetic.per_class
    names = list(params)
    loss = x_syn.new_zeros(())
    for c, seed in enumerate(class_seeds):
        real_rows, syn_rows = class_rows(y_real, c), class_rows(y_syn, c)
        real_c, syn_c = x_real[real_rows], x_syn[syn_rows]
        augment = shared_augment(config, seed)
        if augment is not None:
            real_c, syn_c = augment(real_c, torch.Generator()), augment(syn_c, torch.Generator())
        w = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with autocast(config, run.device):
            real_logits = functional_call(module, w, (real_c,))
        g_real = torch.autograd.grad(F.cross_entropy(real_logits.float(), y_real[real_rows]),
                                     [w[n] for n in names])
        with autocast(config, run.device):
            syn_logits = functional_call(module, w, (syn_c,))
        g_syn = torch.autograd.grad(F.cross_entropy(syn_logits.float(), t_syn[syn_rows]),
                                    [w[n] for n in names], create_graph=True)
        loss = loss + gradient_distance(g_syn, [g.detach() for g in g_real])
    return loss


def _train_on_synthetic(run: DistillRun, module: torch.nn.Module, params: dict[str, torch.Tensor],
                        theta: dict[str, torch.Tensor], seeds: Sequence[int]) -> dict[str, torch.Tensor]:
    """`len(seeds) / 2` plain SGD steps of the network on synthetic minibatches (theta fixed)."""
    config = run.config
    detached = {k: v.detach() for k, v in theta.items()}
    for batch_seed, augment_seed in zip(seeds[0::2], seeds[1::2], strict=True):
        with torch.no_grad():
            x, t = run.synthetic.minibatch(detached, config.inner.batch_per_class,
                                           torch.Generator().manual_seed(batch_seed),
                                           shared_augment(config, augment_seed))
        w = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with autocast(config, run.device):
            logits = functional_call(module, w, (x,))
        step = torch.autograd.grad(F.cross_entropy(logits.float(), t), list(w.values()))
        params = {k: (v - config.inner.lr * g).detach()
                  for (k, v), g in zip(w.items(), step, strict=True)}
    return params
