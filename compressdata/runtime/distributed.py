"""Data-parallel runs with `torch.distributed`, launched by torchrun (or anything that sets the
same environment: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).

`distributed_session` starts the process group when the environment asks for more than one process
(NCCL when the run is on CUDA, gloo on the CPU; with NCCL every process uses the GPU numbered by its
LOCAL_RANK) and ends it afterwards. `current_world` tells any code its rank; `all_reduce_sum` is the
one collective the distiller needs, and turns a failed or timed-out collective (a rank died, hung
or lost its network) into a `CollectiveError` naming the problem instead of a hang.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from compressdata.errors import CollectiveError, UsageError

DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank in [0, size), and its GPU number on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, metrics, banks and messages."""
        return self.rank == 0

    def share(self, n: int) -> range:
        """This rank's contiguous share of n items (0..n-1): sizes differ by at most one."""
        return range(self.rank * n // self.size, (self.rank + 1) * n // self.size)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"environment variable {name} must be an integer, got {raw!r}") from None


def env_world() -> World:
    """The world the launcher (torchrun) describes in the environment; one process without it."""
    world = World(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if world.size < 1 or not 0 <= world.rank < world.size:
        raise UsageError(f"RANK={world.rank} and WORLD_SIZE={world.size}: expected "
                         f"0 <= RANK < WORLD_SIZE")
    return world


def current_world() -> World:
    """This process's rank and world size in the initialised process group (else a world of one)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return World()


def backend_for(device: str | None) -> str:
    """nccl when the run goes to CUDA (asked for, or the default with a GPU present), else gloo."""
    on_cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    return "nccl" if on_cuda else "gloo"


@contextmanager
def distributed_session(device: str | None = None,
                        timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[World]:
    """Start the process group for a launcher's multi-process world, yield this rank's `World`,
    destroy the group at the end. A no-op for a single process or an already initialised group.

    timeout_s bounds every collective: a rank that waits longer on a dead peer fails with a
    `CollectiveError` instead of hanging.
    """
    world = env_world()
    if world.size == 1 or (dist.is_available() and dist.is_initialized()):
        yield current_world()
        return
    if not dist.is_available():
        raise CollectiveError("this PyTorch build has no torch.distributed; run one process")
    if not timeout_s > 0:
        raise UsageError(f"collective timeout must be > 0 seconds, got {timeout_s!r}")
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield current_world()
        # every rank reaches teardown before any destroys the group: a rank that tears down its gloo
        # pairs while a peer still holds them aborts ("terminate called without an active exception")
        try:
            dist.barrier()
        except (RuntimeError, dist.DistBackendError) as e:
            world = current_world()
            raise CollectiveError(f"rank {world.rank} of {world.size}: a peer did not reach the end of the run "
                                  f"(it failed, or hung past the collective timeout): {e}") from e
    finally:
        dist.destroy_process_group()


def all_reduce_sum(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The element-wise sums over all ranks of `tensors` (same shapes, dtype and device on every
    rank), in one collective; the inputs themselves for a world of one."""
    world = current_world()
    if world.size == 1:
        return list(tensors)
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    try:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    except (RuntimeError, dist.DistBackendError) as e:
        raise CollectiveError(
            f"rank {world.rank} of {world.size}: the all-reduce with the other ranks failed "
            f"(a rank died, hung past the collective timeout, or lost its connection): {e}") from e
    out, start = [], 0
    for t in tensors:
        out.append(flat[start:start + t.numel()].view_as(t))
        start += t.numel()
    return out


def gather_floats(values: Sequence[float]) -> list[list[float]]:
    """Every rank's list of floats (lists may differ in length), in rank order."""
    world = current_world()
    if world.size == 1:
        return [list(values)]
    gathered: list[list[float] | None] = [None] * world.size
    try:
        dist.all_gather_object(gathered, [float(v) for v in values])
    except (RuntimeError, dist.DistBackendError) as e:
        raise CollectiveError(f"rank {world.rank} of {world.size}: gathering results from the "
                              f"other ranks failed: {e}") from e
    return [list(g or []) for g in gathered]
