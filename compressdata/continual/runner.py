"""The continual-learning runner: a task stream, four methods at equal storage, accuracy and forgetting.

After every task each method trains networks and tests them on the test data of every task seen
so far (a single head over all classes):

- `rtp`: the task is distilled into new addresses (+ a few new bases) of one growing memory bank
  (`continual.distill.distill_task`; with `replay_old_memories`, together with the earlier
  memories, `continual.replay`); fresh networks are trained on all memories so far.
- `replay`: random real exemplars of every task class, `floor(budget_ipc)` per class per task,
  kept in a growing pixels bank; fresh networks are trained on all exemplars so far.
- `finetune` (lower bound): the same networks keep training on each new task's real data only.
- `joint` (upper bound): fresh networks on all real training data of the tasks so far.

Storage is counted in floats (labels excluded) as the bank format does; each task gives the bank
methods a budget of `budget_ipc` images per task class, and rtp never exceeds the cumulative budget.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from compressdata.bank.memory_bank import MemoryBank
from compressdata.bank.metadata import TrainingRecipe
from compressdata.continual.distill import FIRST_TASK_DOWNSAMPLE, distill_task
from compressdata.continual.protocols import PROTOCOLS, Task, make_tasks
from compressdata.data.sources import RealData
from compressdata.distiller.config import DistillConfig
from compressdata.errors import ConfigError
from compressdata.evaluate import test_accuracy, train_network
from compressdata.files import atomic_write
from compressdata.models import build_model

logger = logging.getLogger(__name__)

METHODS = ("rtp", "replay", "finetune", "joint")


@dataclass(frozen=True)
class ContinualConfig:
    """One run of the runner. Budget: `budget_ipc` images-per-class equivalents per task class."""

    protocol: str = "split-fashion-mnist"
    methods: tuple[str, ...] = METHODS
    budget_ipc: float = 2.0
    n_bases: int = 8
    new_bases: int = 2
    downsample: int = FIRST_TASK_DOWNSAMPLE
    iterations: int = 40
    unroll_steps: int = 10
    inner_batch: int = 10
    real_batch: int = 16
    outer_lr: float = 30.0
    finetune_bases: bool = False
    replay_old_memories: bool = True
    width: int = 16
    epochs: int = 100
    real_epochs: int = 10
    networks: int = 1
    train_per_class: int | None = 300
    test_per_class: int | None = 200
    angles: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0)
    seed: int = 0
    device: str | None = None

    def validate(self) -> ContinualConfig:
        """Raise ValueError naming the first bad option; return self."""
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"methods must be a non-empty subset of {', '.join(METHODS)}, got {list(self.methods)}")
        if not (math.isfinite(self.budget_ipc) and self.budget_ipc >= 1):
            raise ConfigError(f"budget_ipc must be >= 1 (replay stores floor(budget_ipc) images per class), "
                             f"got {self.budget_ipc}")
        for name in ("n_bases", "downsample", "iterations", "unroll_steps", "inner_batch", "real_batch", "width",
                     "epochs", "real_epochs", "networks"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if self.replay_old_memories and self.finetune_bases:
            raise ConfigError("replay_old_memories replays frozen memories; it cannot be combined with finetune_bases "
                             "(set replay_old_memories=False, CLI --no-replay-old)")
        if not isinstance(self.new_bases, int) or self.new_bases < 0:
            raise ConfigError(f"new_bases must be an int >= 0, got {self.new_bases!r}")
        return self

    def distill_config(self) -> DistillConfig:
        """The BPTT settings every task is distilled with."""
        return DistillConfig.from_flat(method="rtp", downsample=self.downsample, iterations=self.iterations,
                             unroll_steps=self.unroll_steps, inner_batch_per_class=self.inner_batch,
                             real_batch_per_class=self.real_batch, outer_lr=self.outer_lr, width=self.width,
                             seed=self.seed, device=self.device).validate()


@dataclass
class MethodResult:
    """Per method: accuracies[t][j] = accuracy on task j's test data after task t (j <= t), and the
    floats it stores after each task."""

    method: str
    accuracies: list[list[float]] = field(default_factory=list)
    storage: list[int] = field(default_factory=list)

    def average(self) -> list[float]:
        """Average accuracy over the tasks seen, after each task."""
        return [sum(row) / len(row) for row in self.accuracies]

    def forgetting(self) -> list[float | None]:
        """After each task t >= 1: mean over earlier tasks j of (best accuracy on j before t) minus
        (accuracy on j after t); None after the first task."""
        out: list[float | None] = [None]
        for t in range(1, len(self.accuracies)):
            drops = [max(self.accuracies[s][j] for s in range(j, t)) - self.accuracies[t][j] for j in range(t)]
            out.append(sum(drops) / len(drops))
        return out


def rtp_rows_per_class(cfg: ContinualConfig, bank: MemoryBank | None, task_classes: int, budget_floats: int,
                       chw: tuple[int, int, int]) -> tuple[int, int]:
    """(new bases, address rows per class) for the next task so that the bank stays within
    `budget_floats` (the cumulative budget after this task); ValueError when not even one row fits."""
    c, h, w = chw
    new = cfg.n_bases if bank is None else cfg.new_bases
    base_floats = new * c * (h // cfg.downsample) * (w // cfg.downsample)
    used = 0 if bank is None else bank.storage["floats_stored"]
    old_rows = 0 if bank is None else len(bank)
    k_total = new + (0 if bank is None else int(bank.tensors["bases"].shape[0]))
    rows = (budget_floats - used - base_floats - old_rows * new) // (k_total * task_classes)
    if rows < 1:
        raise ConfigError(f"budget too small for rtp: {budget_floats} floats cannot hold {new} new bases "
                         f"({base_floats} floats) and one address row per class; raise budget_ipc or lower "
                         f"n_bases/new_bases")
    return new, int(rows)


def run_continual(cfg: ContinualConfig, *, tasks: list[Task] | None = None, progress: bool = True,
                  log: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Run every method of `cfg` over the task stream; returns a JSON-able result dict
    (config, task names, per-method accuracies, averages, forgetting and storage); one line per task and
    method goes to `log` (default: this module's logger)."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    tasks = tasks or make_tasks(cfg.protocol, angles=cfg.angles, train_per_class=cfg.train_per_class,
                                test_per_class=cfg.test_per_class, seed=cfg.seed)
    results = {m: MethodResult(m) for m in cfg.methods}
    state: dict[str, Any] = {"rtp": None, "replay": None, "finetune": None}
    chw = tasks[0].train.image_shape
    n_classes = tasks[0].train.num_classes
    budget = 0
    for t, task in enumerate(tqdm(tasks, desc=cfg.protocol, disable=not progress)):
        budget += int(cfg.budget_ipc * chw[0] * chw[1] * chw[2] * len(task.classes))
        seen = tasks[: t + 1]
        for method in cfg.methods:
            if method == "rtp":
                new, rows = rtp_rows_per_class(cfg, state["rtp"], len(task.classes), budget, chw)
                state["rtp"] = distill_task(cfg.distill_config(), task.train, task.classes, task.name, state["rtp"],
                                            new_bases=new, per_class=rows, finetune_bases=cfg.finetune_bases,
                                            replay_old=cfg.replay_old_memories, progress=progress)
                accs = _fresh_networks(cfg, *bank_training_set(state["rtp"], task.train), seen, n_classes)
                storage = state["rtp"].storage["floats_stored"]
            elif method == "replay":
                state["replay"] = add_exemplars(state["replay"], task, int(cfg.budget_ipc), cfg.seed + t)
                accs = _fresh_networks(cfg, *bank_training_set(state["replay"], task.train), seen, n_classes)
                storage = state["replay"].storage["floats_stored"]
            elif method == "finetune":
                state["finetune"] = _finetune(cfg, state["finetune"], task.train, n_classes)
                accs = [sum(test_accuracy(m, s.test, cfg.device) for m in state["finetune"]) / cfg.networks
                        for s in seen]
                storage = 0
            else:
                joint = _concat([s.train for s in seen])
                accs = _fresh_networks(cfg, joint.images, joint.labels, seen, n_classes, epochs=cfg.real_epochs)
                storage = len(joint) * chw[0] * chw[1] * chw[2]
            results[method].accuracies.append(accs)
            results[method].storage.append(int(storage))
            log(f"after {task.name}: {method:8s} average accuracy {100 * sum(accs) / len(accs):.2f}% "
                f"({storage} floats)")
    return {"config": _jsonable(asdict(cfg)), "tasks": [t.name for t in tasks], "budget_floats_per_task":
            [int(cfg.budget_ipc * chw[0] * chw[1] * chw[2] * len(t.classes)) for t in tasks],
            "methods": {m: {"accuracies": r.accuracies, "average": r.average(), "forgetting": r.forgetting(),
                            "storage": r.storage} for m, r in results.items()},
            "rtp_tasks": state["rtp"].tasks if state["rtp"] is not None else None}


def bank_training_set(bank: MemoryBank, data: RealData) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded examples and their labels as indices of `data.classes` (matched by class name)."""
    lookup = torch.tensor([data.classes.index(name) for name in bank.classes])
    return bank.decode(), lookup[bank.hard_labels()]


