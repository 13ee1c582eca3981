"""The option groups of a distillation run, as plain frozen dataclasses: each field's docstring is
its help text (the `distill` command line is generated from these classes).

Every field also has a flat name, the key recorded in a bank's provenance and in a checkpoint:
its own name, or the one `flat("...")` gives (`inner.lr` is `inner_lr`). The groups of the
objectives and add-ons (`gm`, `mtt`, `dwa`, `mim`) live with them in `distill.objectives` and
register themselves here (`register_objective`, `register_addon`); their fields' flat names are
prefixed with the group's name (`mtt.syn_steps` is `mtt_syn_steps`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from compressdata.errors import ConfigError

KINDS = ("pixels", "memory", "lowrank")
INITS = ("random", "real", "pca", "kmeans")
NETWORK_BATCHINGS = ("loop", "vmap")


def flat(name: str) -> dict[str, str]:
    """Field metadata: the field's flat name, when it differs from the field's own."""
    return {"flat": name}


@dataclass(frozen=True)
class DataOptions:
    """Real data: the source distilled, and how its examples are seen."""

    source: str = "fashion-mnist"
    """real source: a preset (fashion-mnist, mnist, cifar10, cifar100, svhn) or idx:, torchvision:, hf:, folder:,
    wds: (docs/scaling.md for streaming)"""
    split: Literal["train", "test"] = "train"
    """split of the source to distil"""
    zca: bool = False
    """distil in ZCA-whitened space (fitted on the split)"""
    zca_regularization: float = 0.1
    """ZCA regularisation, relative to the mean feature variance"""
    dsa: bool = False
    """differentiable siamese augmentation of real and synthetic batches"""
    dsa_strategy: str = "flip_rotate"
    """DSA operations, joined by _ (color, crop, cutout, flip, scale, rotate)"""
    download: bool = False
    """download the source when it is not local (torchvision: and hf: sources, presets without local files)"""


@dataclass(frozen=True)
class ParameterizationOptions:
    """Parameterization: how the bank stores its examples, within the storage budget."""

    kind: Literal["pixels", "memory", "lowrank"] | None = field(default=None, metadata=flat("parameterization"))
    """pixels, memory (addressable memories: K shared bases and one address row per example) or lowrank
    (default: the method's; rtp: memory)"""
    budget_ipc: float = 1.0
    """storage budget in images per class: the bytes of that many float32 images per class (every
    parameterization spends the same bytes)"""
    budget_bytes: int | None = None
    """storage budget in bytes, instead of budget_ipc (the bytes of b 8-bit images per class are
    b*C*H*W*classes, 7840 for one Fashion-MNIST image per class)"""
    storage_dtype: str = "f32"
    """how the bank stores its tensors: f32, f16, bf16, int8 (8-bit, one scale and zero point per tensor),
    int8-row (one per row), or per tensor, e.g. 'bases=f16,addresses=int8'; the budget buys values at these
    sizes"""
    quant_aware: bool = False
    """train through the stored values (straight-through gradients) instead of quantising the float result
    after distillation"""
    n_bases: int | None = None
    """K memories of kind memory (default: as many as half the budget holds at the downsampling)"""
    downsample: int | None = None
    """bases stored at 1/ds resolution, kind memory (default: the finest at which half the budget buys 4 bases
    per class)"""
    rank: int = 2
    """rank per channel, kind lowrank"""
    init: Literal["random", "real", "pca", "kmeans"] | None = None
    """initialisation (default: random for rtp, real otherwise); memory: real (SVD of r real images per class),
    pca or kmeans (bases from a pool of real images, least-squares addresses)"""
    learn_labels: bool = False
    """learn soft labels (stored as logits; recipe soft_cross_entropy)"""
    label_init_scale: float = 5.0
    """learned-label logits start at this times one-hot"""


@dataclass(frozen=True)
class ModelOptions:
    """The network the objective trains (and the bank's recipe names)."""

    arch: Literal["convnet", "resnet18", "resnet18_bn", "mlp"] = "convnet"
    """network architecture"""
    width: int = 128
    """ConvNet / MLP width"""
    depth: int = 3
    """ConvNet / MLP depth"""
    norm: Literal["instancenorm", "batchnorm", "none"] = "instancenorm"
    """ConvNet normalisation layer"""


@dataclass(frozen=True)
class InnerOptions:
    """Inner loop: a fresh network's SGD steps on synthetic minibatches."""

    unroll_steps: int = 50
    """T inner SGD steps back-propagated through (bptt)"""
    bptt_window: int | None = None
    """random truncated BPTT: unroll a length drawn from [W, T] and differentiate only its last W steps
    (default: all T steps)"""
    graph_memory_mb: float = 1024.0
    """memory for keeping the last inner steps' graphs instead of recomputing them (bptt; same result, faster;
    0: always recompute)"""
    lr: float = field(default=0.01, metadata=flat("inner_lr"))
    """inner SGD learning rate"""
    momentum: float = field(default=0.9, metadata=flat("inner_momentum"))
    """inner SGD momentum"""
    batch_per_class: int = field(default=32, metadata=flat("inner_batch_per_class"))
    """synthetic examples per class per inner step"""


@dataclass(frozen=True)
class OuterOptions:
    """Outer step: how the learnable tensors move each iteration (defaults per objective and
    parameterization: `DistillConfig.resolved_outer`, `resolved_optimizer`)."""

    iterations: int = 2000
    """outer iterations"""
    real_batch_per_class: int = 64
    """real examples per class in the outer batch"""
    lr: float | None = field(default=None, metadata=flat("outer_lr"))
    """outer learning rate (default per objective: bptt 0.1, dm 1, gm 0.1, mtt 100, dwa 10; adam 0.05)"""
    momentum: float | None = field(default=None, metadata=flat("outer_momentum"))
    """outer SGD momentum (sgd only; default 0.5)"""
    clip_norm: float | None = None
    """outer gradient-norm clip (default: 2 for bptt, none for the others)"""
    optimizer: Literal["sgd", "adam"] | None = field(default=None, metadata=flat("outer_optimizer"))
    """outer optimiser (default: adam for dwa, as its paper; sgd for the others)"""
    betas: tuple[float, float] | None = field(default=None, metadata=flat("outer_betas"))
    """Adam betas of the outer optimiser (default [0.5, 0.9])"""
    schedule: Literal["constant", "cosine"] | None = field(default=None, metadata=flat("outer_schedule"))
    """outer lr schedule: constant, or cosine lr * 0.5 * (1 + cos(pi * i / iterations)) (default: cosine for dwa
    with adam, else constant)"""


@dataclass(frozen=True)
class RunOptions:
    """The run: seed, device, checkpoints and progress evaluations."""

    seed: int = 0
    """seed of every random draw of the run"""
    device: str | None = None
    """cpu, cuda, cuda:N (default: cuda if available)"""
    profile: Literal["cpu", "gpu"] | None = None
    """the defaults the run's options start from (command line; recorded in the bank): gpu, the official
    settings, or cpu, the CPU protocol of docs/benchmarks.md (default: gpu when the run is on a GPU, else cpu);
    options given explicitly win"""
    amp: bool = False
    """bfloat16 autocast (CUDA, and CPUs with AVX512-BF16 or AMX; emulated elsewhere)"""
    checkpoint_dir: str | None = None
    """checkpoints and metrics.jsonl (command line default: OUT.ckpt)"""
    checkpoint_every: int = 100
    """iterations between checkpoints"""
    resume: bool = False
    """continue from the checkpoint in checkpoint_dir"""
    eval_every: int = 0
    """quick test evaluation every N iterations (0: never)"""
    eval_epochs: int = 50
    """epochs of a quick evaluation's networks"""
    eval_networks: int = 1
    """networks of a quick evaluation"""


@dataclass(frozen=True)
class ScaleOptions:
    """Scale-out (docs/scaling.md; launch with torchrun for several processes)."""

    networks_per_iteration: int = 1
    """G fresh networks averaged per outer iteration, split over the torchrun processes; the result does not
    depend on their number (command line default: one per process, the resumed run's number when resuming)"""
    network_batching: Literal["loop", "vmap"] = "loop"
    """a process's networks in a Python loop or vectorised with vmap (bptt)"""
    collective_timeout: float = 600.0
    """seconds a rank waits for the others before failing"""
    streaming: bool = False
    """stream a wds: or hf: source instead of loading it into memory"""
    stream_buffer_per_class: int = 256
    """real examples buffered per class when streaming"""
    stream_workers: int = 0
    """DataLoader worker processes reading the stream"""


GROUPS: dict[str, type] = {"data": DataOptions, "parameterization": ParameterizationOptions, "model": ModelOptions,
                           "inner": InnerOptions, "outer": OuterOptions, "run": RunOptions, "scale": ScaleOptions}


@dataclass(frozen=True)
class Registered:
    """An objective or add-on known to the configuration, with its option group (or None)."""

    name: str
    options: type | None
    addon: bool = False


OBJECTIVES: dict[str, Registered] = {}
ADDONS: dict[str, Registered] = {}


def register_objective(name: str, options: type | None = None) -> None:
    """Make objective `name` (and its option group, a frozen dataclass) known to `DistillConfig`."""
    OBJECTIVES[name] = Registered(name, options)


def register_addon(name: str, options: type) -> None:
    """Make add-on `name` and its option group known to `DistillConfig` (it is on when its options say so)."""
    ADDONS[name] = Registered(name, options, addon=True)


def option_groups() -> dict[str, type]:
    """Every group of a run's options: the fixed ones, then those the objectives and add-ons registered."""
    registered = {r.name: r.options for r in (*OBJECTIVES.values(), *ADDONS.values()) if r.options is not None}
    return {**GROUPS, **registered}


def flat_names(group: str, cls: type) -> dict[str, str]:
    """{field name: flat name} of a group (objective groups: prefixed with the group's name)."""
    prefix = "" if group in GROUPS else f"{group}_"
    return {f.name: f.metadata.get("flat", prefix + f.name) for f in fields(cls)}


def one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """ConfigError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")


def positive_number(name: str, value: Any) -> None:
    """ConfigError unless `value` is a finite number > 0."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def non_negative_number(name: str, value: Any) -> None:
    """ConfigError unless `value` is a finite number >= 0."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a number >= 0, got {value!r}")


def positive_int(name: str, value: Any) -> None:
    """ConfigError unless `value` is an int >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")


def non_negative_int(name: str, value: Any, meaning: str = "") -> None:
    """ConfigError unless `value` is an int >= 0."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0{meaning}, got {value!r}")


