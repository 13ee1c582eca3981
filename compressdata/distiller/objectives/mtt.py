"""Objective `mtt`: matching training trajectories (Cazenavette et al., CVPR 2022).

Each iteration picks a random expert and start epoch t, takes N SGD steps (no momentum) on
synthetic minibatches from the expert's parameters at t with the learned synthetic lr, and
measures how far the result lands from the expert's parameters M epochs later, relative to how far
the expert itself moved: ||w_N - w*_{t+M}||^2 / ||w*_t - w*_{t+M}||^2. Gradients flow back
through the N steps by autograd (second order, `torch.func.functional_call`).

The synthetic lr is the theta entry `syn_lr`, stored as log(lr) so it stays positive; its outer
step size is `mtt_lr_lr` (its gradient is rescaled by mtt_lr_lr / outer_lr before the shared outer
SGD step; Adam is invariant to that scale, so under `outer_optimizer="adam"` it moves at Adam's lr like
every other tensor). At the end exp(syn_lr) becomes the bank recipe's lr (never a stored tensor).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from compressdata.bank.metadata import TrainingRecipe
from compressdata.distiller.experts import ExpertStore
from compressdata.distiller.objectives.base import ObjectiveResult, draw_seeds
from compressdata.distiller.options import positive_int, positive_number, register_objective
from compressdata.distiller.run import DistillRun, fresh_network, shared_augment
from compressdata.errors import ConfigError, UsageError


@dataclass(frozen=True)
class MTTOptions:
    """mtt: matching training trajectories."""

    expert_dir: str | None = None
    """expert trajectories made by `compressdata experts`"""
    syn_steps: int = 20
    """N synthetic SGD steps per iteration"""
    expert_epochs: int = 2
    """M, the expert epochs the N steps must cover"""
    max_start_epoch: int = 20
    """start epochs are drawn from 0 .. this - 1"""
    lr_init: float = 0.01
    """initial learned synthetic lr"""
    lr_lr: float = 0.01
    """outer SGD step size of log(synthetic lr) (adam: its own lr)"""

    def validate(self, config: Any) -> None:
        """Every value is checked whatever the objective (a bad one never waits); the rest for mtt runs."""
        for name in ("syn_steps", "expert_epochs", "max_start_epoch"):
            positive_int(f"mtt_{name}", getattr(self, name))
        for name in ("lr_init", "lr_lr"):
            positive_number(f"mtt_{name}", getattr(self, name))
        if config.objective != "mtt":
            return
        if not self.expert_dir:
            raise ConfigError("objective mtt needs expert trajectories: set mtt_expert_dir "
                              "(mtt.expert_dir; make them with `compressdata experts`)")
        if config.model.norm == "batchnorm" or config.model.arch == "resnet18_bn":
            raise ConfigError("objective mtt steps networks functionally: it needs a norm without running "
                              f"statistics (instancenorm or none), got arch={config.model.arch!r} "
                              f"norm={config.model.norm!r}")


register_objective("mtt", MTTOptions)

SYN_LR = "syn_lr"
Params = dict[str, torch.Tensor]
BatchFn = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def synthetic_steps(module: nn.Module, start: Params, batch_fn: BatchFn, lr: torch.Tensor,
                    steps: int) -> Params:
    """Parameters after `steps` SGD steps (no momentum) from `start`: w <- w - lr * grad CE(batch_fn(i));
    differentiable in lr and in whatever batch_fn's inputs depend on."""
    w = {k: v.detach().requires_grad_(True) for k, v in start.items()}
    for i in range(steps):
        x, y = batch_fn(i)
        loss = F.cross_entropy(functional_call(module, w, (x,)), y)
        grads = torch.autograd.grad(loss, list(w.values()), create_graph=True)
        w = {k: v - lr * g for (k, v), g in zip(w.items(), grads, strict=True)}
    return w


def trajectory_loss(student: Params, start: Params, target: Params) -> torch.Tensor:
    """||student - target||^2 / ||start - target||^2 over all parameters together."""
    num = sum((student[k] - target[k]).pow(2).sum() for k in target)
    den = sum((start[k] - target[k]).pow(2).sum() for k in target)
    return num / den


