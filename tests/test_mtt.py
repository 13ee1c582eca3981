"""Trajectory matching (mtt): the loss on cases with a known answer, the learned lr's gradient,
resumable expert trajectories (a killed process continues to the same files), and a short run on
real Fashion-MNIST that writes a valid bank and beats chance."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressdata import load_memory_bank
from compressdata.cli import main
from compressdata.data.sources import load_source
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.experts import MANIFEST, ExpertConfig, ExpertStore, expert_file, train_experts
from compressdata.distiller.loop import distill
from compressdata.distiller.objectives.mtt import synthetic_steps, trajectory_loss
from compressdata.evaluate import evaluate_bank

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the local Fashion-MNIST files"),
              pytest.mark.usefixtures("one_torch_thread")]

EXPERTS = ExpertConfig(experts=2, epochs=3, width=8, train_examples=1000, lr=0.05, seed=1)


@pytest.fixture(scope="module")
def expert_dir(tmp_path_factory, one_torch_thread):
    directory = tmp_path_factory.mktemp("experts")
    train_experts(EXPERTS, directory, progress=False)
    return directory


def _linear_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    module = nn.Linear(6, 3)
    start = {"weight": torch.randn(3, 6, generator=g), "bias": torch.randn(3, generator=g)}
    x, y = torch.randn(5, 6, generator=g), torch.tensor([0, 2, 1, 1, 0])
    return module, start, x, y


def test_loss_is_zero_when_the_synthetic_steps_reach_the_target():
    module, start, x, y = _linear_case()
    lr = torch.tensor(0.3)
    target = {k: v.detach() for k, v in synthetic_steps(module, start, lambda i: (x, y), lr, 3).items()}
    student = synthetic_steps(module, start, lambda i: (x, y), lr, 3)
    assert float(trajectory_loss(student, start, target).detach()) == pytest.approx(0.0, abs=1e-12)


def test_loss_matches_a_hand_computed_sgd_step():
    module, start, x, y = _linear_case(1)
    target = {"weight": torch.zeros(3, 6), "bias": torch.ones(3)}
    lr = 0.5
    # one SGD step on mean cross-entropy of a linear model: grad W = (p - onehot)^T x / n
    p = torch.softmax(x @ start["weight"].T + start["bias"], dim=1)
    err = (p - F.one_hot(y, 3).float()) / x.shape[0]
    w1 = start["weight"] - lr * err.T @ x
    b1 = start["bias"] - lr * err.sum(0)
    expected = (((w1 - target["weight"]) ** 2).sum() + ((b1 - target["bias"]) ** 2).sum()) / (
        ((start["weight"] - target["weight"]) ** 2).sum() + ((start["bias"] - target["bias"]) ** 2).sum())
    student = synthetic_steps(module, start, lambda i: (x, y), torch.tensor(lr), 1)
    assert float(trajectory_loss(student, start, target).detach()) == pytest.approx(float(expected), rel=1e-5)


def test_the_learned_lr_and_the_images_get_gradients():
    module, start, x, y = _linear_case(2)
    target = {"weight": torch.zeros(3, 6), "bias": torch.zeros(3)}
    log_lr = torch.tensor(math.log(0.1), requires_grad=True)
    images = x.clone().requires_grad_(True)
    loss = trajectory_loss(synthetic_steps(module, start, lambda i: (images, y), log_lr.exp(), 2),
                           start, target)
    g_lr, g_x = torch.autograd.grad(loss, [log_lr, images])
    assert torch.isfinite(g_lr) and float(g_lr.abs()) > 1e-6
    assert float(g_x.abs().sum()) > 1e-6
    # the gradient of log(lr) is the finite difference of the loss
    eps = 1e-3

    def at(v):
        return float(trajectory_loss(synthetic_steps(module, start, lambda i: (x, y),
                                                     torch.tensor(math.exp(v)), 2), start, target).detach())
    fd = (at(math.log(0.1) + eps) - at(math.log(0.1) - eps)) / (2 * eps)
    assert float(g_lr) == pytest.approx(fd, rel=1e-2)


def test_experts_are_stored_per_epoch(expert_dir):
    store = ExpertStore(expert_dir)
    assert store.complete(3) == [0, 1] and store.config == EXPERTS
    first, last = store.load(0, 0), store.load(0, 3)
    assert set(first) == set(store.parameters)
    assert any(not torch.equal(first[k], last[k]) for k in first)
    with pytest.raises(ValueError, match="epoch 4"):
        store.load(0, 4)


def test_killed_experts_run_continues_to_the_same_files(expert_dir, tmp_path):
    out = tmp_path / "killed"
    args = ["experts", "--out", str(out), "--experts", "2", "--epochs", "3", "--width", "8",
            "--train-examples", "1000", "--lr", "0.05", "--seed", "1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "compressdata", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None and not (out / MANIFEST).exists():
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    partial = ExpertStore(out).epochs
    assert sum(partial.values()) < 6, "the run was not interrupted"
    assert main(args) == 0  # the same command continues it
    for name in [MANIFEST, expert_file(out, 0).name, expert_file(out, 1).name]:
        assert (out / name).read_bytes() == (expert_dir / name).read_bytes(), name
    with pytest.raises(ValueError, match="different lr"):
        train_experts(ExpertConfig(**{**EXPERTS.__dict__, "lr": 0.1}), out, progress=False)


def test_short_mtt_run_writes_a_valid_bank_that_beats_chance(expert_dir, tmp_path):
    train = load_source("fashion-mnist", "train")
    config = DistillConfig.from_flat(method="pixels", objective="mtt", mtt_expert_dir=str(expert_dir), width=8,
                           iterations=15, mtt_syn_steps=8, mtt_expert_epochs=2, mtt_max_start_epoch=2,
                           inner_batch_per_class=1, mtt_lr_lr=0.05,  # outer step: mtt's defaults
                           device="cpu", seed=2)
    losses = []
    bank = distill(config, train, progress=False, log=lambda s: None,
                   callback=lambda state, m: losses.append(m["outer_loss"]))
    assert all(math.isfinite(v) for v in losses)
    out = tmp_path / "mtt.safetensors"
    bank.save(out)
    loaded = load_memory_bank(out)
    assert set(loaded.tensors) >= {"pixels"} and "syn_lr" not in loaded.tensors
    assert loaded.recipe.lr != pytest.approx(0.01, rel=1e-6)  # the learned lr, not the initial one
    test = load_source("fashion-mnist", "test").subset(torch.arange(2000))
    result = evaluate_bank(loaded, test, networks=1, epochs=40, width=8, progress=False)
    assert result.mean > 0.4


def test_mtt_configuration_errors(expert_dir, capsys):
    with pytest.raises(ValueError, match="mtt_expert_dir"):
        DistillConfig.from_flat(objective="mtt").validate()
    with pytest.raises(ValueError, match="running statistics"):
        DistillConfig.from_flat(objective="mtt", mtt_expert_dir="x", norm="batchnorm").validate()
    with pytest.raises(ValueError, match="mtt_syn_steps"):
        DistillConfig.from_flat(objective="mtt", mtt_expert_dir="x", mtt_syn_steps=0).validate()
    train = load_source("fashion-mnist", "train").subset(torch.arange(200))
    with pytest.raises(ValueError, match="width"):
        distill(DistillConfig.from_flat(method="pixels", objective="mtt", mtt_expert_dir=str(expert_dir),
                              width=16, iterations=1, mtt_max_start_epoch=1, device="cpu"),
                train, progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="at least"):
        distill(DistillConfig.from_flat(method="pixels", objective="mtt", mtt_expert_dir=str(expert_dir),
                              width=8, iterations=1, mtt_max_start_epoch=5, device="cpu"),
                train, progress=False, log=lambda s: None)
