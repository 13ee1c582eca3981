"""DSA: op semantics, differentiability (also second order), siamese equality, seeding."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, grad

from compressdata.augment import (
    DEFAULT_STRATEGY,
    OPS,
    DSAParams,
    DSASample,
    dsa,
    flip_rotate,
    parse_strategy,
    sample_dsa,
)
from compressdata.models import build_model


@pytest.fixture(scope="module")
def real(fashion_mnist_train) -> torch.Tensor:
    """24 real normalised Fashion-MNIST images."""
    return fashion_mnist_train.images[:24].clone()


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shared", [True, False])
def test_every_op_keeps_the_shape_and_changes_real_images(op, shared, real):
    changed = 0
    for seed in range(6):
        s = sample_dsa(op, real.shape[0], (28, 28), torch.Generator().manual_seed(seed),
                       shared=shared)
        assert s.op == op
        assert all(v.shape == ((1,) if shared else (real.shape[0],)) for v in s.draws.values())
        out = s.apply(real)
        assert out.shape == real.shape and out.dtype == real.dtype
        changed += not torch.allclose(out, real)
    assert changed >= 2  # flip can draw "no flip"; every op changes images for most draws


@pytest.mark.parametrize("op", OPS)
def test_ops_are_differentiable_twice(op):
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    s = sample_dsa(op, 2, (6, 6), torch.Generator().manual_seed(5), shared=False)
    assert torch.autograd.gradcheck(s.apply, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda t: s.apply(t) ** 2, (x,), fast_mode=True)


def test_siamese_calls_share_the_transform_across_batch_sizes(real):
    syn = real[:5]
    for seed in range(30):
        torch.testing.assert_close(dsa(real, seed=seed)[:5], dsa(syn, seed=seed),
                                   rtol=0, atol=1e-6)
        a = sample_dsa(DEFAULT_STRATEGY, 5, (28, 28), torch.Generator().manual_seed(seed))
        torch.testing.assert_close(a.apply(real)[:5], a.apply(syn), rtol=0, atol=1e-6)


def test_seeds_are_deterministic_and_vary(real):
    outs = [dsa(real, seed=s) for s in range(12)]
    assert all(torch.equal(o, dsa(real, seed=s)) for s, o in enumerate(outs))
    distinct = {tuple(o.flatten()[::97].tolist()) for o in outs}
    assert len(distinct) >= 8
    ops = {sample_dsa(DEFAULT_STRATEGY, 1, (28, 28), torch.Generator().manual_seed(s)).op
           for s in range(200)}
    assert ops == set(OPS)  # one op per call, every op reachable
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(dsa(real, generator=g1), dsa(real, generator=g2))


def test_per_image_draws_differ_within_a_batch(real):
    s = sample_dsa("rotate", 24, (28, 28), torch.Generator().manual_seed(0), shared=False)
    angles = s.draws["angle"]
    assert angles.unique().numel() == 24
    assert angles.abs().max() <= 15 / 180 * math.pi
    with pytest.raises(ValueError, match="holds 24 per-image draws; the batch has 5"):
        s.apply(real[:5])


def test_op_semantics_on_known_draws():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    p = DSAParams()
    # crop: translate by (dy, dx) with zero fill
    shifted = DSASample("crop", {"dy": torch.tensor([2]), "dx": torch.tensor([-1])}, p).apply(x)
    expected = torch.zeros_like(x)
    expected[..., :6, 1:] = x[..., 2:, :7]
    assert torch.equal(shifted, expected)
    # cutout: a 4x4 hole centred at (4, 4), clipped at the border for (0, 7)
    ones = torch.ones(1, 1, 8, 8)
    hole = DSASample("cutout", {"cy": torch.tensor([4]), "cx": torch.tensor([4])}, p).apply(ones)
    assert hole[..., 2:6, 2:6].sum() == 0 and hole.sum() == 64 - 16
    edge = DSASample("cutout", {"cy": torch.tensor([0]), "cx": torch.tensor([7])}, p).apply(ones)
    assert edge[..., :2, 5:].sum() == 0 and edge.sum() == 64 - 6
    # flip below prob_flip, keep above
    assert torch.equal(DSASample("flip", {"flip": torch.tensor([0.2])}, p).apply(x), x.flip(3))
    assert torch.equal(DSASample("flip", {"flip": torch.tensor([0.7])}, p).apply(x), x)
    # scale 1 and rotation 0 are the identity; 90 degrees would permute pixels exactly
    unit = {"sy": torch.tensor([1.0]), "sx": torch.tensor([1.0])}
    torch.testing.assert_close(DSASample("scale", unit, p).apply(x), x)
    torch.testing.assert_close(DSASample("rotate", {"angle": torch.tensor([0.0])}, p).apply(x), x)
    quarter = DSASample("rotate", {"angle": torch.tensor([math.pi / 2])}, p).apply(x)
    torch.testing.assert_close(quarter.flatten().sort().values, x.flatten(), atol=1e-4, rtol=0)
    # color: brightness shift only when the saturation and contrast factors are 1
    color = {"brightness": torch.tensor([0.9]), "saturation": torch.tensor([0.5]),
             "contrast": torch.tensor([0.5])}
    torch.testing.assert_close(DSASample("color", color, p).apply(x), x + 0.4)


def test_flip_rotate_only_flips_or_rotates(real):
    ops = {sample_dsa("flip_rotate", 1, (28, 28), torch.Generator().manual_seed(s)).op
           for s in range(50)}
    assert ops == {"flip", "rotate"}
    torch.testing.assert_close(flip_rotate(real, seed=3), dsa(real, "flip_rotate", seed=3))


def test_gradient_reaches_synthetic_images_through_a_network(real):
    torch.manual_seed(0)
    model = build_model("convnet", 1, 10, 28, width=8)
    params = dict(model.named_parameters())
    y = torch.arange(10)

    def loss(images, seed):
        out = functional_call(model, params, (dsa(images, seed=seed),))
        return torch.nn.functional.cross_entropy(out, y)

    for seed in range(6):
        g = grad(loss)(real[:10], seed)
        assert g.shape == (10, 1, 28, 28) and torch.isfinite(g).all() and g.abs().sum() > 0


def test_bad_strategies_and_inputs_are_named():
    with pytest.raises(ValueError, match="unknown ops \\['blur'\\]"):
        parse_strategy("flip_blur")
    with pytest.raises(ValueError, match="unknown ops"):
        dsa(torch.zeros(1, 1, 4, 4), "")
    with pytest.raises(ValueError, match="DSA needs images \\[n, C, H, W\\]"):
        dsa(torch.zeros(4, 4))
