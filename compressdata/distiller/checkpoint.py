"""Checkpoints of a distillation run (no pickle) and its JSONL metrics log.

A checkpoint directory holds `checkpoint.safetensors`: the learnable tensors (`theta.<name>`), the
outer optimiser's momentum buffers (`momentum.<name>`; Adam: its first moments), Adam's second
moments (`second_moment.<name>`, only for the adam outer optimiser) and the run's random-generator
state (`rng.master`, uint8), plus one `__metadata__` key whose value is canonical JSON with the format
name, version, iteration count and the run's configuration: the library's one container
(`compressdata.container`), so writes are atomic (a crash or Ctrl-C during a save leaves the previous
checkpoint intact) and reads check the file header first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compressdata.container import FileKind, read_file, read_header, write_file
from compressdata.errors import CheckpointError, MissingFileError
from compressdata.files import atomic_write

CHECKPOINT_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.jsonl"
FORMAT = "compressdata.distill-checkpoint"
VERSION = 1
CHECKPOINT = FileKind(what="checkpoint", key="compressdata.checkpoint", format=FORMAT, version=VERSION,
                      error=CheckpointError)


@dataclass(frozen=True)
class DistillState:
    """Everything a run needs to continue exactly: after `iteration` completed outer iterations,
    the learnable tensors, the outer momentum buffers (Adam: first moments), the generator state for
    the next one and Adam's second moments (empty for sgd)."""

    iteration: int
    theta: dict[str, torch.Tensor]
    momentum: dict[str, torch.Tensor]
    rng: torch.Tensor
    second_moment: dict[str, torch.Tensor] = field(default_factory=dict)


def save_checkpoint(directory: str | os.PathLike, state: DistillState,
                    config: dict[str, Any]) -> Path:
    """Write `state` and `config` atomically to directory/checkpoint.safetensors; return the path."""
    tensors = {f"theta.{k}": v for k, v in state.theta.items()}
    tensors.update({f"momentum.{k}": v for k, v in state.momentum.items()})
    tensors.update({f"second_moment.{k}": v for k, v in state.second_moment.items()})
    tensors["rng.master"] = state.rng
    meta = {"format": FORMAT, "version": VERSION, "iteration": state.iteration, "config": config}
    path = Path(directory) / CHECKPOINT_FILE
    write_file(path, CHECKPOINT, tensors, meta)
    return path


