"""`DistillConfig`: every hyper-parameter of a distillation run as plain values, validated.

A run combines three axes: the parameterization (`pixels`, `memory`, `lowrank`), the objective
(`bptt`, `dm`, `gm`, ...) and add-on losses (`mim_weight` > 0). `method` is a preset of the first
two: `rtp` = memory + bptt (the default), `pixels` = pixels + bptt, `random-real` = no
optimisation; `parameterization` and `objective` override the preset.

Defaults follow the official RTP code (REFERENCE section 1): inner SGD lr 0.01 momentum 0.9,
32 synthetic examples per class per inner step, a real batch of 64 per class, K = 16 bases at
downsampling 2, ConvNet-128. The outer SGD step (lr, momentum, clip) defaults per objective and
parameterization (`OUTER_DEFAULTS`, `PARAM_OUTER_DEFAULTS`) unless given; dwa uses Adam with a cosine
schedule instead (`OPTIMIZER_DEFAULTS`, `resolved_optimizer`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from compressdata.models import ARCHITECTURES as ARCHS
from compressdata.models import NORMS
from compressdata.params.base import PARAMETERIZATIONS
from compressdata.params.quant import TensorStorage, parse_storage

METHODS = ("rtp", "pixels", "random-real")
DWA_TEACHER_ARCHS = ("convnet", "resnet18_bn")
KIND_OF_METHOD = {"rtp": "memory", "pixels": "pixels", "random-real": "pixels"}
PRESETS = {("memory", "bptt"): "rtp", ("pixels", "bptt"): "pixels"}
KINDS = ("pixels", "memory", "lowrank")
INITS = ("random", "real", "pca", "kmeans")
MEMORY_ONLY_INITS = ("pca", "kmeans")
# Objectives that never look at the labels, so learned labels would get no gradient.
LABEL_FREE_OBJECTIVES = ("dm",)

# Outer SGD (lr, momentum, clip norm; None = no clip) per objective: bptt as the RTP code; dm as the
# DM code (lr_img 1, momentum 0.5, no clip); gm as DC/DSA (lr_img 0.1, momentum 0.5, no clip); mtt and
# dwa as measured on the CPU protocol of docs/methods-mtt-dwa.md (MTT's code uses lr_img 100-1000).
OUTER_DEFAULTS: dict[str, tuple[float, float, float | None]] = {
    "bptt": (0.1, 0.5, 2.0),
    "dm": (1.0, 0.5, None),
    "gm": (0.1, 0.5, None),
    "mtt": (100.0, 0.5, None),
    "dwa": (10.0, 0.5, None),
}
FALLBACK_OUTER = (0.1, 0.5, None)
# Per-parameterization overrides of the objective's outer momentum (low-rank plugin: SGD momentum 0.5).
PARAM_OUTER_DEFAULTS: dict[str, dict[str, float]] = {"lowrank": {"outer_momentum": 0.5}}
# The outer optimiser per objective (others: sgd): dwa uses Adam betas (0.5, 0.9) with a cosine
# schedule as its official code (REFERENCE section 5); its SGD step diverged on memory at lr 10 and
# on lowrank at IPC 10.
OPTIMIZER_DEFAULTS: dict[str, str] = {"dwa": "adam"}
ADAM_BETAS = (0.5, 0.9)
# Adam's outer lr (any objective: Adam's step is per coordinate and independent of the gradient's
# scale). Measured on the CPU protocol of docs/methods-mtt-dwa.md (dwa, IPC 1): pixels are flat from
# 0.05 to 0.25 (57.8, 57.0, 57.7 %) and collapse at 1 (39.4 %), while memory (bases x addresses, each
# moved by lr per coordinate) loses at the paper's 0.25 (55.0 %) what it keeps at 0.05 (63.0 %).
ADAM_OUTER_LR = 0.05

# Fields that may change between a run and its resumption without changing the result.
RESUMABLE_CHANGES = frozenset({
    "iterations", "checkpoint_dir", "checkpoint_every", "resume", "eval_every", "eval_epochs",
    "eval_networks", "device", "network_batching", "collective_timeout",
})
NETWORK_BATCHINGS = ("loop", "vmap")


@dataclass(frozen=True)
class DistillConfig:
    """One distillation run. `init=None` picks the method's default (rtp: random, pixels: real)."""

    source: str = "fashion-mnist"
    split: str = "train"
    method: str = "rtp"
    parameterization: str | None = None
    objective: str = "bptt"
    budget_ipc: float = 1.0
    # the budget in bytes (spec 7), overriding budget_ipc; None: budget_ipc float32 images per class
    budget_bytes: int | None = None
    # how the kind's tensors are stored (spec 2.6): f32, f16, bf16, int8 (one scale per tensor), int8-row
    # (one per row), or per tensor, e.g. 'bases=f16,addresses=int8'; the budget buys values at these sizes
    storage_dtype: str = "f32"
    # quantisation-aware distillation: every decode sees the values as stored (straight-through gradients);
    # False: distil in float32, then quantise the result (post-training)
    quant_aware: bool = False
    n_bases: int | None = None  # None: the budget rule (params.budget.default_n_bases)
    downsample: int | None = None  # None: the budget rule (params.budget.default_downsample)
    rank: int = 2
    init: str | None = None
    iterations: int = 2000
    unroll_steps: int = 50
    bptt_window: int | None = None  # random truncated BPTT: differentiate the last W of [W, T] steps
    graph_memory_mb: float = 1024.0  # graphs of the last inner steps kept instead of recomputed
    inner_lr: float = 0.01
    inner_momentum: float = 0.9
    inner_batch_per_class: int = 32
    real_batch_per_class: int = 64
    outer_lr: float | None = None
    outer_momentum: float | None = None
    clip_norm: float | None = None
    outer_optimizer: str | None = None
    outer_betas: tuple[float, float] | None = None
    outer_schedule: str | None = None
    arch: str = "convnet"
    width: int = 128
    depth: int = 3
    norm: str = "instancenorm"
    learn_labels: bool = False
    label_init_scale: float = 5.0
    dsa: bool = False
    dsa_strategy: str = "flip_rotate"
    zca: bool = False
    zca_regularization: float = 0.1
    gm_outer_loop: int | None = None
    gm_inner_loop: int | None = None
    mim_weight: float = 0.0
    mim_temperature: float = 0.1
    seed: int = 0
    device: str | None = None
    amp: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100
    resume: bool = False
    eval_every: int = 0
    eval_epochs: int = 50
    eval_networks: int = 1
    # scale-out (docs/scaling.md): G fresh networks per iteration (split over torchrun ranks),
    # computed in a Python loop or vectorised (vmap, bptt only); streaming real sources.
    networks_per_iteration: int = 1
    network_batching: str = "loop"
    collective_timeout: float = 600.0
    streaming: bool = False
    stream_buffer_per_class: int = 256
    stream_workers: int = 0
    mtt_expert_dir: str | None = None
    mtt_syn_steps: int = 20
    mtt_expert_epochs: int = 2
    mtt_max_start_epoch: int = 20
    mtt_lr_init: float = 0.01
    mtt_lr_lr: float = 0.01
    dwa_teacher: str = "train"
    dwa_teacher_arch: str = "convnet"
    dwa_teacher_width: int = 128
    dwa_teacher_epochs: int = 20
    dwa_r_bn: float = 0.01
    dwa_first_bn_weight: float = 10.0
    dwa_steps: int = 12
    dwa_rho: float = 0.015
    dwa_jitter: int = 4
    dwa_temperature: float = 4.0

    @property
    def kind(self) -> str:
        """The parameterization actually used (`parameterization`, else the method's)."""
        return self.parameterization or KIND_OF_METHOD.get(self.method, "memory")

    @property
    def storage(self) -> dict[str, TensorStorage]:
        """Each stored tensor's dtype (`params.quant.parse_storage` of storage_dtype)."""
        return parse_storage(self.storage_dtype, PARAMETERIZATIONS[self.kind].tensor_names)

    @property
    def method_name(self) -> str:
        """The name recorded in provenance: the preset (rtp, pixels, random-real) when the axes
        match one, else objective-parameterization (e.g. dm-lowrank); "+mim" with the add-on."""
        if self.method == "random-real":
            return self.method
        name = PRESETS.get((self.kind, self.objective), f"{self.objective}-{self.kind}")
        return name + "+mim" if self.mim_weight > 0 else name

    @property
    def addons(self) -> dict[str, dict[str, float]]:
        """The add-on losses switched on, with their options."""
        if self.mim_weight > 0:
            return {"mim": {"weight": self.mim_weight, "temperature": self.mim_temperature}}
        return {}

    @property
    def resolved_init(self) -> str:
        """The initialisation actually used (rtp: random as its official code; else real)."""
        if self.init is not None:
            return self.init
        return "random" if self.method == "rtp" and self.kind == "memory" and \
            self.objective == "bptt" else "real"

    @property
    def resolved_optimizer(self) -> tuple[str, tuple[float, float] | None, str]:
        """(outer optimiser, Adam betas (None for sgd), lr schedule) actually used: the given values,
        else the objective's (dwa: adam, betas (0.5, 0.9), cosine; others: sgd, constant)."""
        optimizer = self.outer_optimizer or OPTIMIZER_DEFAULTS.get(self.objective, "sgd")
        adam = optimizer == "adam"
        betas = (tuple(float(b) for b in self.outer_betas) if self.outer_betas is not None else ADAM_BETAS) \
            if adam else None
        default_schedule = "cosine" if adam and self.objective == "dwa" else "constant"
        return optimizer, betas, self.outer_schedule or default_schedule

    @property
    def resolved_outer(self) -> tuple[float, float | None, float]:
        """(outer lr, outer momentum (None for adam), clip norm) actually used: the given values, else
        the parameterization's, else the objective's defaults (adam: lr ADAM_OUTER_LR); clip inf = no
        clipping."""
        lr, momentum, clip = OUTER_DEFAULTS.get(self.objective, FALLBACK_OUTER)
        clip = self.clip_norm if self.clip_norm is not None else clip
        clip = math.inf if clip is None else clip
        if self.resolved_optimizer[0] == "adam":
            return (self.outer_lr if self.outer_lr is not None else ADAM_OUTER_LR), None, clip
        param = PARAM_OUTER_DEFAULTS.get(self.kind, {})
        lr = self.outer_lr if self.outer_lr is not None else param.get("outer_lr", lr)
        momentum = self.outer_momentum if self.outer_momentum is not None else \
            param.get("outer_momentum", momentum)
        return lr, momentum, clip

    @property
    def resolved_gm_loops(self) -> tuple[int, int]:
        """(matchings per outer iteration, network steps between them) for gm: given, else DC's
        rule scaled to the CPU (budget < 10 images per class: 1, 1; else 5, 10 instead of 10, 50)."""
        outer, inner = (1, 1) if self.budget_ipc < 10 else (5, 10)
        return (self.gm_outer_loop or outer, self.gm_inner_loop or inner)

    def resolved(self) -> DistillConfig:
        """A copy with every default replaced by the value actually used (clip_norm None then
        means no clipping)."""
        lr, momentum, clip = self.resolved_outer
        optimizer, betas, schedule = self.resolved_optimizer
        outer, inner = self.resolved_gm_loops
        return replace(self, parameterization=self.kind, init=self.resolved_init, outer_lr=lr,
                       outer_momentum=momentum, clip_norm=None if math.isinf(clip) else clip,
                       outer_optimizer=optimizer, outer_betas=betas, outer_schedule=schedule,
                       gm_outer_loop=outer,
                       gm_inner_loop=inner)

    def recorded_hyperparameters(self) -> dict[str, Any]:
        """The resolved options that shaped the result, for the bank's provenance: not those that
        may change on resume (except iterations), nor other objectives' or unused add-ons' options,
        nor the budget not given (budget_ipc or budget_bytes)."""
        unused_prefixes = tuple(p for p, on in (
            ("mtt_", self.objective == "mtt"), ("dwa_", self.objective == "dwa"),
            ("gm_", self.objective == "gm"), ("mim_", self.mim_weight > 0),
            ("stream_", self.streaming), ("zca_", self.zca), ("dsa_", self.dsa)) if not on)
        unused = {"budget_ipc"} if self.budget_bytes is not None else {"budget_bytes"}
        return {k: v for k, v in self.resolved().to_dict().items()
                if (k not in RESUMABLE_CHANGES or k == "iterations") and not k.startswith(unused_prefixes)
                and k not in unused}

    def validate(self) -> DistillConfig:
        """Raise ValueError naming the first bad option (what, expected, got); return self."""
        _one_of("method", self.method, METHODS)
        if self.parameterization is not None:
            _one_of("parameterization", self.parameterization, KINDS)
        from compressdata.distill.objectives import OBJECTIVES

        _one_of("objective", self.objective, tuple(OBJECTIVES))
        _one_of("arch", self.arch, ARCHS)
        _one_of("norm", self.norm, NORMS)
        if self.init is not None:
            _one_of("init", self.init, INITS)
            if self.init in MEMORY_ONLY_INITS and self.kind != "memory":
                raise ValueError(f"init {self.init!r} fits bases and addresses (parameterization memory); "
                                 f"the parameterization is {self.kind!r}: use init 'real' or 'random'")
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {self.split!r}")
        if not (isinstance(self.budget_ipc, (int, float)) and math.isfinite(self.budget_ipc)
                and self.budget_ipc > 0):
            raise ValueError(f"budget_ipc must be a positive number, got {self.budget_ipc!r}")
        if self.budget_bytes is not None:
            _positive_int("budget_bytes", self.budget_bytes)
        if not isinstance(self.storage_dtype, str):
            raise ValueError(f"storage_dtype must be a string such as 'int8' or 'bases=f16,addresses=int8', "
                             f"got {self.storage_dtype!r}")
        try:
            storage = self.storage
        except ValueError as e:
            raise ValueError(f"storage_dtype: {e}") from None
        if self.quant_aware and (self.method == "random-real" or all(s.dtype == "f32" for s in storage.values())):
            raise ValueError("quant_aware trains through the stored values: it needs an optimised method and a "
                             f"storage_dtype other than f32 (got method {self.method!r}, storage_dtype "
                             f"{self.storage_dtype!r})")
        for name in ("n_bases", "downsample"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("rank", "iterations", "unroll_steps", "inner_batch_per_class",
                     "real_batch_per_class", "width", "depth", "checkpoint_every", "eval_epochs",
                     "eval_networks", "networks_per_iteration", "stream_buffer_per_class"):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"eval_every must be an int >= 0 (0 = never), got {self.eval_every!r}")
        _one_of("network_batching", self.network_batching, NETWORK_BATCHINGS)
        if self.network_batching == "vmap" and self.objective != "bptt":
            raise ValueError(f"network_batching 'vmap' is implemented for the bptt objective, not "
                             f"{self.objective!r}; use 'loop'")
        if self.network_batching == "vmap" and self.mim_weight > 0:
            raise ValueError("network_batching 'vmap' batches the bptt objective alone and would drop the "
                             "mim add-on; use 'loop' with mim_weight > 0")
        if not isinstance(self.stream_workers, int) or self.stream_workers < 0:
            raise ValueError(f"stream_workers must be an int >= 0, got {self.stream_workers!r}")
        if self.streaming and not self.source.startswith(("wds:", "hf:")):
            raise ValueError(f"streaming reads 'wds:' or 'hf:' sources, got source {self.source!r}")
        if self.streaming and self.zca:
            raise ValueError("zca whitening is fitted on the whole split; it cannot be combined "
                             "with streaming")
        if self.streaming and self.stream_buffer_per_class < self.real_batch_per_class:
            raise ValueError(f"stream_buffer_per_class ({self.stream_buffer_per_class}) must be at "
                             f"least real_batch_per_class ({self.real_batch_per_class})")
        for name in ("gm_outer_loop", "gm_inner_loop"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("inner_lr", "outer_lr", "clip_norm", "label_init_scale", "zca_regularization",
                     "mim_temperature", "collective_timeout"):
            value = getattr(self, name)
            if value is None and name in ("outer_lr", "clip_norm"):
                continue
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("inner_momentum", "outer_momentum"):
            value = getattr(self, name)
            if value is None and name == "outer_momentum":
                continue
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        self._validate_outer()
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if self.resume and not self.checkpoint_dir:
            raise ValueError("resume needs a checkpoint directory (checkpoint_dir / --checkpoint-dir)")
        if not (isinstance(self.mim_weight, (int, float)) and math.isfinite(self.mim_weight)
                and self.mim_weight >= 0):
            raise ValueError(f"mim_weight must be a number >= 0 (0 = off), got {self.mim_weight!r}")
        if self.method == "random-real":
            if self.learn_labels or self.dsa or self.mim_weight:
                raise ValueError("random-real does no optimisation: learn_labels, dsa and mim do "
                                 "not apply")
            if self.objective != "bptt" or self.kind != "pixels":
                raise ValueError(f"random-real stores real pixels and optimises nothing: "
                                 f"objective {self.objective!r} / parameterization {self.kind!r} "
                                 "do not apply (use --method rtp with --objective/--param)")
        if self.method == "pixels" and self.kind != "pixels":
            raise ValueError(f"method 'pixels' is pixels + bptt; it contradicts parameterization "
                             f"{self.kind!r} (use --param {self.kind} without --method pixels)")
        if self.learn_labels and self.objective in LABEL_FREE_OBJECTIVES:
            raise ValueError(f"objective {self.objective!r} never uses labels, so learn_labels "
                             "would learn nothing; drop learn_labels or pick bptt or gm")
        if self.dsa:
            from compressdata.distill.augment import parse_strategy

            parse_strategy(self.dsa_strategy)
        if self.bptt_window is not None:
            _positive_int("bptt_window", self.bptt_window)
            if self.bptt_window > self.unroll_steps:
                raise ValueError(f"bptt_window ({self.bptt_window}) must be at most unroll_steps "
                                 f"({self.unroll_steps}): the unroll lengths are drawn from [window, unroll_steps]")
            if self.objective != "bptt":
                raise ValueError(f"bptt_window truncates the bptt objective's unroll; objective is {self.objective!r}")
            if self.network_batching == "vmap":
                raise ValueError("bptt_window draws an unroll length per network, which vectorised networks "
                                 "cannot share; use network_batching 'loop'")
        if not (isinstance(self.graph_memory_mb, (int, float)) and not isinstance(self.graph_memory_mb, bool)
                and math.isfinite(self.graph_memory_mb) and self.graph_memory_mb >= 0):
            raise ValueError(f"graph_memory_mb must be a number >= 0 (0: always recompute), "
                             f"got {self.graph_memory_mb!r}")
        self._validate_objective()
        return self

    def _validate_outer(self) -> None:
        """The outer optimiser's options: known names, betas for adam only, momentum for sgd only."""
        from compressdata.distill.outer import OPTIMIZERS, SCHEDULES

        if self.outer_optimizer is not None:
            _one_of("outer_optimizer", self.outer_optimizer, OPTIMIZERS)
        if self.outer_schedule is not None:
            _one_of("outer_schedule", self.outer_schedule, SCHEDULES)
        optimizer = self.resolved_optimizer[0]
        if optimizer == "adam" and self.outer_momentum is not None:
            raise ValueError(f"outer_momentum ({self.outer_momentum}) is an sgd option; the adam outer "
                             "optimiser uses outer_betas (--outer-betas B1 B2)")
        if self.outer_betas is None:
            return
        if optimizer != "adam":
            raise ValueError(f"outer_betas are Adam's; the outer optimiser is {optimizer!r} (set outer_optimizer "
                             "'adam', or outer_momentum for sgd)")
        betas = self.outer_betas
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"outer_betas must be two numbers in [0, 1) (beta1, beta2), got {betas!r}")

    def _validate_objective(self) -> None:
        """The mtt_* and dwa_* options (checked whatever the objective, so a bad value never waits)."""
        for name in ("mtt_syn_steps", "mtt_expert_epochs", "mtt_max_start_epoch", "dwa_teacher_width",
                     "dwa_teacher_epochs", "dwa_steps"):
            _positive_int(name, getattr(self, name))
        for name in ("mtt_lr_init", "mtt_lr_lr", "dwa_rho", "dwa_temperature"):
            _positive_number(name, getattr(self, name))
        for name in ("dwa_r_bn", "dwa_first_bn_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.dwa_jitter, int) or self.dwa_jitter < 0:
            raise ValueError(f"dwa_jitter must be an int >= 0 (pixels), got {self.dwa_jitter!r}")
        _one_of("dwa_teacher_arch", self.dwa_teacher_arch, DWA_TEACHER_ARCHS)
        if not isinstance(self.dwa_teacher, str) or not self.dwa_teacher:
            raise ValueError(f"dwa_teacher must be 'train' or a teacher file path, got {self.dwa_teacher!r}")
        if self.objective == "mtt":
            if not self.mtt_expert_dir:
                raise ValueError("objective mtt needs expert trajectories: set mtt_expert_dir "
                                 "(--expert-dir; make them with `compressdata experts`)")
            if self.norm == "batchnorm" or self.arch == "resnet18_bn":
                raise ValueError("objective mtt steps networks functionally: it needs a norm without "
                                 f"running statistics (instancenorm or none), got arch={self.arch!r} "
                                 f"norm={self.norm!r}")
        if self.objective == "dwa" and self.learn_labels:
            raise ValueError("objective dwa labels the synthetic set with the teacher's soft labels: "
                             "learn_labels does not apply")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        """Inverse of `to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown distill options {unknown}")
        if isinstance(d.get("outer_betas"), list):  # JSON has no tuples
            d = {**d, "outer_betas": tuple(d["outer_betas"])}
        return cls(**d)

    def differences(self, other: DistillConfig) -> list[str]:
        """Names of the fields that differ and would change the result of a resumed run (defaults
        compared as resolved, so an explicit default equals an omitted one)."""
        mine, theirs = self.resolved().to_dict(), other.resolved().to_dict()
        free = self.resumable_changes
        return sorted(k for k in mine if mine[k] != theirs[k] and k not in free)

    @property
    def resumable_changes(self) -> frozenset[str]:
        """RESUMABLE_CHANGES, less `iterations` under a cosine schedule (its lr depends on them)."""
        if self.resolved_optimizer[2] == "cosine":
            return RESUMABLE_CHANGES - {"iterations"}
        return RESUMABLE_CHANGES


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")


def _positive_number(name: str, value: Any) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
