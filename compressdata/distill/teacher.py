"""The batch-norm teacher of DWA: train one on real data, save it to and load it from safetensors.

A teacher file holds the network's state (parameters and batch-norm running statistics) and one
`__metadata__` key with canonical JSON: format, architecture, width, classes, image shape, the
normalisation of its input space (mean, std, ZCA regularisation) and its training settings.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from compressdata.bank.format import canonical_json
from compressdata.bank.metadata import Normalization, TrainingRecipe
from compressdata.data.sources import RealData
from compressdata.evaluate import train_network
from compressdata.files import atomic_write
from compressdata.models import build_model

FORMAT = "compressdata.teacher"
VERSION = 1
_KEY = "compressdata.teacher"


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
    raise ValueError(f"unknown teacher architecture {arch!r}; expected convnet (with batch norm) or resnet18_bn")


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
    state = {k: v.detach().cpu().contiguous().clone() for k, v in teacher.module.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={_KEY: canonical_json(teacher.meta)}))
    return path


def load_teacher(path: str | os.PathLike, data: RealData, device: torch.device | str = "cpu") -> Teacher:
    """Read a teacher file and check it fits `data` (classes, image shape, normalisation)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher file {path} does not exist (pass 'train' to train one)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[_KEY])
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (KeyError, json.JSONDecodeError, SafetensorError) as exc:
        raise ValueError(f"{path} is not a compressdata teacher file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a teacher file (format {meta.get('format')!r})")
    expected = {"num_classes": data.num_classes, "image_shape": list(data.image_shape),
                "normalization": _norm_dict(data.normalization)}
    for key, value in expected.items():
        if meta.get(key) != value:
            raise ValueError(f"teacher {path} does not fit the data: {key} expected {value!r}, "
                             f"got {meta.get(key)!r}")
    module = _build(meta["arch"], int(meta["width"]), data.image_shape, data.num_classes)
    module.load_state_dict(state)
    return Teacher(module.to(device).eval(), meta)
