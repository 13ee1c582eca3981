"""The reverse-pass hypergradient equals plain autograd through the unroll and finite differences."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from compressdata.distiller.hypergradient import (
    cross_entropy,
    naive_unroll_hypergradient,
    reverse_hypergradient,
)

N_CLASSES, PER_CLASS, K = 3, 4, 5
SIZE = (6, 6)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyConvNet(nn.Module):
    """Conv + instance norm + ReLU + pool + linear: the ConvNet blocks at toy size."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.GroupNorm(4, 4, affine=True)
        self.fc = nn.Linear(4 * 3 * 3, N_CLASSES)

    def forward(self, x):
        x = F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)
        return self.fc(x.flatten(1))


class TinyMLP(nn.Module):
    """A smooth network (tanh) so that finite differences are accurate."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(SIZE[0] * SIZE[1], 8)
        self.fc2 = nn.Linear(8, N_CLASSES)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


def make_theta(learn_labels: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    theta = {
        "bases": torch.randn(K, 1, 3, 3, generator=g, dtype=torch.float64),
        "addresses": torch.randn(N_CLASSES * PER_CLASS, K, generator=g, dtype=torch.float64) * 0.5,
    }
    if learn_labels:
        hard = torch.arange(N_CLASSES).repeat_interleave(PER_CLASS)
        theta["labels"] = 3.0 * F.one_hot(hard, N_CLASSES).double() + 0.1 * torch.randn(
            N_CLASSES * PER_CLASS, N_CLASSES, generator=g, dtype=torch.float64)
    return theta


def batch_fn(theta, step, gen):
    """Two random examples per class, a random flip and random noise: all from `gen`."""
    pick = torch.argsort(torch.rand(N_CLASSES, PER_CLASS, generator=gen), dim=1)[:, :2]
    index = (pick + torch.arange(N_CLASSES).unsqueeze(1) * PER_CLASS).reshape(-1)
    bases = theta["bases"]
    x = (theta["addresses"][index] @ bases.reshape(K, -1)).reshape(-1, 1, 3, 3)
    x = F.interpolate(x, size=SIZE, mode="bilinear", align_corners=False)
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(-1)
    x = x + 0.01 * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    if "labels" in theta:
        return x, torch.softmax(theta["labels"][index], dim=1)
    return x, index // PER_CLASS


def problem(net_cls, learn_labels=False, steps=10):
    torch.manual_seed(1)
    module = net_cls().double()
    params = {k: p.detach().clone() for k, p in module.named_parameters()}
    g = torch.Generator().manual_seed(2)
    x_real = torch.randn(12, 1, *SIZE, generator=g, dtype=torch.float64)
    y_real = torch.arange(12) % N_CLASSES

    def outer(w):
        return cross_entropy(functional_call(module, w, (x_real,)), y_real)

    seeds = list(range(100, 100 + steps))
    return module, params, make_theta(learn_labels), outer, seeds


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@pytest.mark.parametrize("net_cls", [TinyConvNet, TinyMLP])
@pytest.mark.parametrize("momentum", [0.9, 0.0])
@pytest.mark.parametrize("learn_labels", [False, True])
def test_reverse_pass_equals_naive_unroll(net_cls, momentum, learn_labels):
    module, params, theta, outer, seeds = problem(net_cls, learn_labels)
    kw = dict(steps=len(seeds), seeds=seeds, lr=0.05, momentum=momentum)
    fast = reverse_hypergradient(module, params, theta, batch_fn, outer, **kw)
    ref = naive_unroll_hypergradient(module, params, theta, batch_fn, outer, **kw)
    assert torch.allclose(fast.loss, ref.loss, rtol=1e-12, atol=0)
    assert set(fast.grads) == set(theta)
    for name in theta:
        assert ref.grads[name].norm() > 0, name
        assert relative_error(fast.grads[name], ref.grads[name]) < 1e-8, name


def sgd_outer_loss(module, params, theta, outer, seeds, lr, momentum) -> float:
    """The outer loss after training a copy of the network with torch.optim.SGD (the reference
    trajectory: the engines must differentiate exactly PyTorch's SGD-with-momentum run)."""
    net = copy.deepcopy(module)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(params[name])
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    for t, seed in enumerate(seeds):
        x, y = batch_fn(theta, t, torch.Generator().manual_seed(seed))
        opt.zero_grad()
        cross_entropy(net(x), y).backward()
        opt.step()
    with torch.no_grad():
        return float(outer(dict(net.named_parameters())))


def test_learned_inner_lr_gradient_matches_naive_and_finite_difference():
    module, params, theta, outer, seeds = problem(TinyMLP)
    lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    kw = dict(steps=len(seeds), seeds=seeds, momentum=0.9)
    fast = reverse_hypergradient(module, params, theta, batch_fn, outer, lr=lr, **kw)
    ref = naive_unroll_hypergradient(module, params, theta, batch_fn, outer, lr=lr, **kw)
    assert relative_error(fast.lr_grad, ref.lr_grad) < 1e-8
    eps = 1e-6
    up = sgd_outer_loss(module, params, theta, outer, seeds, 0.05 + eps, 0.9)
    down = sgd_outer_loss(module, params, theta, outer, seeds, 0.05 - eps, 0.9)
    fd = (up - down) / (2 * eps)
    assert abs(fd - float(fast.lr_grad)) < 1e-6 * abs(fd)


@pytest.mark.parametrize("momentum", [0.9, 0.0])
@pytest.mark.parametrize("learn_labels", [False, True])
def test_reverse_pass_equals_central_finite_differences(momentum, learn_labels):
    module, params, theta, outer, seeds = problem(TinyMLP, learn_labels)
    result = reverse_hypergradient(module, params, theta, batch_fn, outer, steps=len(seeds),
                                   seeds=seeds, lr=0.05, momentum=momentum)
    assert abs(float(result.loss) - sgd_outer_loss(module, params, theta, outer, seeds, 0.05,
                                                   momentum)) < 1e-12
    eps = 1e-6
    g = torch.Generator().manual_seed(3)
    for name, tensor in theta.items():
        for flat in torch.randint(0, tensor.numel(), (3,), generator=g).tolist():
            losses = []
            for sign in (1.0, -1.0):
                shifted = {k: v.clone() for k, v in theta.items()}
                shifted[name].view(-1)[flat] += sign * eps
                losses.append(sgd_outer_loss(module, params, shifted, outer, seeds, 0.05,
                                             momentum))
            fd = (losses[0] - losses[1]) / (2 * eps)
            analytic = float(result.grads[name].view(-1)[flat])
            assert abs(fd - analytic) <= 1e-6 * max(abs(fd), 1e-4), (name, flat, fd, analytic)


def test_replayed_randomness_matters():
    """Giving different seeds changes the result: the engine really replays the per-step seeds."""
    module, params, theta, outer, seeds = problem(TinyMLP)
    kw = dict(steps=len(seeds), lr=0.05, momentum=0.9)
    a = reverse_hypergradient(module, params, theta, batch_fn, outer, seeds=seeds, **kw)
    b = reverse_hypergradient(module, params, theta, batch_fn, outer, seeds=[s + 1 for s in seeds],
                              **kw)
    assert relative_error(a.grads["bases"], b.grads["bases"]) > 1e-3


def test_weight_copies_can_live_on_another_device():
    module, params, theta, outer, seeds = problem(TinyConvNet)
    kw = dict(steps=len(seeds), seeds=seeds, lr=0.05, momentum=0.9)
    ref = reverse_hypergradient(module, params, theta, batch_fn, outer, **kw)
    offloaded = reverse_hypergradient(module, params, theta, batch_fn, outer, store_device="cpu",
                                      **kw)
    for name in theta:
        assert torch.equal(ref.grads[name], offloaded.grads[name])


def test_bad_arguments_are_refused():
    module, params, theta, outer, seeds = problem(TinyMLP)
    with pytest.raises(ValueError, match="one seed per inner step"):
        reverse_hypergradient(module, params, theta, batch_fn, outer, steps=3, seeds=[1, 2])
    with pytest.raises(ValueError, match="at least one inner step"):
        naive_unroll_hypergradient(module, params, theta, batch_fn, outer, steps=0, seeds=[])
    with pytest.raises(ValueError, match="theta is empty"):
        reverse_hypergradient(module, params, {}, batch_fn, outer, steps=1, seeds=[1])


@pytest.mark.parametrize("net_cls", [TinyConvNet, TinyMLP])
@pytest.mark.parametrize("window", [1, 4, 10])
def test_truncated_reverse_pass_equals_truncated_naive_unroll(net_cls, window):
    """Random truncated BPTT: only the last `window` steps are differentiated; the engine agrees
    with autograd through a unroll whose first steps - window steps are detached."""
    module, params, theta, outer, seeds = problem(net_cls, learn_labels=True)
    lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    kw = dict(steps=len(seeds), seeds=seeds, lr=lr, momentum=0.9, window=window)
    fast = reverse_hypergradient(module, params, theta, batch_fn, outer, **kw)
    ref = naive_unroll_hypergradient(module, params, theta, batch_fn, outer, **kw)
    assert torch.allclose(fast.loss, ref.loss, rtol=1e-12, atol=0)
    for name in theta:
        assert ref.grads[name].norm() > 0, name
        assert relative_error(fast.grads[name], ref.grads[name]) < 1e-8, name
    assert relative_error(fast.lr_grad, ref.lr_grad) < 1e-8
    if window < len(seeds):  # truncation really drops the early steps' contribution
        full = naive_unroll_hypergradient(module, params, theta, batch_fn, outer,
                                          **{**kw, "window": None})
        assert relative_error(fast.grads["bases"], full.grads["bases"]) > 1e-6


@pytest.mark.parametrize("kept", [1, 3, 10, 50])
def test_kept_graphs_give_the_recomputed_hypergradient(kept):
    """Keeping the last steps' graphs from the forward run instead of recomputing them changes
    nothing but speed and memory, with and without truncation."""
    module, params, theta, outer, seeds = problem(TinyConvNet, learn_labels=True)
    for window in (None, 6):
        kw = dict(steps=len(seeds), seeds=seeds, lr=0.05, momentum=0.9, window=window)
        ref = reverse_hypergradient(module, params, theta, batch_fn, outer, **kw)
        fast = reverse_hypergradient(module, params, theta, batch_fn, outer, kept_graphs=kept, **kw)
        assert torch.allclose(fast.loss, ref.loss, rtol=1e-12, atol=0)
        for name in theta:
            assert relative_error(fast.grads[name], ref.grads[name]) < 1e-10, (name, window)


def test_bad_window_is_refused():
    module, params, theta, outer, seeds = problem(TinyMLP)
    for window in (0, len(seeds) + 1, 2.5):
        with pytest.raises(ValueError, match="window must be an int"):
            reverse_hypergradient(module, params, theta, batch_fn, outer, steps=len(seeds), seeds=seeds,
                                  window=window)
