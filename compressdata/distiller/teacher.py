"""The batch-norm teacher of DWA: train one on real data, save it to and load it from safetensors.

A teacher file (the library's one container, `compressdata.container`) holds the network's state
(parameters and batch-norm running statistics) and one `__metadata__` key with canonical JSON: format,
version, architecture, width, classes, image shape, the normalisation of its input space (mean, std,
ZCA regularisation) and its training settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressdata.bank.metadata import Normalization, TrainingRecipe
from compressdata.container import FileKind, read_file, write_file
from compressdata.data.sources import RealData
from compressdata.errors import CheckpointError, MissingFileError, UsageError
from compressdata.evaluate import train_network
from compressdata.models import build_model

FORMAT = "compressdata.teacher"
VERSION = 1
TEACHER = FileKind(what="teacher", key="compressdata.teacher", format=FORMAT, version=VERSION, error=CheckpointError)
TEACHER_ARCHS = ("convnet", "resnet18_bn")


@dataclass
class Teacher:
    """A frozen network in eval mode (batch norm uses its running statistics) and its description."""

    module: nn.Module
    meta: dict[str, Any]

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.module.named_parameters()}

    @property
    def buffers(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.module.named_buffers()}


def _build(arch: str, width: int, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, h, w = image_shape
    if arch == "convnet":
        return build_model("convnet", c, num_classes, (h, w), width=width, norm="batchnorm")
    if arch == "resnet18_bn":
        return build_model("resnet18_bn", c, num_classes, (h, w))
    raise UsageError(f"unknown teacher architecture {arch!r}; expected convnet (with batch norm) or resnet18_bn")


def _norm_dict(n: Normalization) -> dict[str, Any]:
    return {"mean": [round(v, 7) for v in n.mean], "std": [round(v, 7) for v in n.std],
            "zca": n.zca_regularization}


def train_teacher(data: RealData, arch: str = "convnet", width: int = 128, epochs: int = 20,
                  seed: int = 0, device: torch.device | str = "cpu", progress: bool = False,
                  lr: float = 0.05) -> Teacher:
    """Train a batch-norm network on `data` (SGD at `lr` with momentum 0.9, weight decay 5e-4,
    batch 256, cosine schedule), seeded; returned in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = _build(arch, width, data.image_shape, data.num_classes)
    recipe = TrainingRecipe(architecture=arch, lr=lr, epochs=epochs, lr_schedule="cosine")
    module = train_network(module, data.images, data.labels, recipe, device=device, seed=seed,
                           progress=progress)
    meta = {"format": FORMAT, "version": VERSION, "arch": arch, "width": width,
            "num_classes": data.num_classes, "image_shape": list(data.image_shape),
            "normalization": _norm_dict(data.normalization),
            "training": {"source": data.name, "split": data.split, "examples": len(data),
                         "epochs": epochs, "lr": lr, "seed": seed}}
    return Teacher(module.eval(), meta)


def save_teacher(teacher: Teacher, path: str | os.PathLike) -> Path:
    """Write `teacher` atomically to `path` (safetensors)."""
    path = Path(path)
    write_file(path, TEACHER, teacher.module.state_dict(), teacher.meta)
    return path


def load_teacher(path: str | os.PathLike, data: RealData, device: torch.device | str = "cpu") -> Teacher:
    """Read a teacher file and check it fits `data` (classes, image shape, normalisation) and that its
    tensors are exactly the network its metadata describes (CheckpointError naming the field)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"teacher file {path} does not exist (pass 'train' to train one)")
    state, meta = read_file(path, TEACHER)
    expected = {"num_classes": data.num_classes, "image_shape": list(data.image_shape),
                "normalization": _norm_dict(data.normalization)}
    for key, value in expected.items():
        if meta.get(key) != value:
            raise CheckpointError(f"field {key!r}: the teacher does not fit the data: expected {value!r}, "
                                  f"got {meta.get(key)!r:.200}", str(path))
    arch, width = meta.get("arch"), meta.get("width")
    if arch not in TEACHER_ARCHS or not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise CheckpointError(f"fields 'arch', 'width': expected one of {list(TEACHER_ARCHS)} and an integer "
                              f">= 1, got {arch!r:.80} and {width!r:.80}", str(path))
    try:
        with torch.device("meta"):  # the shapes the described network has, without allocating it
            described = _build(arch, width, data.image_shape, data.num_classes).state_dict()
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"fields 'arch', 'width': no {arch} of width {width} for this data ({e})",
                              str(path)) from None
    if set(state) != set(described):
        missing, extra = sorted(set(described) - set(state)), sorted(set(state) - set(described))
        raise CheckpointError(f"tensors do not match a {arch} of width {width}: missing {missing[:5]}, "
                              f"unexpected {extra[:5]}", str(path))
    for name, want in described.items():
        got = state[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointError(f"tensor {name!r}: expected {str(want.dtype).removeprefix('torch.')}"
                                  f"{list(want.shape)}, got {str(got.dtype).removeprefix('torch.')}"
                                  f"{list(got.shape)}", str(path))
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"tensor {name!r}: contains NaN or Inf", str(path))
    module = _build(arch, width, data.image_shape, data.num_classes)
    module.load_state_dict(state)
    return Teacher(module.to(device).eval(), meta)
