"""Networks: shapes, the ConvNet-3 layout of the DC/DSA/DM/MTT code, functional_call use."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad

from compressdata.models import ARCHITECTURES, ConvNet, build_model


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_architecture_maps_images_to_class_logits(arch, shape):
    torch.manual_seed(0)
    model = build_model(arch, shape[0], 10, shape[1:], width=16)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_convnet3_matches_the_reference_layout():
    model = build_model("convnet", 1, 10, (28, 28))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    pools = [m for m in model.modules() if isinstance(m, nn.AvgPool2d)]
    assert [c.padding for c in convs] == [(3, 3), (1, 1), (1, 1)]  # 28x28 acts as 32x32
    assert all(c.kernel_size == (3, 3) and c.out_channels == 128 for c in convs)
    assert [(g.num_groups, g.num_channels, g.affine) for g in norms] == [(128, 128, True)] * 3
    assert len(pools) == 3 and all(p.kernel_size == 2 for p in pools)
    assert model.classifier.in_features == 2048 and model.classifier.out_features == 10
    cifar = build_model("convnet", 3, 100, 32)
    assert [c.padding for c in cifar.modules() if isinstance(c, nn.Conv2d)][0] == (1, 1)
    assert cifar.classifier.in_features == 2048


def test_convnet_width_depth_and_norm_options():
    model = build_model("convnet", 3, 10, (32, 32), width=32, depth=4, norm="batchnorm")
    assert model.classifier.in_features == 32 * 2 * 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4
    bare = build_model("convnet", 1, 10, (28, 28), width=8, depth=2, norm="none")
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in bare.modules())
    assert bare.classifier.in_features == 8 * 8 * 8
    assert bare(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_resnet_variants_and_mlp_depth():
    rn = build_model("resnet18", 3, 10, 32)
    rn_bn = build_model("resnet18_bn", 3, 10, 32)
    assert sum(isinstance(m, nn.GroupNorm) for m in rn.modules()) == 20
    assert not any(isinstance(m, nn.BatchNorm2d) for m in rn.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in rn_bn.modules()) == 20
    assert sum(isinstance(m, nn.Conv2d) for m in rn.modules()) == 20  # 17 + 3 shortcuts
    mlp = build_model("mlp", 1, 10, 28, width=64, depth=3)
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 64), (64, 64), (64, 10)]


def test_functional_call_matches_the_module_and_updates_no_state():
    torch.manual_seed(0)
    model = build_model("convnet", 1, 10, (28, 28), width=16)
    x = torch.randn(4, 1, 28, 28)
    y = torch.randint(0, 10, (4,))
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = functional_call(model, params, (x,))
    torch.testing.assert_close(out, model(x))

    def loss(p, images):
        return nn.functional.cross_entropy(functional_call(model, p, (images,)), y)

    g = grad(loss)(params, x)
    assert set(g) == set(params) and all(torch.isfinite(v).all() for v in g.values())
    g_x = grad(loss, argnums=1)(params, x)  # the distiller differentiates w.r.t. the images
    assert g_x.shape == x.shape and g_x.abs().sum() > 0
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_convnet_embed_feeds_the_classifier():
    torch.manual_seed(0)
    model = build_model("convnet", 3, 10, 32, width=16)
    assert isinstance(model, ConvNet)
    x = torch.randn(2, 3, 32, 32)
    assert model.embed(x).shape == (2, 16 * 4 * 4)
    torch.testing.assert_close(model.classifier(model.embed(x)), model(x))


def test_seeded_init_is_reproducible():
    torch.manual_seed(3)
    a = build_model("convnet", 1, 10, 28, width=8)
    torch.manual_seed(3)
    b = build_model("convnet", 1, 10, 28, width=8)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown architecture 'vgg'.*convnet.*resnet18.*mlp"):
        build_model("vgg", 1, 10, 28)
    with pytest.raises(ValueError, match="unknown norm 'layernorm'"):
        build_model("convnet", 1, 10, 28, norm="layernorm")
    with pytest.raises(ValueError, match="too small for a depth-4"):
        build_model("convnet", 1, 10, 8, depth=4)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        build_model("convnet", 1, 0, 28)
    with pytest.raises(ValueError, match="image_size must be an int or"):
        build_model("convnet", 1, 10, (1, 28, 28))
