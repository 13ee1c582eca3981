"""Typed views of a bank's metadata: normalisation, training recipe, evaluation results.

They round-trip through plain JSON dicts (`to_dict` / `from_dict`); unknown optional keys are kept
in `extra` so a reader never drops what a newer writer added.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

LABEL_LOSSES = ("cross_entropy", "soft_cross_entropy", "kl_divergence")
LR_SCHEDULES = ("step", "constant", "cosine")
AUGMENTATIONS = ("none", "dsa")


@dataclass
class Normalization:
    """How pixels in [0, 1] map to the space the bank was distilled in.

    x = (pixels - mean[c]) / std[c] per channel; then, when ZCA is used, the flattened image is
    whitened: x = (x - zca_mean) @ zca_whiten (tensors stored in the bank).
    """

    mean: list[float]
    std: list[float]
    zca_regularization: float | None = None
    zca_mean: torch.Tensor | None = field(default=None, repr=False)
    zca_whiten: torch.Tensor | None = field(default=None, repr=False)

    @property
    def uses_zca(self) -> bool:
        return self.zca_whiten is not None

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """[n, C, H, W] pixels in [0, 1] -> the bank's space."""
        x = (pixels - _per_channel(self.mean, pixels)) / _per_channel(self.std, pixels)
        if self.zca_whiten is not None:
            flat = x.reshape(x.shape[0], -1) - self.zca_mean.to(x)
            x = (flat @ self.zca_whiten.to(x)).reshape(x.shape)
        return x

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """The bank's space -> pixels (not clamped; values outside [0, 1] are possible)."""
        if self.zca_whiten is not None:
            flat = x.reshape(x.shape[0], -1).to(torch.float64)
            unwhitened = torch.linalg.solve(self.zca_whiten.to(torch.float64).T, flat.T).T
            x = (unwhitened + self.zca_mean.to(torch.float64)).to(x.dtype).reshape(x.shape)
        return x * _per_channel(self.std, x) + _per_channel(self.mean, x)

    def to_dict(self) -> dict[str, Any]:
        zca = None if self.zca_regularization is None else {"regularization": self.zca_regularization}
        return {"mean": list(self.mean), "std": list(self.std), "zca": zca}

    @classmethod
    def from_dict(cls, d: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None):
        zca = d.get("zca")
        tensors = tensors or {}
        return cls(
            mean=[float(v) for v in d["mean"]],
            std=[float(v) for v in d["std"]],
            zca_regularization=None if zca is None else float(zca["regularization"]),
            zca_mean=tensors.get("zca_mean") if zca is not None else None,
            zca_whiten=tensors.get("zca_whiten") if zca is not None else None,
        )

    @classmethod
    def identity(cls, channels: int) -> Normalization:
        return cls(mean=[0.0] * channels, std=[1.0] * channels)


