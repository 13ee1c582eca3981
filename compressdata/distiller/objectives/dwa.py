"""Objective `dwa`: diversity-driven synthesis with directed weight adjustment (Du et al., NeurIPS 2024).

A frozen batch-norm teacher (trained on the real data, or loaded) scores synthetic batches of one
example per class (batch j = the j-th example of every class). Loss of a batch: cross-entropy +
r_bn * sum over BN layers l of w_l (||mu_l - running_mean_l|| + ||var_l - running_var_l||), where
mu_l, var_l are the batch statistics of layer l's input (biased variance) and w_1 = the first-layer
weight, the others 1. Before a batch is synthesised, the teacher's weights are moved K steps of
size rho/K along the normalised CE gradient on that batch (its initial examples, so the adjustment
is fixed per batch and rebuilt identically on resume); running statistics are never perturbed.
Each iteration optimises min(inner_batch_per_class, r) random batches, each shifted by a random
jitter (roll of up to `dwa_jitter` pixels). At the end the unperturbed teacher's logits label the
examples (label_space "logits", recipe kl_divergence at `dwa_temperature`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from compressdata.bank.metadata import TrainingRecipe
from compressdata.distiller.objectives.base import ObjectiveResult, draw_seeds
from compressdata.distiller.options import (
    non_negative_int,
    non_negative_number,
    one_of,
    positive_int,
    positive_number,
    register_objective,
)
from compressdata.distiller.run import DistillRun
from compressdata.distiller.synthetic import init_theta
from compressdata.distiller.teacher import TEACHER_ARCHS, Teacher, load_teacher, save_teacher, train_teacher
from compressdata.errors import ConfigError, UsageError


@dataclass(frozen=True)
class DWAOptions:
    """dwa: diversity-driven synthesis with directed weight adjustment."""

    teacher: str = "train"
    """a teacher .safetensors file, or 'train' (trained and kept in the checkpoint dir)"""
    teacher_arch: Literal["convnet", "resnet18_bn"] = "convnet"
    """teacher to train (convnet with batch norm, or resnet18_bn)"""
    teacher_width: int = 128
    """width of the teacher to train"""
    teacher_epochs: int = 20
    """epochs of the teacher to train"""
    r_bn: float = 0.01
    """weight of the BN-statistics matching"""
    first_bn_weight: float = 10.0
    """extra weight of the first BN layer"""
    steps: int = 12
    """K weight-adjustment steps per batch"""
    rho: float = 0.015
    """total size of the weight adjustment"""
    jitter: int = 4
    """random shift in pixels"""
    temperature: float = 4.0
    """soft-label temperature of the students"""

    def validate(self, config: Any) -> None:
        """Every value is checked whatever the objective (a bad one never waits); the rest for dwa runs."""
        for name in ("teacher_width", "teacher_epochs", "steps"):
            positive_int(f"dwa_{name}", getattr(self, name))
        for name in ("rho", "temperature"):
            positive_number(f"dwa_{name}", getattr(self, name))
        for name in ("r_bn", "first_bn_weight"):
            non_negative_number(f"dwa_{name}", getattr(self, name))
        non_negative_int("dwa_jitter", self.jitter, " (pixels)")
        one_of("dwa_teacher_arch", self.teacher_arch, TEACHER_ARCHS)
        if not isinstance(self.teacher, str) or not self.teacher:
            raise ConfigError(f"dwa_teacher must be 'train' or a teacher file path, got {self.teacher!r}")
        if config.objective == "dwa" and config.parameterization.learn_labels:
            raise ConfigError("objective dwa labels the synthetic set with the teacher's soft labels: "
                              "learn_labels does not apply")


register_objective("dwa", DWAOptions)

TEACHER_FILE = "teacher.safetensors"
Params = dict[str, torch.Tensor]


def perturb_weights(module: nn.Module, params: Params, buffers: Params, x: torch.Tensor,
                    y: torch.Tensor, rho: float, steps: int) -> Params:
    """params moved `steps` times by (rho / steps) * g / ||g||, g the gradient of CE(module(x), y) at
    the current point (one norm over all parameters). The module runs in eval mode on `buffers`,
    which are neither changed nor returned."""
    current = {k: v.detach() for k, v in params.items()}
    for _ in range(steps):
        w = {k: v.clone().requires_grad_(True) for k, v in current.items()}
        loss = F.cross_entropy(functional_call(module, {**w, **buffers}, (x,)), y)
        grads = torch.autograd.grad(loss, list(w.values()))
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        scale = (rho / steps) / (norm + 1e-12)
        current = {k: v + scale * g for (k, v), g in zip(current.items(), grads, strict=True)}
    return current


def bn_matching_forward(module: nn.Module, weights: Params, x: torch.Tensor,
                        first_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, sum over BN layers of w_l (||mu - running_mean|| + ||var - running_var||)) for the
    batch x, `weights` holding the parameters and buffers; the module must be in eval mode."""
    terms: list[torch.Tensor] = []

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        h = inputs[0]
        mean = h.mean(dim=(0, 2, 3))
        var = h.var(dim=(0, 2, 3), unbiased=False)
        terms.append(torch.linalg.vector_norm(mean - layer.running_mean)
                     + torch.linalg.vector_norm(var - layer.running_var))

    layers = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    if not layers:
        raise UsageError("the DWA teacher has no BatchNorm2d layer to match statistics with")
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        logits = functional_call(module, weights, (x,))
    finally:
        for handle in handles:
            handle.remove()
    loss = sum(t * (first_weight if i == 0 else 1.0) for i, t in enumerate(terms))
    return logits, loss


