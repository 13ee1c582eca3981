"""Checkpoints of a distillation run (no pickle) and its JSONL metrics log.

A checkpoint directory holds `checkpoint.safetensors`: the learnable tensors (`theta.<name>`), the
outer optimiser's momentum buffers (`momentum.<name>`; Adam: its first moments), Adam's second
moments (`second_moment.<name>`, only for the adam outer optimiser) and the run's random-generator
state (`rng.master`, uint8), plus one `__metadata__` key whose value is canonical JSON with the format
name, version, iteration count and the run's configuration. Writes are atomic (temp + rename), so a
crash or Ctrl-C during a save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from compressdata.bank.format import canonical_json
from compressdata.files import atomic_write

CHECKPOINT_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.jsonl"
FORMAT = "compressdata.distill-checkpoint"
VERSION = 1
_KEY = "compressdata.checkpoint"


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
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {"format": FORMAT, "version": VERSION, "iteration": state.iteration, "config": config}
    path = Path(directory) / CHECKPOINT_FILE
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={_KEY: canonical_json(meta)}))
    return path


def load_checkpoint(directory: str | os.PathLike,
                    device: torch.device | str = "cpu") -> tuple[DistillState, dict[str, Any]]:
    """Read a checkpoint directory -> (state with tensors on `device`, the saved config dict).

    FileNotFoundError when there is none; ValueError naming the problem when it is not valid.
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get(_KEY)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    if raw is None:
        raise ValueError(f"{path}: no '{_KEY}' metadata; not a compressdata distill checkpoint")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{path}: expected format {FORMAT!r} version {VERSION}, got "
                         f"{meta.get('format')!r} version {meta.get('version')!r}")
    if "rng.master" not in tensors or tensors["rng.master"].dtype != torch.uint8:
        raise ValueError(f"{path}: missing the uint8 tensor 'rng.master'")
    theta = {k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("theta.")}
    momentum = {k[9:]: v.to(device) for k, v in tensors.items() if k.startswith("momentum.")}
    second = {k[14:]: v.to(device) for k, v in tensors.items() if k.startswith("second_moment.")}
    if not theta or set(theta) != set(momentum):
        raise ValueError(f"{path}: theta tensors {sorted(theta)} and momentum buffers "
                         f"{sorted(momentum)} must be the same non-empty set")
    if second and set(second) != set(theta):
        raise ValueError(f"{path}: second moments {sorted(second)} must be none (sgd) or one per theta "
                         f"tensor {sorted(theta)} (adam)")
    state = DistillState(int(meta["iteration"]), theta, momentum, tensors["rng.master"], second)
    return state, meta["config"]


class MetricsLog:
    """Append-only JSONL log of per-iteration metrics (one JSON object per line)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

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