def add_exemplars(bank: MemoryBank | None, task: Task, per_class: int, seed: int) -> MemoryBank:
    """`bank` (a pixels bank) grown by `per_class` random real images of each task class."""
    data = task.train
    generator = torch.Generator().manual_seed(seed)
    index = torch.cat([idx[torch.randperm(idx.numel(), generator=generator)[:per_class]]
                       for idx in (data.class_indices(c) for c in task.classes)])
    images, labels = data.images[index], data.labels[index]
    if bank is None:
        tasks = [{"name": task.name, "classes": sorted(task.classes), "rows": [0, len(labels)]}]
        return MemoryBank(pixels=images, labels=labels, classes=data.classes, normalization=data.normalization,
                          provenance={"method": {"name": "random-exemplar-replay"}}, tasks=tasks)
    return bank.extend(task.name, labels, pixels=images)


def _recipe(epochs: int) -> TrainingRecipe:
    return TrainingRecipe(architecture="convnet", epochs=epochs)


def _network(cfg: ContinualConfig, k: int, n_classes: int, chw: tuple[int, int, int]) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + k)
        return build_model("convnet", chw[0], n_classes, chw[1:], width=cfg.width)


def _fresh_networks(cfg: ContinualConfig, images: torch.Tensor, labels: torch.Tensor, seen: list[Task],
                    n_classes: int, epochs: int | None = None) -> list[float]:
    """Mean test accuracy per seen task of cfg.networks fresh networks trained on (images, labels)."""
    totals = [0.0] * len(seen)
    for k in range(cfg.networks):
        model = _network(cfg, k, n_classes, tuple(images.shape[1:]))
        train_network(model, images, labels, _recipe(epochs or cfg.epochs), device=cfg.device, seed=cfg.seed + k)
        for j, s in enumerate(seen):
            totals[j] += test_accuracy(model, s.test, cfg.device)
    return [v / cfg.networks for v in totals]


