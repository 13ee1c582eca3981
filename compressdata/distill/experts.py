"""Expert trajectories for trajectory matching (MTT): train, store, resume, read.

An expert is a network trained on the real data with plain SGD (no momentum, no weight decay, as in
MTT); its parameters after every epoch (epoch 0 = the initialisation) form its trajectory. A
directory holds one safetensors file per expert (`expert_0000.safetensors`, tensors
`epoch_0003.features.0.weight`, ...; one `__metadata__` key with canonical JSON: format, expert
index, epochs done, the training settings) and `manifest.json` (settings, parameter names, each
expert's file and epochs done). Files are rewritten atomically after every epoch, and every epoch's
randomness comes from a generator seeded by (seed, expert, epoch), so a killed run continues with
the missing experts and epochs and ends with the same files as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from compressdata.bank.format import canonical_json
from compressdata.data.sources import RealData, load_source
from compressdata.data.zca import zca_normalization
from compressdata.files import atomic_write
from compressdata.models import build_model

FORMAT = "compressdata.expert-trajectory"
VERSION = 1
MANIFEST = "manifest.json"
_KEY = "compressdata.expert"


@dataclass(frozen=True)
class ExpertConfig:
    """Training settings of a set of experts (all experts of a directory share them)."""

    source: str = "fashion-mnist"
    experts: int = 10
    epochs: int = 30
    lr: float = 0.01
    batch_size: int = 256
    arch: str = "convnet"
    width: int = 128
    depth: int = 3
    norm: str = "instancenorm"
    dsa: bool = False
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    zca: bool = False
    zca_regularization: float = 0.1
    train_examples: int | None = None
    seed: int = 0

    def validate(self) -> ExpertConfig:
        """Raise ValueError naming the first bad setting; return self."""
        for name in ("experts", "epochs", "batch_size", "width", "depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.norm == "batchnorm" or self.arch == "resnet18_bn":
            raise ValueError("experts are replayed functionally by mtt: use a norm without running "
                             f"statistics (instancenorm or none), got arch={self.arch!r} norm={self.norm!r}")
        if self.train_examples is not None and (not isinstance(self.train_examples, int)
                                                or self.train_examples < 1):
            raise ValueError(f"train_examples must be a positive int or None, got {self.train_examples!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if self.dsa:
            from compressdata.distill.augment import parse_strategy

            parse_strategy(self.dsa_strategy)
        return self

    def comparable(self) -> dict[str, Any]:
        """The settings that must match to continue a directory (the expert count may grow)."""
        d = asdict(self)
        d.pop("experts")
        return d


def expert_file(directory: Path, index: int) -> Path:
    """Path of expert `index`'s trajectory file."""
    return directory / f"expert_{index:04d}.safetensors"


def _epoch_seed(seed: int, expert: int, epoch: int) -> int:
    return (seed * 1_000_003 + expert * 10_007 + epoch) % (2**62)


def training_data(config: ExpertConfig, data: RealData | None = None) -> RealData:
    """The real training split the experts learn from (ZCA-whitened when config.zca; a seeded
    random subset when config.train_examples)."""
    data = data if data is not None else load_source(config.source, "train")
    if config.zca:
        data = data.with_normalization(
            zca_normalization(data.normalization, data.float_pixels, config.zca_regularization))
    if config.train_examples is not None and config.train_examples < len(data):
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(config.seed))
        data = data.subset(pick[:config.train_examples].sort().values)
    return data


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {})[_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return meta, tensors


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={_KEY: canonical_json(meta)}))


def _write_manifest(directory: Path, config: ExpertConfig, names: list[str],
                    done: dict[int, int]) -> None:
    manifest = {"format": FORMAT, "version": VERSION, "config": asdict(config), "parameters": names,
                "experts": [{"index": i, "file": expert_file(directory, i).name, "epochs": done[i]}
                            for i in sorted(done)]}
    path = directory / MANIFEST
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1, sort_keys=True)))


