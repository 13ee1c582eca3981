"""The synthetic set: its learnable tensors, their initialisation, minibatches, and the random-real baseline.

Synthetic examples are stored class-major: rows c*r .. (c+1)*r - 1 belong to class c. The learnable
tensors `theta` are a plain dict the hypergradient engine differentiates:
- rtp (kind memory): `bases` [K, C, H/ds, W/ds] and `addresses` [n_classes*r, K];
- pixels (kind pixels): `pixels` [n_classes*r, C, H, W];
- lowrank (kind lowrank): `lowrank_u` [n_classes*r, C, H, rank], `lowrank_v` [n_classes*r, C, rank, W];
- with learned labels also `labels` [n_classes*r, n_classes] (logits, soft targets = softmax).
Decoding goes through the one decode of `compressdata.params`; with a `storage` (quantisation-aware
distillation) the tensors are first replaced by the values they will be stored as, with
straight-through gradients (`params.quant.simulate_storage`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from compressdata.data.sampler import BalancedSampler
from compressdata.distiller import memory_init
from compressdata.errors import UsageError
from compressdata.params import Layout, get_parameterization
from compressdata.params.quant import TensorStorage, simulate_storage
from compressdata.runtime.transfer import to_device

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class SyntheticSet:
    """Shapes and rules of a method's synthetic set; the tensors themselves live in `theta`.
    `storage`: the dtype each tensor will be stored in, seen by every decode (quantisation-aware
    distillation); None decodes theta's float values."""

    kind: str
    n_classes: int
    per_class: int
    image_size: tuple[int, int]
    upsample: str = "bilinear"
    storage: Mapping[str, TensorStorage] | None = field(default=None, compare=False, kw_only=True)

    @property
    def size(self) -> int:
        return self.n_classes * self.per_class

    def hard_labels(self, device: torch.device | str | None = None) -> torch.Tensor:
        """int64 [N]: the class of every synthetic row."""
        return torch.arange(self.n_classes, device=device).repeat_interleave(self.per_class)

    def decode(self, theta: dict[str, torch.Tensor], index: torch.Tensor | None = None):
        """Decoded examples float32 [n, C, H, W] (differentiable in theta)."""
        names = get_parameterization(self.kind).tensor_names
        tensors = simulate_storage({n: theta[n] for n in names}, self.storage)
        return get_parameterization(self.kind).decode(tensors, index, self.image_size, self.upsample)

    def targets(self, theta: dict[str, torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        """Soft targets softmax(labels) with learned labels, else the hard class indices."""
        if "labels" in theta:
            return torch.softmax(theta["labels"][index], dim=1)
        return index // self.per_class

    def sample_index(self, per_class: int, generator: torch.Generator) -> torch.Tensor:
        """min(per_class, r) distinct rows of every class, drawn from `generator` (CPU int64)."""
        m = min(per_class, self.per_class)
        pick = torch.argsort(torch.rand(self.n_classes, self.per_class, generator=generator), dim=1)
        offsets = torch.arange(self.n_classes).unsqueeze(1) * self.per_class
        return (pick[:, :m] + offsets).reshape(-1)

    def minibatch(self, theta: dict[str, torch.Tensor], per_class: int, generator: torch.Generator,
                  augment: Augment | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of one inner step: sampled rows, decoded, optionally augmented."""
        device = next(iter(theta.values())).device
        index = to_device(self.sample_index(per_class, generator), device)
        x = self.decode(theta, index)
        if augment is not None:
            x = augment(x, generator)
        return x, self.targets(theta, index)


def init_theta(synthetic: SyntheticSet, layout: Layout, init: str, real: BalancedSampler | None,
               generator: torch.Generator, image_shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
    """Initial learnable tensors (CPU float32): xavier-uniform noise or fitted to real images.

    memory: `real` fits the r real images per class, downsampled by ds (area average), by a rank-K
    truncated SVD; `pca` and `kmeans` take bases from a pool of real images and least-squares
    addresses (`distill.memory_init`). lowrank + real: every channel of a real image by its
    rank-`layout.rank` truncated SVD, u = U sqrt(S), v = sqrt(S) V^T. pixels + real: real images.
    random: xavier-uniform (addresses, bases viewed as [K, C*h*w]; pixels [N, C*H*W]; lowrank u, v
    per channel as [H, rank] and [rank, W]).
    """
    c, h, w = image_shape
    if synthetic.kind == "lowrank":
        return _lowrank_init(synthetic, layout.rank, init, real, generator, image_shape)
    if synthetic.kind == "memory":
        k, ds = layout.n_bases, layout.downsample
        if init == "random":
            bases = _xavier((k, c * (h // ds) * (w // ds)), generator)
            addresses = _xavier((synthetic.size, k), generator)
        else:
            addresses, bases = _fit_memory(synthetic, k, ds, init, real, generator)
        return {"bases": bases.float().reshape(k, c, h // ds, w // ds).contiguous(),
                "addresses": addresses.float().contiguous()}
    if init == "real":
        return {"pixels": _real_rows(real, synthetic, generator).float().contiguous()}
    return {"pixels": _xavier((synthetic.size, c * h * w), generator).reshape(-1, c, h, w)}


def _fit_memory(synthetic: SyntheticSet, k: int, ds: int, init: str, real: BalancedSampler | None,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(addresses, bases [K, C*h*w]) fitted to r real images per class by `init` (real, pca, kmeans)."""
    rows = F.avg_pool2d(_real_rows(real, synthetic, generator), ds).flatten(1)
    if init == "real":
        return memory_init.svd_fit(rows, k)
    pool_images, _ = random_real_subset(real, min(memory_init.POOL_PER_CLASS, *map(len, real.by_class)), generator)
    pool = F.avg_pool2d(pool_images.float(), ds).flatten(1)
    if init == "pca":
        bases = memory_init.pca_bases(pool, k)
    else:
        bases = memory_init.kmeans_bases(pool, k, generator)
    return memory_init.balanced(memory_init.least_squares_addresses(rows, bases), bases.double())


def lowrank_factors(images: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-`rank` truncated SVD of every channel of images [N, C, H, W]: (u [N, C, H, rank],
    v [N, C, rank, W]) with u @ v the best rank-`rank` approximation (float32)."""
    if rank > min(images.shape[-2:]):
        raise UsageError(f"rank {rank} exceeds the image size {tuple(images.shape[-2:])}")
    u, s, vh = torch.linalg.svd(images.double(), full_matrices=False)
    root = s[..., :rank].sqrt()
    return ((u[..., :rank] * root.unsqueeze(-2)).float().contiguous(),
            (root.unsqueeze(-1) * vh[..., :rank, :]).float().contiguous())


def _lowrank_init(synthetic: SyntheticSet, rank: int, init: str, real: BalancedSampler | None,
                  generator: torch.Generator, image_shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
    c, h, w = image_shape
    if init == "real":
        u, v = lowrank_factors(_real_rows(real, synthetic, generator), rank)
    else:
        u = _uniform((synthetic.size, c, h, rank), (6.0 / (h + rank)) ** 0.5, generator)
        v = _uniform((synthetic.size, c, rank, w), (6.0 / (rank + w)) ** 0.5, generator)
    return {"lowrank_u": u.contiguous(), "lowrank_v": v.contiguous()}


def init_labels(synthetic: SyntheticSet, scale: float) -> torch.Tensor:
    """Learned-label logits initialised to scale * one-hot (float32 [N, n_classes])."""
    return scale * F.one_hot(synthetic.hard_labels(), synthetic.n_classes).float()


def random_real_subset(real: BalancedSampler, per_class: int,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` distinct random real examples of every class, class-major (images, labels)."""
    small = [c for c, idx in enumerate(real.by_class) if idx.numel() < per_class]
    if small:
        raise UsageError(f"class(es) {small} have fewer than {per_class} real examples")
    index = real.class_index(per_class, generator).to(real.images.device)
    return real.images[index].cpu(), real.labels[index].cpu()


def _real_rows(real: BalancedSampler | None, synthetic: SyntheticSet,
               generator: torch.Generator) -> torch.Tensor:
    if real is None:
        raise UsageError("init='real' needs the real data")
    images, _ = random_real_subset(real, synthetic.per_class, generator)
    return images.float()


def _xavier(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    return _uniform(shape, (6.0 / (shape[0] + shape[1])) ** 0.5, generator)


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound
