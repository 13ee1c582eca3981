"""Continual-learning task streams on a real labelled source.

- `split`: class-incremental; the classes are cut into consecutive groups (Split-Fashion-MNIST: 5
  tasks of 2 classes), each task sees only its classes.
- `rotated`: domain-incremental; every task has all classes, its images rotated by the task's angle.

Every task's `train` and `test` keep the source's full class list and labels (a single head over
all classes), and may be capped to a number of examples per class for small CPU runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2.functional import rotate

from compressdata.data.sources import RealData, load_source
from compressdata.errors import SourceError

PROTOCOLS = ("split-fashion-mnist", "rotated-fashion-mnist")


@dataclass
class Task:
    """One task of a stream: its name, the classes it covers, its training and test data."""

    name: str
    classes: list[int]
    train: RealData
    test: RealData


def capped(data: RealData, classes: list[int], per_class: int | None, generator: torch.Generator) -> RealData:
    """The examples of `classes` (at most `per_class` random ones each), grouped by class."""
    picks = []
    for c in classes:
        idx = data.class_indices(c)
        if per_class is not None:
            idx = idx[torch.randperm(idx.numel(), generator=generator)[:per_class]]
        picks.append(idx)
    return data.subset(torch.cat(picks))


def rotated(data: RealData, degrees: float) -> RealData:
    """The same examples with every image rotated by `degrees` (bilinear, zero fill)."""
    pixels = data.float_pixels
    if degrees:
        pixels = rotate(pixels, degrees, interpolation=InterpolationMode.BILINEAR).clamp(0, 1)
    return RealData(pixels, data.labels, list(data.classes), data.name, f"{data.split}-rot{degrees:g}",
                    data.normalization)


def make_tasks(protocol: str, *, classes_per_task: int = 2, angles: tuple[float, ...] = (0, 45, 90, 135),
               train_per_class: int | None = None, test_per_class: int | None = None, seed: int = 0,
               source: str = "fashion-mnist") -> list[Task]:
    """The task stream of `protocol` (see `PROTOCOLS`), data capped per class when asked."""
    if protocol not in PROTOCOLS:
        raise SourceError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    train, test = load_source(source, "train"), load_source(source, "test")
    generator = torch.Generator().manual_seed(seed)
    n = train.num_classes
    if protocol == "split-fashion-mnist":
        if not 1 <= classes_per_task <= n:
            raise SourceError(f"classes_per_task must be in 1..{n}, got {classes_per_task}")
        groups = [list(range(i, min(i + classes_per_task, n))) for i in range(0, n, classes_per_task)]
        return [Task(f"classes-{'-'.join(map(str, g))}", g, capped(train, g, train_per_class, generator),
                     capped(test, g, test_per_class, generator)) for g in groups]
    if not angles:
        raise SourceError("the rotated protocol needs at least one angle")
    everything = list(range(n))
    tasks = []
    for angle in angles:
        tasks.append(Task(f"rot-{angle:g}", everything,
                          rotated(capped(train, everything, train_per_class, generator), angle),
                          rotated(capped(test, everything, test_per_class, generator), angle)))
    return tasks
