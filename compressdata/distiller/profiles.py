"""Device-sized defaults of `compressdata distill`: the profiles `gpu` and `cpu`.

`gpu` is the official protocol, the option groups' own defaults (ConvNet-128, T = 50, 2000 outer
iterations: hours on a CPU). `cpu` is the CPU protocol of docs/benchmarks.md that the README's first
command spells out (rtp at IPC 1 in about 6 minutes on 2 idle cores): ConvNet-16, T = 20, 10 synthetic and
32 real examples per class, 200 iterations, real initialisation; for the bptt objective inner lr 0.03;
for addressable memories 24 bases at half resolution, and with bptt (rtp) Adam with outer lr 0.01.

A profile only supplies defaults: every option given on the command line or in a --config file keeps its
value. Options that only make sense together form a bundle that applies only when none of its options
was given (an explicit `--outer-lr 30` keeps the objective's own optimiser, not Adam at lr 30).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROFILES = ("cpu", "gpu")


@dataclass(frozen=True)
class Bundle:
    """Defaults (dotted option -> value) that apply together, when the run matches `objectives` / `kinds`
    (None: any) and none of `guards` (dotted options whose plain default is None) was given."""

    values: Mapping[str, Any]
    guards: tuple[str, ...] = ()
    objectives: tuple[str, ...] | None = None
    kinds: tuple[str, ...] | None = None
    not_objectives: tuple[str, ...] = ()

    def applies(self, objective: str, kind: str, given: Mapping[str, Any]) -> bool:
        return ((self.objectives is None or objective in self.objectives) and objective not in self.not_objectives
                and (self.kinds is None or kind in self.kinds) and all(given.get(g) is None for g in self.guards))


CPU_BUNDLES = (
    Bundle({"inner.unroll_steps": 20, "inner.batch_per_class": 10, "outer.real_batch_per_class": 32,
            "outer.iterations": 200, "parameterization.init": "real"}),
    Bundle({"model.width": 16}, not_objectives=("mtt",)),  # mtt takes its network from the experts
    Bundle({"inner.lr": 0.03}, objectives=("bptt",)),
    Bundle({"outer.optimizer": "adam", "outer.lr": 0.01}, objectives=("bptt",), kinds=("memory",),
           guards=("outer.optimizer", "outer.lr", "outer.momentum", "outer.betas", "outer.schedule")),
    Bundle({"parameterization.n_bases": 24, "parameterization.downsample": 2}, kinds=("memory",),
           guards=("parameterization.n_bases", "parameterization.downsample", "parameterization.budget_bytes")),
)


def default_profile(device: str | None) -> str:
    """The profile of a run on `device`: gpu on CUDA (asked for, or the default with a GPU present), else cpu."""
    if device is not None:
        return "gpu" if device.startswith("cuda") else "cpu"
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def profile_defaults(profile: str, objective: str, kind: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """{dotted option: default} of `profile` for a run of `objective` on parameterization `kind`; `given`
    holds the options as parsed without the profile (dotted names), so that a bundle with a given option
    stays out."""
    if profile == "gpu":
        return {}
    out: dict[str, Any] = {}
    for bundle in CPU_BUNDLES:
        if bundle.applies(objective, kind, given):
            out.update(bundle.values)
    return out
