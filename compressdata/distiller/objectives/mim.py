"""Add-on `mim`: the contrastive mutual-information loss of MIM4DD (Shang et al., NeurIPS 2023).

On a fresh random network, the feature maps of every layer (ConvNet: every block's output; other
networks: the embedding) of a real class-balanced batch and of synthetic examples are flattened and
L2-normalised. For each layer an NCE loss treats every synthetic example as an anchor, the real
examples of its class as positives and all other real examples as negatives (logits = cosine /
temperature); the layer losses are averaged. Only the synthetic side carries gradient. `with_mim`
wraps any objective and adds weight * this loss and its gradients to the objective's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compressdata.distiller.objectives.base import Objective, ObjectiveResult, draw_seeds
from compressdata.distiller.objectives.grads import add_grads, leaf_copy, theta_grads
from compressdata.distiller.options import non_negative_number, positive_number, register_addon
from compressdata.distiller.run import DistillRun, autocast, fresh_network, shared_augment
from compressdata.errors import UsageError


@dataclass(frozen=True)
class MIMOptions:
    """mim: the contrastive mutual-information add-on (MIM4DD), on with a weight > 0."""

    weight: float = 0.0
    """weight of the MIM contrastive add-on loss (0: off)"""
    temperature: float = 0.1
    """temperature of the MIM NCE loss"""

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def validate(self, config: Any) -> None:
        non_negative_number("mim_weight", self.weight)
        positive_number("mim_temperature", self.temperature)


register_addon("mim", MIMOptions)

def nce_loss(syn: torch.Tensor, real: torch.Tensor, syn_labels: torch.Tensor,
             real_labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over synthetic anchors of -mean_{real positives} log softmax(cos / temperature).

    syn [m, d], real [n, d] features (normalised here); labels int [m], [n]. Anchors whose class has
    no real example in the batch are skipped; ValueError when none has one."""
    if temperature <= 0:
        raise UsageError(f"temperature must be > 0, got {temperature}")
    logits = F.normalize(syn.float().flatten(1), dim=1) @ \
        F.normalize(real.float().flatten(1), dim=1).T / temperature
    positive = (syn_labels.unsqueeze(1) == real_labels.unsqueeze(0)).float()
    counts = positive.sum(1)
    if not bool((counts > 0).any()):
        raise UsageError("no synthetic example has a real example of its class in the batch")
    log_prob = F.log_softmax(logits, dim=1)
    per_anchor = -(positive * log_prob).sum(1) / counts.clamp(min=1)
    return per_anchor[counts > 0].mean()


def layer_features(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's feature map when the network exposes them (`feature_maps`), else its embedding."""
    if hasattr(module, "feature_maps"):
        return module.feature_maps(x)
    return [module.embed(x)]


def mim_loss(run: DistillRun, leaves: dict[str, torch.Tensor], generator: torch.Generator,
             temperature: float) -> torch.Tensor:
    """The layer-averaged NCE loss between a real batch and sampled synthetic examples (differentiable
    in `leaves`)."""
    config = run.config
    net_seed, real_seed, syn_seed, augment_seed = draw_seeds(generator, 4)
    module, _ = fresh_network(config, run.data.image_shape, run.data.num_classes, net_seed,
                              run.device)
    module.requires_grad_(False)
    x_real, y_real = run.real.batch(config.outer.real_batch_per_class,
                                    torch.Generator().manual_seed(real_seed))
    index = run.synthetic.sample_index(config.inner.batch_per_class,
                                       torch.Generator().manual_seed(syn_seed)).to(run.device)
    x_syn = run.synthetic.decode(leaves, index)
    augment = shared_augment(config, augment_seed)
    if augment is not None:
        x_real, x_syn = augment(x_real, generator), augment(x_syn, generator)
    with autocast(config, run.device):
        with torch.no_grad():
            real_maps = layer_features(module, x_real)
        syn_maps = layer_features(module, x_syn)
    y_syn = index // run.synthetic.per_class
    losses = [nce_loss(s, r, y_syn, y_real, temperature)
              for s, r in zip(syn_maps, real_maps, strict=True)]
    return torch.stack(losses).mean()


def with_mim(objective: Objective, weight: float, temperature: float) -> Objective:
    """`objective` plus weight * the MIM loss (loss and gradients added; metric `mim_loss`)."""

    def wrapped(run: DistillRun, theta: dict[str, torch.Tensor],
                generator: torch.Generator) -> ObjectiveResult:
        result = objective(run, theta, generator)
        leaves = leaf_copy(theta)
        loss = mim_loss(run, leaves, generator, temperature)
        grads = add_grads(result.grads, theta_grads(loss, leaves), weight)
        metrics = {**result.metrics, "host_loss": result.loss, "mim_loss": float(loss.detach())}
        return ObjectiveResult(result.loss + weight * float(loss.detach()), grads, metrics)

    return wrapped
