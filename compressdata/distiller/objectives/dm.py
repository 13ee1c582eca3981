"""Objective `dm`: distribution matching (DM: Zhao & Bilen, WACV 2023).

Every iteration draws a fresh randomly initialised network (never trained) and embeds a real class
batch and the synthetic examples of the class with its features before the classifier; the loss is
the sum over classes of the squared distance between the two mean embeddings. With DSA, each class
draws one augmentation applied to both batches (siamese). Gradients for theta by plain autograd
through the decode; the loss sums over classes as the DM code does, so its lr_img 1 is our outer lr.
"""

from __future__ import annotations

import torch
from torch import nn

from compressdata.distiller.objectives.base import ObjectiveResult, draw_seeds
from compressdata.distiller.objectives.grads import class_rows, leaf_copy, theta_grads
from compressdata.distiller.options import register_objective
from compressdata.distiller.run import DistillRun, autocast, fresh_network, shared_augment

register_objective("dm")


def mean_embedding_distance(embed: nn.Module | object, x_real: torch.Tensor,
                            x_syn: torch.Tensor) -> torch.Tensor:
    """||mean(embed(x_real)) - mean(embed(x_syn))||^2 (the real side carries no gradient)."""
    with torch.no_grad():
        real = embed(x_real).float().mean(0)
    return (real - embed(x_syn).float().mean(0)).pow(2).sum()


def dm_objective(run: DistillRun, theta: dict[str, torch.Tensor],
                 generator: torch.Generator) -> ObjectiveResult:
    """Summed per-class mean-embedding distance on a fresh random network, and its gradients."""
    config = run.config
    n_classes = run.data.num_classes
    seeds = draw_seeds(generator, 3 + n_classes)
    module, _ = fresh_network(config, run.data.image_shape, n_classes, seeds[0], run.device)
    module.requires_grad_(False)
    x_real, y_real = run.real.batch(config.outer.real_batch_per_class,
                                    torch.Generator().manual_seed(seeds[1]))
    leaves = leaf_copy(theta)
    index = run.synthetic.sample_index(config.inner.batch_per_class,
                                       torch.Generator().manual_seed(seeds[2])).to(run.device)
    x_syn = run.synthetic.decode(leaves, index)
    y_syn = index // run.synthetic.per_class
    loss = x_syn.new_zeros(())
    with autocast(config, run.device):
        for c in range(n_classes):
            real_c, syn_c = x_real[class_rows(y_real, c)], x_syn[class_rows(y_syn, c)]
            augment = shared_augment(config, seeds[3 + c])
            if augment is not None:
                real_c, syn_c = augment(real_c, generator), augment(syn_c, generator)
            loss = loss + mean_embedding_distance(module.embed, real_c, syn_c)
    value = float(loss.detach())
    return ObjectiveResult(value, theta_grads(loss, leaves), {"dm_loss_per_class": value / n_classes})
