"""The bptt objective for several fresh networks at once, vectorised with `torch.func.vmap`.

The G networks share one architecture; their parameters are stacked ([G, ...] per tensor) and one
call runs all of them on stacked inputs [G, B, ...]. The inner loss is the SUM of the networks'
losses, so its gradient for network g's weights is network g's own gradient and the SGD-with-
momentum unroll of the stack is G independent unrolls; the reverse pass of `distill.hypergradient` runs unchanged
on the stack. Every network makes exactly the draws `objectives.bptt.draw_network` makes, so the result equals
the sum of G separate `bptt_objective` calls within floating-point tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from compressdata.distiller.hypergradient import cross_entropy, reverse_hypergradient
from compressdata.distiller.objectives.base import ObjectiveResult
from compressdata.distiller.objectives.bptt import NetworkDraw, draw_network, kept_graphs
from compressdata.distiller.run import DistillRun, autocast
from compressdata.errors import UsageError


class StackedNetworks(nn.Module):
    """G networks of `base`'s architecture as one module: parameter `p{i}` is the stack [G, ...] of
    base's i-th parameter; forward(x [G, B, ...]) -> logits [G, B, classes]."""

    def __init__(self, base: nn.Module, stacked: dict[str, torch.Tensor]):
        super().__init__()
        if any(True for _ in base.buffers()):
            raise UsageError("vectorised networks need an architecture without buffers (running "
                             "statistics); use norm 'instancenorm' or 'none', or network_batching "
                             "'loop'")
        self._base = [base]  # a plain list: not a registered submodule
        self.names = list(stacked)
        for i, name in enumerate(self.names):
            self.register_parameter(f"p{i}", nn.Parameter(stacked[name], requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = {name: getattr(self, f"p{i}") for i, name in enumerate(self.names)}
        base = self._base[0]
        return vmap(lambda p, xb: functional_call(base, p, (xb,)))(params, x)


def _stack_params(draws: Sequence[NetworkDraw]) -> dict[str, torch.Tensor]:
    names = list(draws[0].params)
    return {f"p{i}": torch.stack([d.params[name] for d in draws]) for i, name in enumerate(names)}


def _summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return sum(cross_entropy(logits[g], targets[g]) for g in range(logits.shape[0]))


def bptt_batched_sum(run: DistillRun, theta: dict[str, torch.Tensor],
                     generators: Sequence[torch.Generator]) -> ObjectiveResult:
    """bptt for one network per generator, all vectorised: the SUM over networks of the loss,
    gradients and metrics (the caller averages)."""
    if not generators:
        raise UsageError("bptt_batched_sum needs at least one generator (one per network)")
    config = run.config
    draws = [draw_network(run, g) for g in generators]
    stacked = _stack_params(draws)
    module = StackedNetworks(draws[0].module, {n: stacked[f"p{i}"]
                                               for i, n in enumerate(draws[0].params)})
    x_real = torch.stack([d.x_real for d in draws])
    y_real = torch.stack([d.y_real for d in draws])

    def outer_loss(w: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast(config, run.device):
            logits = functional_call(module, w, (x_real,))
        return _summed_cross_entropy(logits.float(), y_real)

    def batch_fn(theta_, step, _generator):
        pairs = [run.synthetic.minibatch(theta_, config.inner.batch_per_class,
                                         torch.Generator().manual_seed(int(d.step_seeds[step])),
                                         d.augment) for d in draws]
        return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])

    def first_batch():
        return batch_fn(theta, 0, None)

    kept = kept_graphs(run, f"bptt_batched/{len(draws)}", module, stacked, first_batch, _summed_cross_entropy)
    result = reverse_hypergradient(
        module, stacked, theta, batch_fn, outer_loss, steps=config.inner.unroll_steps,
        seeds=list(range(config.inner.unroll_steps)), lr=config.inner.lr,
        momentum=config.inner.momentum, inner_loss_fn=_summed_cross_entropy,
        amp=torch.bfloat16 if config.run.amp else None, kept_graphs=kept)
    return ObjectiveResult(float(result.loss), result.grads,
                           {"inner_loss": float(result.inner_loss)})