def dwa_objective(run: DistillRun, theta: dict[str, torch.Tensor],
                  generator: torch.Generator) -> ObjectiveResult:
    """CE + r_bn * BN-matching on the adjusted teacher for a few one-per-class batches."""
    config = run.config
    teacher = _teacher(run)
    r = run.synthetic.per_class
    seeds = draw_seeds(generator, 2)
    pick = torch.Generator().manual_seed(seeds[0])
    batches = torch.randperm(r, generator=pick)[:min(config.inner.batch_per_class, r)].tolist()
    shifts = torch.randint(0, config.dwa.jitter + 1, (len(batches), 2),
                           generator=torch.Generator().manual_seed(seeds[1])).tolist()
    leaves = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
    y = torch.arange(run.data.num_classes, device=run.device)
    buffers = teacher.buffers
    total = torch.zeros((), device=run.device)
    ce_sum = bn_sum = 0.0
    for j, (dy, dx) in zip(batches, shifts, strict=True):
        x = run.synthetic.decode(leaves, _batch_index(run, j))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        logits, bn = bn_matching_forward(teacher.module, {**_adjusted_weights(run, j), **buffers}, x,
                                         config.dwa.first_bn_weight)
        ce = F.cross_entropy(logits, y)
        total = total + ce + config.dwa.r_bn * bn
        ce_sum += float(ce.detach())
        bn_sum += float(bn.detach())
    grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    out = {k: torch.zeros_like(v) if g is None else g.detach()
           for (k, v), g in zip(leaves.items(), grads, strict=True)}
    n = len(batches)
    return ObjectiveResult(float(total.detach()) / n, out, {"ce": ce_sum / n, "bn": bn_sum / n})


def dwa_finish(run: DistillRun, theta: dict[str, torch.Tensor], recipe: TrainingRecipe,
               labels: torch.Tensor, label_space: str) -> tuple[TrainingRecipe, torch.Tensor, str]:
    """Label the final examples with the unperturbed teacher's logits; students learn them by KL
    divergence at config.dwa.temperature."""
    teacher = _teacher(run)
    with torch.no_grad():
        logits = teacher.module(run.synthetic.decode(theta)).float()
    recipe = replace(recipe, label_loss="kl_divergence", label_temperature=run.config.dwa.temperature)
    return recipe, logits.cpu(), "logits"


def _batch_index(run: DistillRun, j: int) -> torch.Tensor:
    """Rows of batch j: the j-th example of every class (class-major storage)."""
    r = run.synthetic.per_class
    return torch.arange(run.data.num_classes, device=run.device) * r + j


def _teacher(run: DistillRun) -> Teacher:
    """The run's teacher: loaded from config.dwa.teacher, or trained (and kept in the checkpoint
    directory, so a resumed run uses the same one)."""
    if "dwa_teacher" not in run.cache:
        config = run.config
        if config.dwa.teacher != "train":
            teacher = load_teacher(config.dwa.teacher, run.data, run.device)
        else:
            cached = Path(config.run.checkpoint_dir) / TEACHER_FILE if config.run.checkpoint_dir else None
            if cached is not None and cached.is_file():
                teacher = load_teacher(cached, run.data, run.device)
            else:
                teacher = train_teacher(run.data, config.dwa.teacher_arch, config.dwa.teacher_width,
                                        config.dwa.teacher_epochs, config.run.seed, run.device)
                if cached is not None:
                    save_teacher(teacher, cached)
        for p in teacher.module.parameters():
            p.requires_grad_(False)
        run.cache["dwa_teacher"] = teacher
    return run.cache["dwa_teacher"]


def _adjusted_weights(run: DistillRun, j: int) -> Params:
    """The teacher's parameters adjusted on batch j's initial examples (computed on first use)."""
    config = run.config
    teacher = _teacher(run)
    if "dwa_initial" not in run.cache:
        initial = init_theta(run.synthetic, run.layout, config.resolved_init, run.real,
                             torch.Generator().manual_seed(config.run.seed), run.data.image_shape)
        with torch.no_grad():
            run.cache["dwa_initial"] = run.synthetic.decode({k: v.to(run.device) for k, v in initial.items()})
        run.cache["dwa_adjusted"] = {}
    adjusted = run.cache["dwa_adjusted"]
    if j not in adjusted:
        x = run.cache["dwa_initial"][_batch_index(run, j)]
        y = torch.arange(run.data.num_classes, device=run.device)
        adjusted[j] = perturb_weights(teacher.module, teacher.params, teacher.buffers, x, y,
                                      config.dwa.rho, config.dwa.steps)
    return adjusted[j]
