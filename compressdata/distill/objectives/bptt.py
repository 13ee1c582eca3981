"""Objective `bptt`: unrolled inner training and the hypergradient by the reverse pass.

A freshly initialised network takes T inner SGD-with-momentum steps on synthetic minibatches; the
loss is its cross-entropy on a class-balanced real batch; the gradient flows back through the whole
unroll (momentum included) by `bptt.reverse_hypergradient`, so memory does not grow with T.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from compressdata.distill.bptt import reverse_hypergradient
from compressdata.distill.methods import Augment
from compressdata.distill.objectives.base import ObjectiveResult, draw_seeds
from compressdata.distill.run import DistillRun, autocast, fresh_network, shared_augment


@dataclass
class NetworkDraw:
    """Everything one network of an iteration draws from its generator: the fresh network, the
    shared augmentation, the (augmented) real batch and one seed per inner step."""

    module: nn.Module
    params: dict[str, torch.Tensor]
    augment: Augment | None
    x_real: torch.Tensor
    y_real: torch.Tensor
    step_seeds: list[int]


def draw_network(run: DistillRun, generator: torch.Generator) -> NetworkDraw:
    """The random draws of one bptt network, in the order the objective has always made them."""
    config = run.config
    seeds = draw_seeds(generator, config.unroll_steps + 3)
    net_seed, real_seed, augment_seed, step_seeds = seeds[0], seeds[1], seeds[2], seeds[3:]
    module, params = fresh_network(config, run.data.image_shape, run.data.num_classes,
                                   net_seed, run.device)
    augment = shared_augment(config, augment_seed)
    x_real, y_real = run.real.batch(config.real_batch_per_class,
                                    torch.Generator().manual_seed(real_seed))
    if augment is not None:
        with torch.no_grad():
            x_real = augment(x_real, torch.Generator())
    return NetworkDraw(module, params, augment, x_real, y_real, step_seeds)


def bptt_objective(run: DistillRun, theta: dict[str, torch.Tensor],
                   generator: torch.Generator) -> ObjectiveResult:
    """Outer loss after T unrolled inner steps and its hypergradient for every tensor of theta."""
    config = run.config
    draw = draw_network(run, generator)

    def outer_loss(w: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast(config, run.device):
            logits = functional_call(draw.module, w, (draw.x_real,))
        return F.cross_entropy(logits.float(), draw.y_real)

    def batch_fn(theta_, step, gen):
        return run.synthetic.minibatch(theta_, config.inner_batch_per_class, gen, draw.augment)

    result = reverse_hypergradient(
        draw.module, draw.params, theta, batch_fn, outer_loss, steps=config.unroll_steps,
        seeds=draw.step_seeds, lr=config.inner_lr, momentum=config.inner_momentum,
        amp=torch.bfloat16 if config.amp else None)
    return ObjectiveResult(float(result.loss), result.grads,
                           {"inner_loss": float(result.inner_loss)})