def mtt_objective(run: DistillRun, theta: dict[str, torch.Tensor],
                  generator: torch.Generator) -> ObjectiveResult:
    """Normalised parameter distance after N synthetic steps from a random expert epoch, and its
    gradients for the synthetic tensors and `syn_lr`."""
    config = run.config
    store, experts = _experts(run)
    seeds = draw_seeds(generator, 2 + config.mtt.syn_steps)
    pick = torch.Generator().manual_seed(seeds[0])
    expert = experts[int(torch.randint(len(experts), (1,), generator=pick))]
    start_epoch = int(torch.randint(config.mtt.max_start_epoch, (1,), generator=pick))
    start = store.load(expert, start_epoch, run.device)
    target = store.load(expert, start_epoch + config.mtt.expert_epochs, run.device)
    module, _ = fresh_network(config, run.data.image_shape, run.data.num_classes, seeds[1], run.device)
    leaves = {k: v.detach().requires_grad_(True) for k, v in theta.items()}

    def batch_fn(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seeds[2 + step])
        return run.synthetic.minibatch(leaves, config.inner.batch_per_class, gen,
                                       shared_augment(config, seeds[2 + step]))

    lr = leaves[SYN_LR].exp()
    student = synthetic_steps(module, start, batch_fn, lr, config.mtt.syn_steps)
    loss = trajectory_loss(student, start, target)
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    out = {k: torch.zeros_like(v) if g is None else g.detach()
           for (k, v), g in zip(leaves.items(), grads, strict=True)}
    out[SYN_LR] = out[SYN_LR] * (config.mtt.lr_lr / config.resolved_outer[0])
    return ObjectiveResult(float(loss.detach()), out, {"syn_lr": float(lr.detach()), "expert": expert,
                                               "start_epoch": start_epoch})


def mtt_extra_theta(run: DistillRun) -> dict[str, torch.Tensor]:
    """The learned synthetic lr, log-parameterised, initialised to config.mtt.lr_init."""
    _experts(run)
    return {SYN_LR: torch.tensor(math.log(run.config.mtt.lr_init), dtype=torch.float32)}


def mtt_finish(run: DistillRun, theta: dict[str, torch.Tensor], recipe: TrainingRecipe,
               labels: torch.Tensor, label_space: str) -> tuple[TrainingRecipe, torch.Tensor, str]:
    """Students train with the learned lr: recipe.lr = exp(syn_lr)."""
    return replace(recipe, lr=float(theta[SYN_LR].detach().exp())), labels, label_space


def _experts(run: DistillRun) -> tuple[ExpertStore, list[int]]:
    """The run's expert store (opened and checked against the run once) and its usable experts."""
    if "mtt_experts" not in run.cache:
        config = run.config
        store = ExpertStore(config.mtt.expert_dir)
        ec = store.config
        mine = {"source": config.data.source, "arch": config.model.arch, "width": config.model.width,
                "depth": config.model.depth, "norm": config.model.norm, "zca": config.data.zca}
        theirs = {k: getattr(ec, k) for k in mine}
        diff = [f"{k} (experts {theirs[k]!r}, run {mine[k]!r})" for k in mine if mine[k] != theirs[k]]
        if diff:
            raise UsageError(f"the experts in {config.mtt.expert_dir} do not fit this run: "
                             f"{', '.join(diff)}")
        network, _ = fresh_network(config, run.data.image_shape, run.data.num_classes, 0, torch.device("cpu"))
        store.check_parameters({k: tuple(v.shape) for k, v in network.named_parameters()})
        needed = config.mtt.max_start_epoch - 1 + config.mtt.expert_epochs
        experts = store.complete(needed)
        if not experts:
            raise UsageError(f"mtt needs experts with at least mtt_max_start_epoch - 1 + "
                             f"mtt_expert_epochs = {needed} epochs; {config.mtt.expert_dir} has "
                             f"{max(store.epochs.values(), default=0)}")
        run.cache["mtt_experts"] = (store, experts)
    return run.cache["mtt_experts"]
