"""Objective `bptt`: unrolled inner training and the hypergradient by the reverse pass.

A freshly initialised network takes T inner SGD-with-momentum steps on synthetic minibatches; the
loss is its cross-entropy on a class-balanced real batch; the gradient flows back through the whole
unroll (momentum included) by `bptt.reverse_hypergradient`, so memory does not grow with T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from compressdata.distill.bptt import reverse_hypergradient
from compressdata.distill.objectives.base import ObjectiveResult, draw_seeds
from compressdata.distill.run import DistillRun, autocast, fresh_network, shared_augment


def bptt_objective(run: DistillRun, theta: dict[str, torch.Tensor],
                   generator: torch.Generator) -> ObjectiveResult:
    """Outer loss after T unrolled inner steps and its hypergradient for every tensor of theta."""
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

    def outer_loss(w: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast(config, run.device):
            logits = functional_call(module, w, (x_real,))
        return F.cross_entropy(logits.float(), y_real)

    def batch_fn(theta_, step, gen):
        return run.synthetic.minibatch(theta_, config.inner_batch_per_class, gen, augment)

    result = reverse_hypergradient(
        module, params, theta, batch_fn, outer_loss, steps=config.unroll_steps,
        seeds=step_seeds, lr=config.inner_lr, momentum=config.inner_momentum,
        amp=torch.bfloat16 if config.amp else None)
    return ObjectiveResult(float(result.loss), result.grads,
                           {"inner_loss": float(result.inner_loss)})
