"""Low-dimensional structure (Kinoshita, Nishikawa & Toyoizumi, 2026): distil a synthetic multi-index task.

Data: x ~ N(0, I_d); labels depend on x only through z = U^T x, U a d x r matrix with orthonormal
columns: y = argmax over the 2r scores [z, -z] (2r balanced classes; r = 1 is the sign of u^T x).
Learner: a two-layer ReLU network of width L (`models.MLP` with depth 2) trained by T full-batch SGD
steps with momentum. Distillation stores m points (m*d floats; hard labels, not counted, as in the
bank format) and optimises them with the BPTT engine (`distill.hypergradient.reverse_hypergradient`) so
that the network trained on them classifies fresh real data; the baseline stores m random real
points. The theory (Kinoshita et al.) says memory ~ r^2 d + L floats should suffice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from compressdata.distiller.hypergradient import reverse_hypergradient
from compressdata.errors import UsageError
from compressdata.models import MLP


@dataclass(frozen=True)
class MultiIndexTask:
    """x ~ N(0, I_d), y = argmax([U^T x, -U^T x]) with U (d x r) orthonormal, drawn from `seed`."""

    d: int
    r: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.r < 1 or self.d < self.r:
            raise UsageError(f"need 1 <= r <= d for a multi-index task; got d={self.d}, r={self.r}")

    @property
    def num_classes(self) -> int:
        return 2 * self.r

    @property
    def directions(self) -> torch.Tensor:
        """U: float32 [d, r] with orthonormal columns."""
        g = torch.Generator().manual_seed(self.seed)
        q, _ = torch.linalg.qr(torch.randn(self.d, self.r, generator=g, dtype=torch.float64))
        return q.to(torch.float32)

    def label(self, x: torch.Tensor) -> torch.Tensor:
        """int64 [n] labels of points x [n, d]: argmax over [z, -z], z = x @ U."""
        z = x @ self.directions.to(x.device)
        return torch.cat([z, -z], dim=1).argmax(dim=1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n fresh points x [n, d] and their labels [n]."""
        x = torch.randn(n, self.d, generator=generator)
        return x, self.label(x)

    def balanced_sample(self, m: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """m real points, m // classes per class (the first m % classes classes get one more)."""
        k = self.num_classes
        if m < k:
            raise UsageError(f"need at least one point per class: m={m} < {k} classes")
        want = [m // k + (c < m % k) for c in range(k)]
        pool_x, pool_y = self.sample(4 * k * max(want) + 64, generator)
        picked = [(pool_y == c).nonzero().flatten()[:want[c]] for c in range(k)]
        index = torch.cat(picked)
        return pool_x[index], pool_y[index]


@dataclass(frozen=True)
class Learner:
    """The two-layer network of width L and its training: `steps` full-batch SGD steps."""

    width: int = 32
    steps: int = 30
    lr: float = 0.1
    momentum: float = 0.9

    def network(self, task: MultiIndexTask, seed: int) -> MLP:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return MLP(task.d, task.num_classes, width=self.width, depth=2)

    def train(self, task: MultiIndexTask, x: torch.Tensor, y: torch.Tensor, seed: int,
              steps: int | None = None) -> MLP:
        """A fresh network (init `seed`) trained on (x, y) by full-batch SGD with momentum."""
        net = self.network(task, seed)
        opt = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=self.momentum)
        for _ in range(self.steps if steps is None else steps):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        return net.eval()


@torch.no_grad()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of (x, y) classified correctly."""
    return float((net(x).argmax(dim=1) == y).float().mean())


def _real_loss(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """The outer loss: cross-entropy of the network with weights w on the real batch (x, y)."""
    return lambda w: F.cross_entropy(torch.func.functional_call(net, w, (x,)), y)


def distill_points(task: MultiIndexTask, learner: Learner, m: int, *, iterations: int = 150,
                   outer_lr: float = 0.03, real_batch: int = 512, seed: int = 0,
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distil m points (balanced hard labels), initialised from m random real points.

    Each outer iteration draws a fresh network init and a fresh real batch, takes the hypergradient
    of the real batch's cross-entropy after `learner.steps` inner steps on the m points through the
    reverse pass, and moves the points by Adam (lr `outer_lr`). Returns (distilled x, labels,
    initial real x, labels): the initial points are the equal-memory random-real baseline.
    """
    g = torch.Generator().manual_seed(seed)
    x0, y0 = task.balanced_sample(m, g)
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=outer_lr)
    for it in tqdm(range(iterations), desc=f"lowdim d={task.d} r={task.r} m={m}", disable=not progress):
        net = learner.network(task, seed=10_000 * (seed + 1) + it)
        params = dict(net.named_parameters())
        xr, yr = task.sample(real_batch, g)
        hyper = reverse_hypergradient(
            net, params, {"x": x.detach()},
            lambda theta, t, gen: (theta["x"], y0),
            _real_loss(net, xr, yr),
            steps=learner.steps, seeds=[it * learner.steps + t for t in range(learner.steps)],
            lr=learner.lr, momentum=learner.momentum)
        opt.zero_grad()
        x.grad = hyper.grads["x"]
        opt.step()
    return x.detach(), y0, x0, y0