def _per_channel(values: list[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


@dataclass
class TrainingRecipe:
    """How to train a network on the decoded bank (the documented evaluation protocol by default).

    label_loss: `cross_entropy` for hard labels; `soft_cross_entropy` trains on softmax(labels /
    label_temperature) as targets; `kl_divergence` is KL(softmax(labels/T) || softmax(logits/T))*T^2.
    lr_schedule `step` multiplies the lr by 0.1 at half the epochs. width / depth / norm: the
    network's shape when it differs from the architecture's default (None: the default, e.g.
    ConvNet-3 of width 128 with instance norm).
    """

    architecture: str = "convnet"
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 300
    batch_size: int = 256
    lr_schedule: str = "step"
    augmentation: str = "none"
    label_loss: str = "cross_entropy"
    label_temperature: float = 1.0
    width: int | None = None
    depth: int | None = None
    norm: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        return {**extra, **{k: v for k, v in d.items() if v is not None}}

    def network_options(self) -> dict[str, Any]:
        """The recorded width / depth / norm of the network (only those that are set)."""
        return {k: v for k, v in (("width", self.width), ("depth", self.depth), ("norm", self.norm))
                if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingRecipe:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known})


RANDOM_REAL = "random_real"
FULL_DATA = "full_data"
_EVALUATION_KEYS = ("architecture", "accuracies", "test", "epochs")


@dataclass
class EvaluationResult:
    """Test accuracy of fresh networks trained on the decoded bank (fractions in [0, 1]).

    protocol: the named evaluation protocol it followed ("recipe", "standard"; None when not
    recorded). baselines: the same measurement of reference training sets, by name:
    `random_real` (a random real subset of the same storage, same protocol and network seeds) and
    `full_data` (the whole real training split, same network and protocol).
    """

    architecture: str
    accuracies: list[float]
    test: str
    epochs: int
    mean: float = 0.0
    std: float = 0.0
    protocol: str | None = None
    baselines: dict[str, EvaluationResult] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean, self.std = accuracy_mean_std(self.accuracies)

    @property
    def networks(self) -> int:
        return len(self.accuracies)

    @property
    def improvement_over_random(self) -> float | None:
        """Mean accuracy minus the random-real baseline's (None without that baseline)."""
        base = self.baselines.get(RANDOM_REAL)
        return None if base is None else self.mean - base.mean

    @property
    def gap_to_full_data(self) -> float | None:
        """The full-data reference's mean accuracy minus this one (None without the reference)."""
        base = self.baselines.get(FULL_DATA)
        return None if base is None else base.mean - self.mean

    def to_dict(self) -> dict[str, Any]:
        d = {"architecture": self.architecture, "accuracies": list(self.accuracies), "test": self.test,
             "epochs": self.epochs, "mean": self.mean, "std": self.std}
        if self.protocol is not None:
            d["protocol"] = self.protocol
        if self.baselines:
            d["baselines"] = {name: b.to_dict() for name, b in self.baselines.items()}
        return {**self.extra, **d, "networks": self.networks}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvaluationResult:
        """Parse one evaluation; `protocol` and `baselines` of another shape stay in `extra`."""
        extra = {k: v for k, v in d.items() if k not in (*_EVALUATION_KEYS, "mean", "std", "networks")}
        protocol = extra.pop("protocol") if isinstance(extra.get("protocol"), str) else None
        baselines = {}
        if _is_baselines(extra.get("baselines")):
            baselines = {name: cls.from_dict(b) for name, b in extra.pop("baselines").items()}
        return cls(**{k: d[k] for k in _EVALUATION_KEYS}, protocol=protocol, baselines=baselines,
                   extra=extra)

    def summary(self) -> str:
        """One line: accuracy, networks, test set, protocol; then one line per baseline."""
        protocol = f" ({self.protocol} protocol)" if self.protocol else ""
        lines = [f"{self.architecture}: {100 * self.mean:.2f} +- {100 * self.std:.2f} % "
                 f"over {self.networks} networks on {self.test}{protocol}"]
        random_real = self.baselines.get(RANDOM_REAL)
        if random_real is not None:
            per_class = random_real.extra.get("per_class", "?")
            lines.append(f"  random real ({per_class} per class, same storage): {100 * random_real.mean:.2f} "
                         f"+- {100 * random_real.std:.2f} %; improvement {100 * self.improvement_over_random:+.2f}")
        full = self.baselines.get(FULL_DATA)
        if full is not None:
            lines.append(f"  full data ({full.epochs} epochs, {full.networks} networks): {100 * full.mean:.2f} "
                         f"+- {100 * full.std:.2f} %; gap {100 * self.gap_to_full_data:.2f}")
        return "\n".join(lines)


def _is_evaluation(d: Any) -> bool:
    """Whether `d` has the four required evaluation members with the right types."""
    return (isinstance(d, dict) and isinstance(d.get("architecture"), str) and isinstance(d.get("test"), str)
            and isinstance(d.get("epochs"), int) and not isinstance(d.get("epochs"), bool)
            and isinstance(d.get("accuracies"), list)
            and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in d["accuracies"]))


def _is_baselines(d: Any) -> bool:
    return isinstance(d, dict) and all(isinstance(k, str) and _is_evaluation(v) for k, v in d.items())


def accuracy_mean_std(accuracies: list[float]) -> tuple[float, float]:
    """(mean, population std) exactly as spec 3.9 computes them, so that every writer produces the same
    canonical bytes: binary64 sums taken left to right in list order; mean = sum / n; std =
    sqrt(sum of (a - mean)^2 / n); (0.0, 0.0) for an empty list and std 0.0 for one entry."""
    n = len(accuracies)
    if n == 0:
        return 0.0, 0.0
    total = 0.0
    for a in accuracies:
        total += float(a)
    mean = total / n
    if n == 1:
        return mean, 0.0
    squares = 0.0
    for a in accuracies:
        squares += (float(a) - mean) * (float(a) - mean)
    return mean, math.sqrt(squares / n)
