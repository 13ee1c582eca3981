"""Objective `bptt`: unrolled inner training and the hypergradient by the reverse pass.

A freshly initialised network takes T inner SGD-with-momentum steps on synthetic minibatches; the
loss is its cross-entropy on a class-balanced real batch; the gradient flows back through the whole
unroll (momentum included) by `distill.hypergradient.reverse_hypergradient`, so memory does not grow with T.

With `bptt_window` W (random truncated BPTT, Feng et al., ICLR 2024), every network unrolls a length
drawn uniformly from [W, T] and only its last W steps are differentiated. The graphs of the last
steps are kept from the forward run instead of recomputed, as many as `graph_memory_mb` holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from compressdata.distiller.config import DistillConfig
from compressdata.distiller.hypergradient import InnerLossFn, cross_entropy, reverse_hypergradient, step_graph_bytes
from compressdata.distiller.objectives.base import ObjectiveResult, draw_seeds
from compressdata.distiller.options import register_objective
from compressdata.distiller.run import DistillRun, autocast, fresh_network, shared_augment
from compressdata.distiller.synthetic import Augment

register_objective("bptt")


@dataclass
class NetworkDraw:
    """Everything one network of an iteration draws from its generator: the fresh network, the
    shared augmentation, the (augmented) real batch, the unroll length and one seed per inner step."""

    module: nn.Module
    params: dict[str, torch.Tensor]
    augment: Augment | None
    x_real: torch.Tensor
    y_real: torch.Tensor
    step_seeds: list[int]

    @property
    def steps(self) -> int:
        return len(self.step_seeds)


def draw_network(run: DistillRun, generator: torch.Generator) -> NetworkDraw:
    """The random draws of one bptt network, in the order the objective has always made them (the
    truncated unroll's length is drawn last, so full-BPTT runs keep their random streams)."""
    config = run.config
    seeds = draw_seeds(generator, config.inner.unroll_steps + 3)
    net_seed, real_seed, augment_seed, step_seeds = seeds[0], seeds[1], seeds[2], seeds[3:]
    module, params = fresh_network(config, run.data.image_shape, run.data.num_classes,
                                   net_seed, run.device)
    augment = shared_augment(config, augment_seed)
    x_real, y_real = run.real.batch(config.outer.real_batch_per_class,
                                    torch.Generator().manual_seed(real_seed))
    if augment is not None:
        with torch.no_grad():
            x_real = augment(x_real, torch.Generator())
    return NetworkDraw(module, params, augment, x_real, y_real, step_seeds[:unroll_length(config, generator)])


def unroll_length(config: DistillConfig, generator: torch.Generator) -> int:
    """T, or with a truncation window W a length drawn uniformly from [W, T]."""
    window = config.inner.bptt_window
    if window is None:
        return config.inner.unroll_steps
    return window + int(torch.randint(config.inner.unroll_steps - window + 1, (1,), generator=generator))


def kept_graphs(run: DistillRun, key: str, module: nn.Module, params: dict[str, torch.Tensor],
                sample: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                inner_loss_fn: InnerLossFn = cross_entropy) -> int:
    """How many inner steps' graphs fit in config.inner.graph_memory_mb: one step's graph, on the batch
    `sample()` returns, is measured once per run (`key` names the objective's batch layout)."""
    budget = run.config.inner.graph_memory_mb * 2**20
    if budget <= 0:
        return 0
    key = f"step_graph_bytes/{key}"
    if key not in run.cache:
        with torch.no_grad():
            x, y = sample()
        amp = torch.bfloat16 if run.config.run.amp else None
        run.cache[key] = step_graph_bytes(module, params, x, y, inner_loss_fn, amp)
    return int(budget // max(run.cache[key], 1))


def bptt_objective(run: DistillRun, theta: dict[str, torch.Tensor],
                   generator: torch.Generator) -> ObjectiveResult:
    """Outer loss after the unrolled inner steps and its hypergradient for every tensor of theta."""
    config = run.config
    draw = draw_network(run, generator)

    def outer_loss(w: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast(config, run.device):
            logits = functional_call(draw.module, w, (draw.x_real,))
        return F.cross_entropy(logits.float(), draw.y_real)

    def batch_fn(theta_, step, gen):
        return run.synthetic.minibatch(theta_, config.inner.batch_per_class, gen, draw.augment)

    def first_batch():
        return batch_fn(theta, 0, torch.Generator().manual_seed(draw.step_seeds[0]))

    result = reverse_hypergradient(
        draw.module, draw.params, theta, batch_fn, outer_loss, steps=draw.steps,
        seeds=draw.step_seeds, lr=config.inner.lr, momentum=config.inner.momentum,
        amp=torch.bfloat16 if config.run.amp else None, window=config.inner.bptt_window,
        kept_graphs=kept_graphs(run, "bptt", draw.module, draw.params, first_batch))
    metrics = {"inner_loss": float(result.inner_loss)}
    if config.inner.bptt_window is not None:
        metrics["unroll_steps"] = draw.steps
    return ObjectiveResult(float(result.loss), result.grads, metrics)
