"""Diversity-driven synthesis (dwa): the weight adjustment (size rho, BN statistics untouched), the
BN-matching loss on batches with known statistics, the teacher file, and a short run on real
Fashion-MNIST that writes a valid bank with the teacher's soft labels and beats chance."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from compressdata import load_memory_bank
from compressdata.data.sources import load_source
from compressdata.distiller.config import ADAM_OUTER_LR, DistillConfig
from compressdata.distiller.loop import distill
from compressdata.distiller.objectives.dwa import TEACHER_FILE, bn_matching_forward, perturb_weights
from compressdata.distiller.teacher import load_teacher, save_teacher, train_teacher
from compressdata.evaluate import evaluate_bank
from compressdata.models import build_model

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the local Fashion-MNIST files"),
              pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def train_subset():
    train = load_source("fashion-mnist", "train")
    return train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:3000])


def _bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = build_model("convnet", 1, 10, (28, 28), width=8, norm="batchnorm")
    net.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            net(torch.randn(16, 1, 28, 28) * 2 + 0.5)
    return net.eval()


def _state(net: nn.Module):
    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = {k: v.detach() for k, v in net.named_buffers()}
    return params, buffers


@pytest.mark.parametrize("steps", [1, 3])
def test_adjustment_has_size_rho_and_leaves_bn_statistics(steps):
    net = _bn_net()
    params, buffers = _state(net)
    before = {k: v.clone() for k, v in buffers.items()}
    x, y = torch.randn(10, 1, 28, 28), torch.arange(10)
    rho = 0.05
    adjusted = perturb_weights(net, params, buffers, x, y, rho, steps)
    assert set(adjusted) == set(params)  # parameters only: no running statistics
    delta = torch.sqrt(sum((adjusted[k] - params[k]).pow(2).sum() for k in params))
    if steps == 1:
        assert float(delta) == pytest.approx(rho, rel=1e-4)
    else:
        assert float(delta) <= rho * (1 + 1e-4) and float(delta) > rho / 2
    for k, v in net.named_buffers():
        assert torch.equal(v, before[k]), k
    # the adjustment climbs the CE loss (it is along the gradient)
    ce = nn.functional.cross_entropy
    base = ce(torch.func.functional_call(net, {**params, **buffers}, (x,)), y)
    moved = ce(torch.func.functional_call(net, {**adjusted, **buffers}, (x,)), y)
    assert float(moved) > float(base)


def test_bn_loss_is_zero_when_batch_statistics_equal_the_running_ones():
    net = _bn_net(1)
    x = torch.randn(12, 1, 28, 28)
    layers = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    seen: dict[str, torch.Tensor] = {}
    for layer in layers:  # set each layer's running statistics to this batch's, in order
        handle = layer.register_forward_hook(lambda m, i, o: seen.update(h=i[0].detach()))
        net(x)
        handle.remove()
        layer.running_mean.copy_(seen["h"].mean((0, 2, 3)))
        layer.running_var.copy_(seen["h"].var((0, 2, 3), unbiased=False))
    params, buffers = _state(net)
    _, loss = bn_matching_forward(net, {**params, **buffers}, x, first_weight=10.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-5)
    # shifting the last layer's running mean by d adds exactly ||d|| (weight 1, nothing downstream)
    d = torch.zeros_like(layers[-1].running_mean)
    d[:3] = torch.tensor([0.3, -0.4, 1.2])
    layers[-1].running_mean.add_(d)
    _, loss = bn_matching_forward(net, {**params, **_state(net)[1]}, x, first_weight=10.0)
    assert float(loss) == pytest.approx(float(d.norm()), rel=1e-4)
    # the first layer counts first_weight times
    layers[-1].running_mean.sub_(d)
    layers[0].running_var.add_(0.5)
    _, loss1 = bn_matching_forward(net, {**params, **_state(net)[1]}, x, first_weight=1.0)
    _, loss10 = bn_matching_forward(net, {**params, **_state(net)[1]}, x, first_weight=10.0)
    first_term = 0.5 * math.sqrt(layers[0].running_var.numel())
    assert float(loss10 - loss1) == pytest.approx(9 * first_term, rel=1e-3)


def test_teacher_file_round_trip_and_mismatch(train_subset, tmp_path):
    teacher = train_teacher(train_subset.subset(torch.arange(500)), width=8, epochs=1)
    path = save_teacher(teacher, tmp_path / "t.safetensors")
    loaded = load_teacher(path, train_subset)
    x = train_subset.images[:7]
    with torch.no_grad():
        assert torch.equal(loaded.module(x), teacher.module(x))
    mnist_like = train_subset.with_normalization(
        type(train_subset.normalization)(mean=[0.5], std=[0.5]))
    with pytest.raises(ValueError, match="normalization"):
        load_teacher(path, mnist_like)
    with pytest.raises(FileNotFoundError, match="train"):
        load_teacher(tmp_path / "missing.safetensors", train_subset)


def test_short_dwa_run_writes_a_valid_soft_label_bank_that_beats_chance(train_subset, tmp_path):
    ckpt = tmp_path / "ckpt"
    config = DistillConfig.from_flat(method="pixels", objective="dwa", width=8, iterations=20, dwa_teacher_width=16,
                           dwa_teacher_epochs=6, dwa_steps=2, inner_batch_per_class=2, budget_ipc=2,
                           device="cpu", checkpoint_dir=str(ckpt))  # the outer step: dwa's defaults (Adam)
    bank = distill(config, train_subset, progress=False, log=lambda s: None)
    hyper = bank.provenance["method"]["hyperparameters"]
    assert (hyper["outer_optimizer"], hyper["outer_schedule"], hyper["outer_lr"]) == ("adam", "cosine", ADAM_OUTER_LR)
    assert (ckpt / TEACHER_FILE).is_file()  # the trained teacher is kept for a resume
    out = tmp_path / "dwa.safetensors"
    bank.save(out)
    loaded = load_memory_bank(out)
    assert loaded.label_space == "logits" and loaded.labels.shape == (20, 10)
    assert loaded.recipe.label_loss == "kl_divergence" and loaded.recipe.label_temperature == 4.0
    teacher = load_teacher(ckpt / TEACHER_FILE, train_subset)
    with torch.no_grad():
        expected = teacher.module(loaded.decode())
    assert torch.allclose(loaded.labels, expected, atol=1e-4)
    test = load_source("fashion-mnist", "test").subset(torch.arange(2000))
    result = evaluate_bank(loaded, test, networks=1, epochs=40, width=8, progress=False)
    assert result.mean > 0.4


def test_dwa_configuration_errors():
    with pytest.raises(ValueError, match="learn_labels"):
        DistillConfig.from_flat(objective="dwa", learn_labels=True).validate()
    with pytest.raises(ValueError, match="dwa_rho"):
        DistillConfig.from_flat(objective="dwa", dwa_rho=0).validate()
    with pytest.raises(ValueError, match="dwa_teacher_arch"):
        DistillConfig.from_flat(objective="dwa", dwa_teacher_arch="mlp").validate()
    with pytest.raises(ValueError, match="objective"):
        DistillConfig.from_flat(objective="nope").validate()


@pytest.mark.parametrize("param", ["pixels", "memory", "lowrank"])
def test_dwa_defaults_to_adam_with_a_cosine_schedule_on_every_parameterization(param):
    config = DistillConfig.from_flat(parameterization=param, objective="dwa")
    assert config.resolved_optimizer == ("adam", (0.5, 0.9), "cosine")
    assert config.resolved_outer == (ADAM_OUTER_LR, None, math.inf)