def read_checkpoint_header(directory: str | os.PathLike) -> tuple[int, dict[str, Any]]:
    """(iteration, saved config dict) of directory/checkpoint.safetensors from its header alone (no tensor
    is read); MissingFileError when there is none, CheckpointError naming the field when it is not valid."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise MissingFileError(f"no checkpoint: {path} does not exist")
    meta = read_header(path, CHECKPOINT).meta
    iteration, config = meta.get("iteration"), meta.get("config")
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise CheckpointError(f"field 'iteration': expected an integer >= 0, got {iteration!r}", str(path))
    if not isinstance(config, dict):
        raise CheckpointError(f"field 'config': expected an object, got {type(config).__name__}", str(path))
    return iteration, config


def load_checkpoint(directory: str | os.PathLike,
                    device: torch.device | str = "cpu") -> tuple[DistillState, dict[str, Any]]:
    """Read a checkpoint directory -> (state with tensors on `device`, the saved config dict).

    FileNotFoundError when there is none; `CheckpointError` naming the file and the field when it is
    not a valid checkpoint (`check_resumed_state` then checks it against the run that resumes it).
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise MissingFileError(f"no checkpoint to resume from: {path} does not exist")
    tensors, meta = read_file(path, CHECKPOINT)
    iteration = meta.get("iteration")
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise CheckpointError(f"field 'iteration': expected an integer >= 0, got {iteration!r}", str(path))
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"field 'config': expected an object, got {type(meta.get('config')).__name__}",
                              str(path))
    groups: dict[str, dict[str, torch.Tensor]] = {"theta": {}, "momentum": {}, "second_moment": {}}
    for name, tensor in tensors.items():
        group, _, key = name.partition(".")
        if name != "rng.master" and (group not in groups or not key):
            raise CheckpointError(f"unexpected tensor {name!r} (expected theta.*, momentum.*, second_moment.* "
                                  "and rng.master)", str(path))
        if group in groups:
            groups[group][key] = tensor
    rng = tensors.get("rng.master")
    _check_rng(rng, path)
    theta, momentum, second = groups["theta"], groups["momentum"], groups["second_moment"]
    if not theta or set(theta) != set(momentum):
        raise CheckpointError(f"theta tensors {sorted(theta)} and momentum buffers "
                              f"{sorted(momentum)} must be the same non-empty set", str(path))
    if second and set(second) != set(theta):
        raise CheckpointError(f"second moments {sorted(second)} must be none (sgd) or one per theta "
                              f"tensor {sorted(theta)} (adam)", str(path))
    for key, value in theta.items():
        if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"tensor 'theta.{key}': expected finite floating-point values", str(path))
        for group in ("momentum", "second_moment"):
            buffer = groups[group].get(key)
            if buffer is not None and (buffer.shape != value.shape or buffer.dtype != value.dtype):
                raise CheckpointError(f"tensor '{group}.{key}': expected {str(value.dtype).removeprefix('torch.')}"
                                      f"{list(value.shape)} like theta.{key}, got "
                                      f"{str(buffer.dtype).removeprefix('torch.')}{list(buffer.shape)}", str(path))
    state = DistillState(iteration, {k: v.to(device) for k, v in theta.items()},
                         {k: v.to(device) for k, v in momentum.items()}, rng,
                         {k: v.to(device) for k, v in second.items()})
    return state, meta["config"]


def check_resumed_state(state: DistillState, expected: dict[str, torch.Tensor], iterations: int,
                        directory: str | os.PathLike) -> None:
    """A loaded state fits the run resuming it: the theta tensors a fresh start of that run makes
    (`expected`: names, shapes, dtypes) and at most `iterations` (the saved run's) done."""
    path = str(Path(directory) / CHECKPOINT_FILE)
    if state.iteration > iterations:
        raise CheckpointError(f"field 'iteration': {state.iteration} is more than the {iterations} iterations "
                              "of the run it was saved by", path)
    if set(state.theta) != set(expected):
        raise CheckpointError(f"theta tensors {sorted(state.theta)} differ from this run's {sorted(expected)}", path)
    for key, want in expected.items():
        got = state.theta[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointError(f"tensor 'theta.{key}': this run needs {str(want.dtype).removeprefix('torch.')}"
                                  f"{list(want.shape)}, the checkpoint has "
                                  f"{str(got.dtype).removeprefix('torch.')}{list(got.shape)}", path)


def _check_rng(rng: torch.Tensor | None, path: Path) -> None:
    reference = torch.Generator().get_state()
    if rng is None or rng.dtype != torch.uint8 or rng.shape != reference.shape:
        got = "missing" if rng is None else f"{str(rng.dtype).removeprefix('torch.')}{list(rng.shape)}"
        raise CheckpointError(f"tensor 'rng.master': expected the uint8{list(reference.shape)} state of a CPU "
                              f"generator, got {got}", str(path))
    try:
        torch.Generator().set_state(rng)
    except RuntimeError as e:
        raise CheckpointError(f"tensor 'rng.master': not a valid generator state ({e})", str(path)) from None


class MetricsLog:
    """Append-only JSONL log of per-iteration metrics (one JSON object per line)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def clear(self) -> None:
        """Remove the log (a fresh run starts its metrics fresh)."""
        self.path.unlink(missing_ok=True)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record in the log (a torn last line is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def truncate_after(self, iteration: int) -> None:
        """Drop records of iterations after `iteration` (work a resumed run will redo)."""
        if not self.path.is_file():
            return
        kept = [r for r in self.records() if r.get("iteration", 0) <= iteration]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