def _finetune(cfg: ContinualConfig, models: list[torch.nn.Module] | None, data: RealData,
              n_classes: int) -> list[torch.nn.Module]:
    models = models or [_network(cfg, k, n_classes, data.image_shape) for k in range(cfg.networks)]
    for k, model in enumerate(models):
        train_network(model, data.images, data.labels, _recipe(cfg.real_epochs), device=cfg.device,
                      seed=cfg.seed + k)
    return models


def _concat(parts: list[RealData]) -> RealData:
    first = parts[0]
    return RealData(torch.cat([p.float_pixels for p in parts]), torch.cat([p.labels for p in parts]),
                    list(first.classes), first.name, "joint", first.normalization)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def markdown_table(result: dict[str, Any]) -> str:
    """Average accuracy (%) after each task, final forgetting (points) and storage (floats) per method."""
    tasks = result["tasks"]
    head = ["method"] + [f"after {i + 1}" for i in range(len(tasks))] + ["forgetting", "floats (final)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, r in result["methods"].items():
        final = r["forgetting"][-1]
        cells = [method] + [f"{100 * a:.2f}" for a in r["average"]]
        cells += ["-" if final is None else f"{100 * final:.2f}", f"{r['storage'][-1]:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    storage = ["", "Storage after each task (floats, labels excluded; budget per task: "
               + ", ".join(f"{b:,}" for b in result["budget_floats_per_task"]) + "):", "",
               "| method | " + " | ".join(f"after {i + 1}" for i in range(len(tasks))) + " |",
               "|" + "---|" * (len(tasks) + 1)]
    storage += [f"| {m} | " + " | ".join(f"{s:,}" for s in r["storage"]) + " |" for m, r in result["methods"].items()]
    return "\n".join(lines + storage) + "\n"


def save_plot(result: dict[str, Any], path: str | os.PathLike) -> None:
    """PNG: average accuracy over the tasks seen vs the number of tasks, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    x = list(range(1, len(result["tasks"]) + 1))
    for method, r in result["methods"].items():
        ax.plot(x, [100 * a for a in r["average"]], marker="o", label=f"{method} ({r['storage'][-1]:,} floats)")
    ax.set_xlabel("tasks seen")
    ax.set_ylabel("average accuracy on tasks seen (%)")
    ax.set_xticks(x)
    ax.set_title(result["config"]["protocol"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def write_outputs(result: dict[str, Any], out: str | os.PathLike) -> dict[str, Path]:
    """results.json, table.md and accuracy.png under folder `out` (each written atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "table": out / "table.md", "plot": out / "accuracy.png"}
    atomic_write(paths["json"], lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1) + "\n"))
    atomic_write(paths["table"], lambda tmp: Path(tmp).write_text(markdown_table(result)))
    save_plot(result, paths["plot"])
    return paths
