"""Memory banks initialised from real Fashion-MNIST images: SVD, PCA and k-means fits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compressdata.data.sampler import ClassBalancedSampler
from compressdata.data.sources import load_source
from compressdata.distiller import memory_init
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.synthetic import SyntheticSet, init_theta, random_real_subset
from compressdata.params import layout_for_budget

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def real():
    data = load_source("fashion-mnist", "train").subset(torch.arange(4000))
    return ClassBalancedSampler(data.images, data.labels, data.num_classes), data.image_shape


@pytest.mark.parametrize("init", ["real", "pca", "kmeans"])
def test_fits_reconstruct_real_images_far_better_than_random(real, init):
    sampler, shape = real
    layout = layout_for_budget("memory", 1, 10, shape, n_bases=24, downsample=2)
    synthetic = SyntheticSet("memory", 10, layout.per_class, shape[1:])
    theta = init_theta(synthetic, layout, init, sampler, torch.Generator().manual_seed(0), shape)
    assert theta["bases"].shape == (24, 1, 14, 14) and theta["addresses"].shape == (synthetic.size, 24)
    decoded = synthetic.decode(theta)
    target = F.interpolate(F.avg_pool2d(_rows(sampler, synthetic), 2), size=(28, 28), mode="bilinear",
                           align_corners=False)
    error = float((decoded - target).norm() / target.norm())
    assert error < 0.45, (init, error)
    random = init_theta(synthetic, layout, "random", sampler, torch.Generator().manual_seed(0), shape)
    assert float((synthetic.decode(random) - target).norm() / target.norm()) > 0.9
    norms = theta["bases"].flatten(1).norm(dim=1), theta["addresses"].norm(dim=0)
    torch.testing.assert_close(norms[0], norms[1], rtol=1e-4, atol=1e-6)  # balanced factors


def _rows(sampler, synthetic):
    """The real rows every fit approximates: the first draw from the init's generator."""
    images, _ = random_real_subset(sampler, synthetic.per_class, torch.Generator().manual_seed(0))
    return images


def test_kmeans_centroids_are_cluster_means():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    found = memory_init.kmeans_bases(points, 3, torch.Generator().manual_seed(1)).float()
    for centre in centres:
        assert float((found - centre).norm(dim=1).min()) < 0.1


def test_pca_and_kmeans_inits_are_for_memory_banks():
    with pytest.raises(ValueError, match="init 'pca' fits bases and addresses"):
        DistillConfig.from_flat(method="pixels", init="pca").validate()
    DistillConfig.from_flat(method="rtp", init="kmeans").validate()
