"""`DistillConfig`: every hyper-parameter of a distillation run as plain values in nested groups.

A run combines three axes: the parameterization (`pixels`, `memory`, `lowrank`), the objective
(`bptt`, `dm`, `gm`, ...) and add-on losses (`mim.weight` > 0). `method` is a preset of the first
two: `rtp` = memory + bptt (addressable memories, the default), `pixels` = pixels + bptt,
`random-real` = no optimisation; `parameterization.kind` and `objective` override the preset.

The groups (`distill.options`): data, parameterization, model, inner (loop), outer (step), run (seed,
device, checkpoints), scale (scale-out), and one per objective or add-on that has options (`gm`, `mtt`,
`dwa`, `mim`, registered by the objective). A field's flat name (`inner.lr` is `inner_lr`) is the key
recorded in banks' provenance and checkpoints: `to_dict` / `from_dict` read and write those.

Defaults follow the official RTP code (Deng & Russakovsky, NeurIPS 2022): inner SGD lr 0.01 momentum
0.9, 32 synthetic examples per class per inner step, a real batch of 64 per class, K = 16 bases at
downsampling 2, ConvNet-128. The outer SGD step (lr, momentum, clip) defaults per objective and
parameterization (`OUTER_DEFAULTS`, `PARAM_OUTER_DEFAULTS`) unless given; dwa uses Adam with a cosine
schedule instead (`OPTIMIZER_DEFAULTS`, `resolved_optimizer`), as its paper (Du et al., NeurIPS 2024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from compressdata.distiller.options import (
    ADDONS,
    GROUPS,
    INITS,
    KINDS,
    NETWORK_BATCHINGS,
    OBJECTIVES,
    DataOptions,
    InnerOptions,
    ModelOptions,
    OuterOptions,
    ParameterizationOptions,
    RunOptions,
    ScaleOptions,
    flat_names,
    non_negative_int,
    non_negative_number,
    one_of,
    option_groups,
    positive_int,
    positive_number,
)
from compressdata.errors import ConfigError, UsageError
from compressdata.models import ARCHITECTURES, NORMS
from compressdata.params.base import PARAMETERIZATIONS
from compressdata.params.quant import TensorStorage, parse_storage

METHODS = ("rtp", "pixels", "random-real")
KIND_OF_METHOD = {"rtp": "memory", "pixels": "pixels", "random-real": "pixels"}
PRESETS = {("memory", "bptt"): "rtp", ("pixels", "bptt"): "pixels"}
MEMORY_ONLY_INITS = ("pca", "kmeans")
# Objectives that never look at the labels, so learned labels would get no gradient.
LABEL_FREE_OBJECTIVES = ("dm",)

# Outer SGD (lr, momentum, clip norm; None = no clip) per objective: bptt as the RTP code; dm as the
# DM code (lr_img 1, momentum 0.5, no clip); gm as DC/DSA (lr_img 0.1, momentum 0.5, no clip); mtt and
# dwa as chosen on the CPU protocol of docs/methods-mtt-dwa.md (MTT's code uses lr_img 100-1000).
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
# The outer optimiser per objective (others: sgd): dwa uses Adam betas (0.5, 0.9) with a cosine schedule
# as its official code; the choice and Adam's lr are explained in docs/methods-mtt-dwa.md.
OPTIMIZER_DEFAULTS: dict[str, str] = {"dwa": "adam"}
ADAM_BETAS = (0.5, 0.9)
# Adam's outer lr (any objective: Adam's step is per coordinate and independent of the gradient's scale).
ADAM_OUTER_LR = 0.05

# Fields (flat names) that may change between a run and its resumption without changing the result.
RESUMABLE_CHANGES = frozenset({
    "iterations", "checkpoint_dir", "checkpoint_every", "resume", "eval_every", "eval_epochs",
    "eval_networks", "device", "network_batching", "collective_timeout", "download", "profile",
})


def _default_objective_options() -> dict[str, Any]:
    return {name: cls() for name, cls in option_groups().items() if name not in GROUPS}


@dataclass(frozen=True)
class DistillConfig:
    """One distillation run. `objective_options` holds the option groups the objectives and add-ons
    registered, by name; `config.mtt` (any registered name) is a shorthand for them."""

    method: str = "rtp"
    objective: str = "bptt"
    data: DataOptions = field(default_factory=DataOptions)
    parameterization: ParameterizationOptions = field(default_factory=ParameterizationOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    inner: InnerOptions = field(default_factory=InnerOptions)
    outer: OuterOptions = field(default_factory=OuterOptions)
    run: RunOptions = field(default_factory=RunOptions)
    scale: ScaleOptions = field(default_factory=ScaleOptions)
    objective_options: Mapping[str, Any] = field(default_factory=_default_objective_options)

    def __post_init__(self) -> None:
        defaults = _default_objective_options()
        unknown = sorted(set(self.objective_options) - set(defaults))
        if unknown:
            raise ConfigError(f"unknown option group(s) {unknown}; known: {sorted(defaults)}")
        object.__setattr__(self, "objective_options", {**defaults, **self.objective_options})

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("objective_options", {})
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    # ---- flat names: the keys of provenance and checkpoints ---------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values under their flat names (the keys banks and checkpoints record)."""
        out: dict[str, Any] = {"method": self.method, "objective": self.objective}
        for group, options in self._groups().items():
            names = flat_names(group, type(options))
            out.update({names[k]: v for k, v in asdict(options).items()})
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DistillConfig:
        """Inverse of `to_dict`: a config from flat names (missing ones take their defaults); unknown
        keys are a ConfigError."""
        where = {"method": (None, "method"), "objective": (None, "objective")}
        for group, options_cls in option_groups().items():
            where.update({name: (group, key) for key, name in flat_names(group, options_cls).items()})
        unknown = sorted(set(d) - set(where))
        if unknown:
            raise ConfigError(f"unknown distill options {unknown}")
        grouped: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for name, value in d.items():
            group, key = where[name]
            if name == "outer_betas" and isinstance(value, list):  # JSON has no tuples
                value = tuple(value)
            if group is None:
                top[key] = value
            else:
                grouped.setdefault(group, {})[key] = value
        groups = option_groups()
        built = {g: groups[g](**values) for g, values in grouped.items()}
        fixed = {g: v for g, v in built.items() if g in GROUPS}
        return cls(**top, **fixed, objective_options={g: v for g, v in built.items() if g not in GROUPS})

    @classmethod
    def from_flat(cls, **options: Any) -> DistillConfig:
        """`from_dict(options)`: a config from keyword arguments named by the flat names."""
        return cls.from_dict(options)

    def replace(self, **options: Any) -> DistillConfig:
        """A copy with the options given by their flat names changed."""
        return type(self).from_dict({**self.to_dict(), **options})

    def _groups(self) -> dict[str, Any]:
        return {**{g: getattr(self, g) for g in GROUPS}, **self.objective_options}

    # ---- what the defaults resolve to ---------------------------------------------------------
    @property
    def kind(self) -> str:
        """The parameterization actually used (`parameterization.kind`, else the method's)."""
        return self.parameterization.kind or KIND_OF_METHOD.get(self.method, "memory")

    @property
    def storage(self) -> dict[str, TensorStorage]:
        """Each stored tensor's dtype (`params.quant.parse_storage` of parameterization.storage_dtype)."""
        return parse_storage(self.parameterization.storage_dtype, PARAMETERIZATIONS[self.kind].tensor_names)

    @property
    def active_addons(self) -> dict[str, Any]:
        """The add-ons switched on (their options say so), by name."""
        return {name: self.objective_options[name] for name in ADDONS if self.objective_options[name].enabled}

    @property
    def method_name(self) -> str:
        """The name recorded in provenance: the preset (rtp, pixels, random-real) when the axes
        match one, else objective-parameterization (e.g. dm-lowrank); "+mim" per add-on."""
        if self.method == "random-real":
            return self.method
        name = PRESETS.get((self.kind, self.objective), f"{self.objective}-{self.kind}")
        return name + "".join(f"+{addon}" for addon in self.active_addons)

    @property
    def addons(self) -> dict[str, dict[str, Any]]:
        """The add-on losses switched on, with their options (as recorded in provenance)."""
        return {name: asdict(options) for name, options in self.active_addons.items()}

    @property
    def resolved_init(self) -> str:
        """The initialisation actually used (rtp: random as its official code; else real)."""
        if self.parameterization.init is not None:
            return self.parameterization.init
        return "random" if self.method == "rtp" and self.kind == "memory" and self.objective == "bptt" else "real"

    @property
    def resolved_optimizer(self) -> tuple[str, tuple[float, float] | None, str]:
        """(outer optimiser, Adam betas (None for sgd), lr schedule) actually used: the given values,
        else the objective's (dwa: adam, betas (0.5, 0.9), cosine; others: sgd, constant)."""
        outer = self.outer
        optimizer = outer.optimizer or OPTIMIZER_DEFAULTS.get(self.objective, "sgd")
        adam = optimizer == "adam"
        betas = (tuple(float(b) for b in outer.betas) if outer.betas is not None else ADAM_BETAS) if adam else None
        default_schedule = "cosine" if adam and self.objective == "dwa" else "constant"
        return optimizer, betas, outer.schedule or default_schedule

    @property
    def resolved_outer(self) -> tuple[float, float | None, float]:
        """(outer lr, outer momentum (None for adam), clip norm) actually used: the given values, else
        the parameterization's, else the objective's defaults (adam: lr ADAM_OUTER_LR); clip inf = no
        clipping."""
        outer = self.outer
        lr, momentum, clip = OUTER_DEFAULTS.get(self.objective, FALLBACK_OUTER)
        clip = outer.clip_norm if outer.clip_norm is not None else clip
        clip = math.inf if clip is None else clip
        if self.resolved_optimizer[0] == "adam":
            return (outer.lr if outer.lr is not None else ADAM_OUTER_LR), None, clip
        param = PARAM_OUTER_DEFAULTS.get(self.kind, {})
        lr = outer.lr if outer.lr is not None else param.get("outer_lr", lr)
        momentum = outer.momentum if outer.momentum is not None else param.get("outer_momentum", momentum)
        return lr, momentum, clip

    def resolved(self) -> DistillConfig:
        """A copy with every default replaced by the value actually used (clip_norm None then
        means no clipping); the registered groups resolve their own (`resolved(config)`)."""
        lr, momentum, clip = self.resolved_outer
        optimizer, betas, schedule = self.resolved_optimizer
        outer = replace(self.outer, lr=lr, momentum=momentum, clip_norm=None if math.isinf(clip) else clip,
                        optimizer=optimizer, betas=betas, schedule=schedule)
        options = {name: o.resolved(self) if hasattr(o, "resolved") else o
                   for name, o in self.objective_options.items()}
        return replace(self, parameterization=replace(self.parameterization, kind=self.kind, init=self.resolved_init),
                       outer=outer, objective_options=options)

    def recorded_hyperparameters(self) -> dict[str, Any]:
        """The resolved options that shaped the result, for the bank's provenance: not those that
        may change on resume (except iterations), nor other objectives' or unused add-ons' options,
        nor the budget not given (budget_ipc or budget_bytes)."""
        unused = [f"{name}_" for name in self.objective_options
                  if name != self.objective and name not in self.active_addons]
        unused += [p for p, on in (("stream_", self.scale.streaming), ("zca_", self.data.zca),
                                   ("dsa_", self.data.dsa)) if not on]
        budget = {"budget_ipc"} if self.parameterization.budget_bytes is not None else {"budget_bytes"}
        return {k: v for k, v in self.resolved().to_dict().items()
                if (k not in RESUMABLE_CHANGES or k == "iterations") and not k.startswith(tuple(unused))
                and k not in budget}

    def differences(self, other: DistillConfig) -> list[str]:
        """Flat names of the options that differ and would change the result of a resumed run
        (defaults compared as resolved, so an explicit default equals an omitted one)."""
        mine, theirs = self.resolved().to_dict(), other.resolved().to_dict()
        free = self.resumable_changes
        return sorted(k for k in mine if mine[k] != theirs[k] and k not in free)

    @property
    def resumable_changes(self) -> frozenset[str]:
        """RESUMABLE_CHANGES, less `iterations` under a cosine schedule (its lr depends on them)."""
        if self.resolved_optimizer[2] == "cosine":
            return RESUMABLE_CHANGES - {"iterations"}
        return RESUMABLE_CHANGES

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> DistillConfig:
        """Raise ConfigError naming the first bad option (what, expected, got); return self."""
        one_of("method", self.method, METHODS)
        one_of("objective", self.objective, tuple(OBJECTIVES))
        self._validate_data()
        self._validate_parameterization()
        one_of("arch", self.model.arch, ARCHITECTURES)
        one_of("norm", self.model.norm, NORMS)
        positive_int("width", self.model.width)
        positive_int("depth", self.model.depth)
        self._validate_inner()
        self._validate_outer()
        self._validate_run()
        self._validate_scale()
        self._validate_method()
        for options in self.objective_options.values():
            options.validate(self)
        return self

    def _validate_data(self) -> None:
        data = self.data
        one_of("split", data.split, ("train", "test"))
        positive_number("zca_regularization", data.zca_regularization)
        if data.dsa:
            from compressdata.augment import parse_strategy

            parse_strategy(data.dsa_strategy)

    def _validate_parameterization(self) -> None:
        p = self.parameterization
        if p.kind is not None:
            one_of("parameterization", p.kind, KINDS)
        if p.init is not None:
            one_of("init", p.init, INITS)
            if p.init in MEMORY_ONLY_INITS and self.kind != "memory":
                raise ConfigError(f"init {p.init!r} fits bases and addresses (parameterization memory); "
                                  f"the parameterization is {self.kind!r}: use init 'real' or 'random'")
        if not (isinstance(p.budget_ipc, (int, float)) and math.isfinite(p.budget_ipc) and p.budget_ipc > 0):
            raise ConfigError(f"budget_ipc must be a positive number, got {p.budget_ipc!r}")
        if p.budget_bytes is not None:
            positive_int("budget_bytes", p.budget_bytes)
        if not isinstance(p.storage_dtype, str):
            raise ConfigError(f"storage_dtype must be a string such as 'int8' or 'bases=f16,addresses=int8', "
                              f"got {p.storage_dtype!r}")
        try:
            storage = self.storage
        except UsageError as e:
            raise ConfigError(f"storage_dtype: {e}") from None
        if p.quant_aware and (self.method == "random-real" or all(s.dtype == "f32" for s in storage.values())):
            raise ConfigError("quant_aware trains through the stored values: it needs an optimised method and a "
                              f"storage_dtype other than f32 (got method {self.method!r}, storage_dtype "
                              f"{p.storage_dtype!r})")
        for name in ("n_bases", "downsample"):
            if getattr(p, name) is not None:
                positive_int(name, getattr(p, name))
        positive_int("rank", p.rank)
        positive_number("label_init_scale", p.label_init_scale)
        if p.learn_labels and self.objective in LABEL_FREE_OBJECTIVES:
            raise ConfigError(f"objective {self.objective!r} never uses labels, so learn_labels "
                              "would learn nothing; drop learn_labels or pick bptt or gm")

    def _validate_inner(self) -> None:
        inner = self.inner
        for name, value in (("unroll_steps", inner.unroll_steps), ("inner_batch_per_class", inner.batch_per_class)):
            positive_int(name, value)
        positive_number("inner_lr", inner.lr)
        if not (isinstance(inner.momentum, (int, float)) and 0 <= inner.momentum < 1):
            raise ConfigError(f"inner_momentum must be in [0, 1), got {inner.momentum!r}")
        if inner.bptt_window is not None:
            positive_int("bptt_window", inner.bptt_window)
            if inner.bptt_window > inner.unroll_steps:
                raise ConfigError(f"bptt_window ({inner.bptt_window}) must be at most unroll_steps "
                                  f"({inner.unroll_steps}): the unroll lengths are drawn from [window, unroll_steps]")
            if self.objective != "bptt":
                raise ConfigError(f"bptt_window truncates the bptt objective's unroll; objective is {self.objective!r}")
            if self.scale.network_batching == "vmap":
                raise ConfigError("bptt_window draws an unroll length per network, which vectorised networks "
                                  "cannot share; use network_batching 'loop'")
        non_negative_number("graph_memory_mb", inner.graph_memory_mb)

    def _validate_outer(self) -> None:
        """The outer optimiser's options: known names, betas for adam only, momentum for sgd only."""
        outer = self.outer
        positive_int("iterations", outer.iterations)
        positive_int("real_batch_per_class", outer.real_batch_per_class)
        for name, value in (("outer_lr", outer.lr), ("clip_norm", outer.clip_norm)):
            if value is not None:
                positive_number(name, value)
        if outer.momentum is not None and not (isinstance(outer.momentum, (int, float)) and 0 <= outer.momentum < 1):
            raise ConfigError(f"outer_momentum must be in [0, 1), got {outer.momentum!r}")
        if outer.optimizer is not None:
            one_of("outer_optimizer", outer.optimizer, ("sgd", "adam"))
        if outer.schedule is not None:
            one_of("outer_schedule", outer.schedule, ("constant", "cosine"))
        optimizer = self.resolved_optimizer[0]
        if optimizer == "adam" and outer.momentum is not None:
            raise ConfigError(f"outer_momentum ({outer.momentum}) is an sgd option; the adam outer "
                              "optimiser uses outer_betas (outer.betas)")
        if outer.betas is None:
            return
        if optimizer != "adam":
            raise ConfigError(f"outer_betas are Adam's; the outer optimiser is {optimizer!r} (set outer_optimizer "
                              "'adam', or outer_momentum for sgd)")
        betas = outer.betas
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            raise ConfigError(f"outer_betas must be two numbers in [0, 1) (beta1, beta2), got {betas!r}")

    def _validate_run(self) -> None:
        run = self.run
        non_negative_int("seed", run.seed)
        for name in ("checkpoint_every", "eval_epochs", "eval_networks"):
            positive_int(name, getattr(run, name))
        non_negative_int("eval_every", run.eval_every, " (0 = never)")
        if run.resume and not run.checkpoint_dir:
            raise ConfigError("resume needs a checkpoint directory (checkpoint_dir, run.checkpoint_dir)")

    def _validate_scale(self) -> None:
        scale = self.scale
        positive_int("networks_per_iteration", scale.networks_per_iteration)
        positive_int("stream_buffer_per_class", scale.stream_buffer_per_class)
        positive_number("collective_timeout", scale.collective_timeout)
        one_of("network_batching", scale.network_batching, NETWORK_BATCHINGS)
        if scale.network_batching == "vmap" and self.objective != "bptt":
            raise ConfigError(f"network_batching 'vmap' is implemented for the bptt objective, not "
                              f"{self.objective!r}; use 'loop'")
        if scale.network_batching == "vmap" and self.active_addons:
            raise ConfigError("network_batching 'vmap' batches the bptt objective alone and would drop the "
                              f"{', '.join(self.active_addons)} add-on; use 'loop'")
        non_negative_int("stream_workers", scale.stream_workers)
        if scale.streaming and not self.data.source.startswith(("wds:", "hf:")):
            raise ConfigError(f"streaming reads 'wds:' or 'hf:' sources, got source {self.data.source!r}")
        if scale.streaming and self.data.zca:
            raise ConfigError("zca whitening is fitted on the whole split; it cannot be combined with streaming")
        if scale.streaming and scale.stream_buffer_per_class < self.outer.real_batch_per_class:
            raise ConfigError(f"stream_buffer_per_class ({scale.stream_buffer_per_class}) must be at "
                              f"least real_batch_per_class ({self.outer.real_batch_per_class})")

    def _validate_method(self) -> None:
        if self.method == "random-real":
            if self.parameterization.learn_labels or self.data.dsa or self.active_addons:
                raise ConfigError("random-real does no optimisation: learn_labels, dsa and add-ons do not apply")
            if self.objective != "bptt" or self.kind != "pixels":
                raise ConfigError(f"random-real stores real pixels and optimises nothing: "
                                  f"objective {self.objective!r} / parameterization {self.kind!r} "
                                  "do not apply (use method rtp with objective / parameterization.kind)")
        if self.method == "pixels" and self.kind != "pixels":
            raise ConfigError(f"method 'pixels' is pixels + bptt; it contradicts parameterization {self.kind!r} "
                              f"(set parameterization.kind {self.kind} without method pixels)")


def config_fields() -> list[tuple[str, str, str]]:
    """(group, field, flat name) of every option, for the command line and the docs."""
    out = [("", "method", "method"), ("", "objective", "objective")]
    for group, cls in option_groups().items():
        names = flat_names(group, cls)
        out += [(group, f.name, names[f.name]) for f in fields(cls)]
    return out
