"""Expert trajectories for trajectory matching (MTT): train, store, resume, read.

An expert is a network trained on the real data with plain SGD (no momentum, no weight decay, as in
MTT); its parameters after every epoch (epoch 0 = the initialisation) form its trajectory. A
directory holds one file per expert in the library's one container (`compressdata.container`:
`expert_0000.safetensors`, tensors `epoch_0003.features.0.weight`, ...; one `__metadata__` key with
canonical JSON: format, version, expert index, epochs done, the training settings) and
`manifest.json` (settings, parameter names, each expert's file and epochs done). Files are rewritten
atomically after every epoch, and every epoch's randomness comes from a generator seeded by (seed,
expert, epoch), so a killed run continues with the missing experts and epochs and ends with the same
files as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from compressdata.container import MAX_HEADER_BYTES, FileKind, read_file, read_tensors, write_file
from compressdata.container.framing import parse_metadata_json, read_regular_file
from compressdata.data.sources import RealData, load_source
from compressdata.data.zca import zca_normalization
from compressdata.errors import CheckpointError, ConfigError, FileFormatError, MissingFileError
from compressdata.files import atomic_write
from compressdata.models import build_model

FORMAT = "compressdata.expert-trajectory"
VERSION = 1
MANIFEST = "manifest.json"
EXPERT = FileKind(what="expert trajectory", key="compressdata.expert", format=FORMAT, version=VERSION,
                  error=CheckpointError)


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
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if self.norm == "batchnorm" or self.arch == "resnet18_bn":
            raise ConfigError("experts are replayed functionally by mtt: use a norm without running "
                             f"statistics (instancenorm or none), got arch={self.arch!r} norm={self.norm!r}")
        if self.train_examples is not None and (not isinstance(self.train_examples, int)
                                                or self.train_examples < 1):
            raise ConfigError(f"train_examples must be a positive int or None, got {self.train_examples!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {self.seed!r}")
        if self.dsa:
            from compressdata.augment import parse_strategy

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
    tensors, meta = read_file(path, EXPERT)
    return meta, tensors


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest object (CheckpointError naming the file and the field when it is not one)."""
    try:
        manifest = parse_metadata_json(read_regular_file(path, MAX_HEADER_BYTES).decode("utf-8"), "the manifest")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"not UTF-8 JSON text ({e})", str(path)) from None
    except FileFormatError as e:
        raise CheckpointError(e.problem, str(path)) from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"not an expert manifest (format {manifest.get('format')!r})", str(path))
    if not isinstance(manifest.get("config"), dict):
        raise CheckpointError(f"field 'config': expected an object, got {type(manifest.get('config')).__name__}",
                              str(path))
    return manifest


