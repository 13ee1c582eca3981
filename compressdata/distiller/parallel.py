"""G fresh networks per outer iteration, split over the ranks of a distributed run.

Semantics (they make a run's result independent of the world size): iteration i draws G seeds from
the run's generator (the same draw on every rank); network g runs the config's objective with a
generator seeded by seed g; rank r computes networks `World.share(G)` (a Python loop, or one
vectorised call for bptt with network_batching "vmap"), the per-network losses, gradients and
metrics are summed over all ranks and divided by G. With G = 1 in one process the objective gets
the run's generator itself, so results are bit-identical to runs made before this option existed.
"""

from __future__ import annotations

import torch

from compressdata.distiller.objectives import ObjectiveResult, draw_seeds, objective_for
from compressdata.distiller.run import DistillRun
from compressdata.errors import UsageError
from compressdata.runtime.distributed import all_reduce_sum, current_world


def iteration_objective(run: DistillRun, theta: dict[str, torch.Tensor],
                        generator: torch.Generator) -> ObjectiveResult:
    """The iteration's loss, gradients and metrics: the mean over the config's G networks."""
    config = run.config
    world = current_world()
    n = config.scale.networks_per_iteration
    objective = objective_for(config)
    if n == 1 and world.size == 1:
        return objective(run, theta, generator)
    if world.size > n:
        raise UsageError(f"networks_per_iteration ({n}) must be at least the number of processes "
                         f"({world.size}): every rank trains at least one network per iteration")
    seeds = draw_seeds(generator, n)
    mine = [torch.Generator().manual_seed(seeds[g]) for g in world.share(n)]
    local = local_sum(run, theta, mine)
    return _mean_over_ranks(local, n)


def local_sum(run: DistillRun, theta: dict[str, torch.Tensor],
              generators: list[torch.Generator]) -> ObjectiveResult:
    """The SUM of the objective over one network per generator, on this process."""
    config = run.config
    if config.scale.network_batching == "vmap":
        from compressdata.distiller.objectives.bptt_batched import bptt_batched_sum

        return bptt_batched_sum(run, theta, generators)
    objective = objective_for(config)
    total: ObjectiveResult | None = None
    for g in generators:
        r = objective(run, theta, g)
        if total is None:
            total = ObjectiveResult(r.loss, dict(r.grads), _numeric(r.metrics))
            continue
        total.loss += r.loss
        total.grads = {k: total.grads[k] + r.grads[k] for k in total.grads}
        numeric = _numeric(r.metrics)
        total.metrics = {k: total.metrics[k] + numeric[k] for k in total.metrics}
    if total is None:
        raise UsageError("local_sum needs at least one generator (one per network)")
    return total


def _numeric(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items())
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _mean_over_ranks(local: ObjectiveResult, n: int) -> ObjectiveResult:
    names = sorted(local.grads)
    grads = [local.grads[k] for k in names]
    reference = grads[0]
    scalars = torch.tensor([local.loss, *local.metrics.values()], dtype=reference.dtype,
                           device=reference.device)
    summed = all_reduce_sum([scalars, *grads])
    values = (summed[0] / n).tolist()
    metrics = dict(zip(local.metrics, values[1:], strict=True))
    metrics["networks"] = n
    return ObjectiveResult(values[0], {k: g / n for k, g in zip(names, summed[1:], strict=True)},
                           metrics)