def train_experts(config: ExpertConfig, directory: str | os.PathLike, data: RealData | None = None,
                  device: torch.device | str = "cpu", progress: bool = True) -> Path:
    """Train config.experts trajectories into `directory` (continuing whatever it already holds
    for the same settings) and return the manifest's path."""
    config.validate()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / MANIFEST
    if manifest_path.exists():
        saved = ExpertConfig(**json.loads(manifest_path.read_text())["config"])
        if saved.comparable() != config.comparable():
            diff = sorted(k for k, v in config.comparable().items() if saved.comparable()[k] != v)
            raise ValueError(f"{directory} holds experts trained with different {', '.join(diff)}; "
                             "use another --out directory")
    data = training_data(config, data)
    device = torch.device(device)
    images, labels = data.images.to(device), data.labels.to(device)
    c, h, w = data.image_shape
    done: dict[int, int] = {}
    names: list[str] = []
    bar = tqdm(total=config.experts * config.epochs, desc="experts", disable=not progress,
               dynamic_ncols=True)
    for index in range(config.experts):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_epoch_seed(config.seed, index, 0) + 1)
            model = build_model(config.arch, c, data.num_classes, (h, w), width=config.width,
                                depth=config.depth, norm=config.norm).to(device)
        names = [k for k, _ in model.named_parameters()]
        path = expert_file(directory, index)
        tensors: dict[str, torch.Tensor] = {f"epoch_0000.{k}": v.detach().cpu().clone()
                                            for k, v in model.named_parameters()}
        start = 0
        if path.exists():
            meta, tensors = _read(path)
            if meta.get("config") != asdict(config) | {"experts": meta["config"]["experts"]}:
                raise ValueError(f"{path} was trained with other settings; use another --out directory")
            start = int(meta["epochs_done"])
            last = {k: tensors[f"epoch_{start:04d}.{k}"] for k in names}
            model.load_state_dict(last, strict=False)
        bar.update(min(start, config.epochs))
        for epoch in range(start, config.epochs):
            loss = _train_epoch(model, images, labels, config,
                                torch.Generator().manual_seed(_epoch_seed(config.seed, index, epoch + 1)))
            tensors.update({f"epoch_{epoch + 1:04d}.{k}": v.detach().cpu().clone()
                            for k, v in model.named_parameters()})
            meta = {"format": FORMAT, "version": VERSION, "expert": index, "epochs_done": epoch + 1,
                    "config": asdict(config)}
            _write(path, tensors, meta)
            done[index] = epoch + 1
            _write_manifest(directory, config, names, done)
            bar.update(1)
            bar.set_postfix({"expert": index, "loss": f"{loss:.3f}"})
        done[index] = config.epochs
    bar.close()
    _write_manifest(directory, config, names, done)
    return manifest_path


def _train_epoch(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 config: ExpertConfig, generator: torch.Generator) -> float:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.0)
    order = torch.randperm(images.shape[0], generator=generator).to(images.device)
    total, count = 0.0, 0
    for start in range(0, images.shape[0], config.batch_size):
        batch = order[start:start + config.batch_size]
        x = images[batch]
        if config.dsa:
            from compressdata.distill.augment import dsa

            x = dsa(x, config.dsa_strategy, generator)
        loss = F.cross_entropy(model(x), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * batch.numel()
        count += batch.numel()
    return total / max(count, 1)


class ExpertStore:
    """Read access to an expert directory: its settings and any expert's parameters at any epoch."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no expert trajectories in {self.directory}: {MANIFEST} is missing "
                                    "(make them with `compressdata experts --out DIR`)")
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path} is not an expert manifest (format {manifest.get('format')!r})")
        self.config = ExpertConfig(**manifest["config"])
        self.parameters: list[str] = list(manifest["parameters"])
        self.epochs = {int(e["index"]): int(e["epochs"]) for e in manifest["experts"]}

    def complete(self, epochs: int) -> list[int]:
        """Indices of the experts with at least `epochs` epochs stored."""
        return sorted(i for i, n in self.epochs.items() if n >= epochs)

    def load(self, expert: int, epoch: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Parameters of `expert` after `epoch` epochs (0 = initialisation), by parameter name."""
        if self.epochs.get(expert, -1) < epoch:
            raise ValueError(f"expert {expert} has {self.epochs.get(expert, 0)} epochs stored; "
                             f"epoch {epoch} was asked for")
        with safe_open(str(expert_file(self.directory, expert)), framework="pt", device=str(device)) as f:
            return {k: f.get_tensor(f"epoch_{epoch:04d}.{k}") for k in self.parameters}