def _manifest_config(manifest: dict[str, Any], path: Path) -> ExpertConfig:
    try:
        return ExpertConfig(**manifest["config"]).validate()
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"field 'config': not valid expert settings ({e})", str(path)) from None


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
        saved = _manifest_config(_read_manifest(manifest_path), manifest_path)
        if saved.comparable() != config.comparable():
            diff = sorted(k for k, v in config.comparable().items() if saved.comparable()[k] != v)
            raise ConfigError(f"{directory} holds experts trained with different {', '.join(diff)}; "
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
            saved = meta.get("config")
            if not isinstance(saved, dict) or saved != asdict(config) | {"experts": saved.get("experts")}:
                raise ConfigError(f"{path} was trained with other settings; use another --out directory")
            start = meta.get("epochs_done")
            if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start <= config.epochs:
                raise CheckpointError(f"field 'epochs_done': expected an integer in 0..{config.epochs}, got "
                                      f"{start!r}", str(path))
            last = {k: tensors.get(f"epoch_{start:04d}.{k}") for k in names}
            _check_parameters(last, {k: tuple(v.shape) for k, v in model.named_parameters()}, path, start)
            model.load_state_dict(last, strict=False)
        bar.update(min(start, config.epochs))
        for epoch in range(start, config.epochs):
            loss = _train_epoch(model, images, labels, config,
                                torch.Generator().manual_seed(_epoch_seed(config.seed, index, epoch + 1)))
            tensors.update({f"epoch_{epoch + 1:04d}.{k}": v.detach().cpu().clone()
                            for k, v in model.named_parameters()})
            meta = {"format": FORMAT, "version": VERSION, "expert": index, "epochs_done": epoch + 1,
                    "config": asdict(config)}
            write_file(path, EXPERT, tensors, meta)
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
            from compressdata.augment import dsa

            x = dsa(x, config.dsa_strategy, generator)
        loss = F.cross_entropy(model(x), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * batch.numel()
        count += batch.numel()
    return total / max(count, 1)


def _check_parameters(params: dict[str, torch.Tensor | None], shapes: dict[str, tuple[int, ...]], path: Path,
                      epoch: int) -> None:
    """Every parameter of `shapes` present as finite float32 of that shape (CheckpointError otherwise)."""
    for name, shape in shapes.items():
        value = params.get(name)
        field = f"epoch_{epoch:04d}.{name}"
        if value is None:
            raise CheckpointError(f"tensor {field!r} is missing", str(path))
        if value.dtype != torch.float32 or tuple(value.shape) != shape:
            raise CheckpointError(f"tensor {field!r}: expected float32{list(shape)}, got "
                                  f"{str(value.dtype).removeprefix('torch.')}{list(value.shape)}", str(path))
        if not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"tensor {field!r}: contains NaN or Inf", str(path))


class ExpertStore:
    """Read access to an expert directory: its settings and any expert's parameters at any epoch.

    Every field of the manifest and, on first use, every expert file is checked (CheckpointError
    naming the file and the field); `check_parameters` fixes the parameter shapes of the run's
    network, which every expert must have."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            raise MissingFileError(f"no expert trajectories in {self.directory}: {MANIFEST} is missing "
                                    "(make them with `compressdata experts --out DIR`)")
        manifest = _read_manifest(path)
        self.config = _manifest_config(manifest, path)
        parameters = manifest.get("parameters")
        if not (isinstance(parameters, list) and parameters and all(isinstance(p, str) and p for p in parameters)
                and len(set(parameters)) == len(parameters)):
            raise CheckpointError(f"field 'parameters': expected distinct parameter names, got {parameters!r:.200}",
                                  str(path))
        self.parameters: list[str] = parameters
        self.epochs = _manifest_epochs(manifest.get("experts"), self.config.epochs, path)
        self.shapes: dict[str, tuple[int, ...]] | None = None
        self._checked: set[int] = set()

    def complete(self, epochs: int) -> list[int]:
        """Indices of the experts with at least `epochs` epochs stored."""
        return sorted(i for i, n in self.epochs.items() if n >= epochs)

    def check_parameters(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Require every expert to hold exactly these parameters (the run's network) with these shapes."""
        if set(shapes) != set(self.parameters):
            raise CheckpointError(f"field 'parameters': the experts hold {sorted(self.parameters)}, the run's "
                                  f"network has {sorted(shapes)}", str(self.directory / MANIFEST))
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self._checked.clear()

    def load(self, expert: int, epoch: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Parameters of `expert` after `epoch` epochs (0 = initialisation), by parameter name."""
        if self.epochs.get(expert, -1) < epoch:
            raise ConfigError(f"expert {expert} has {self.epochs.get(expert, 0)} epochs stored; "
                             f"epoch {epoch} was asked for")
        path = expert_file(self.directory, expert)
        if expert not in self._checked:
            self._check_file(expert, path)
        names = {f"epoch_{epoch:04d}.{k}": k for k in self.parameters}
        return {names[n]: t for n, t in read_tensors(path, EXPERT, names, device).items()}

    def _check_file(self, expert: int, path: Path) -> None:
        """The file of `expert`: its metadata matches the manifest, and every epoch it should hold is
        there with the expected parameter shapes (epoch 0's, or the run's network's)."""
        if not path.is_file():
            raise CheckpointError(f"expert {expert}'s file is missing", str(path))
        meta, tensors = _read(path)
        saved = meta.get("config")
        done = meta.get("epochs_done")
        if meta.get("expert") != expert or isinstance(meta.get("expert"), bool):
            raise CheckpointError(f"field 'expert': expected {expert}, got {meta.get('expert')!r:.80}", str(path))
        if not isinstance(saved, dict) or saved != asdict(self.config) | {"experts": saved.get("experts")}:
            raise CheckpointError("field 'config': differs from the manifest's settings", str(path))
        if not isinstance(done, int) or isinstance(done, bool) or done < self.epochs[expert]:
            raise CheckpointError(f"field 'epochs_done': expected an integer >= {self.epochs[expert]} (the "
                                  f"manifest's), got {done!r}", str(path))
        first = {k: tensors.get(f"epoch_0000.{k}") for k in self.parameters}
        shapes = self.shapes or {k: tuple(v.shape) for k, v in first.items() if v is not None}
        for epoch in range(self.epochs[expert] + 1):
            _check_parameters({k: tensors.get(f"epoch_{epoch:04d}.{k}") for k in self.parameters},
                              {k: shapes.get(k, ()) for k in self.parameters}, path, epoch)
        self._checked.add(expert)


def _manifest_epochs(experts: Any, max_epochs: int, path: Path) -> dict[int, int]:
    """{expert index: epochs stored} from the manifest's `experts` list."""
    out: dict[int, int] = {}
    for i, item in enumerate(experts if isinstance(experts, list) else [None]):
        ok = isinstance(item, dict) and all(isinstance(item.get(k), int) and not isinstance(item.get(k), bool)
                                            for k in ("index", "epochs"))
        if not ok or not (item["index"] >= 0 and 0 <= item["epochs"] <= max_epochs) or item["index"] in out:
            raise CheckpointError(f"field 'experts[{i}]': expected {{index: int >= 0, epochs: 0..{max_epochs}}} "
                                  f"(each index once), got {item!r:.200}", str(path))
        out[item["index"]] = item["epochs"]
    return out
