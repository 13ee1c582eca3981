"""`DistillRun`: what stays fixed during a distillation run, and the helpers every objective uses
(fresh networks, the shared DSA augmentation, autocast)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compressdata.data.sampler import BalancedSampler
from compressdata.data.sources import RealData
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.synthetic import Augment, SyntheticSet
from compressdata.models import build_model
from compressdata.params import Layout


@dataclass
class DistillRun:
    """The fixed parts of a run: its config, device, real data (and a class-balanced sampler of
    it), the synthetic set's shape and the storage layout; `test` is loaded on first use; `cache`
    holds what an objective computes once per run (loaded experts, a teacher), rebuilt on resume."""

    config: DistillConfig
    device: torch.device
    data: RealData
    real: BalancedSampler
    synthetic: SyntheticSet
    layout: Layout
    test: RealData | None = None
    cache: dict[str, Any] = field(default_factory=dict)


def fresh_network(config: DistillConfig, image_shape: tuple[int, int, int], num_classes: int,
                  seed: int, device: torch.device) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A newly initialised network drawn from `seed` (the global RNG is left as it was)."""
    c, h, w = image_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build_model(config.model.arch, c, num_classes, (h, w), width=config.model.width,
                             depth=config.model.depth, norm=config.model.norm)
    module = module.to(device).train()
    return module, {k: p.detach() for k, p in module.named_parameters()}


def autocast(config: DistillConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast when config.run.amp (CPU or CUDA), else a no-op context."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=config.run.amp)


def shared_augment(config: DistillConfig, seed: int) -> Augment | None:
    """DSA with parameters drawn from `seed`, shared by every batch it is applied to within one
    iteration (siamese: real and synthetic batches see the same transformation); None without DSA."""
    if not config.data.dsa:
        return None
    from compressdata.augment import dsa

    def augment(x: torch.Tensor, _generator: torch.Generator) -> torch.Tensor:
        return dsa(x, config.data.dsa_strategy, seed=seed)

    return augment
