"""Initial bases and addresses of a memory bank fitted to real images.

Three fits of the r real images per class (downsampled by ds, flattened to rows X):
- `svd`: the rank-K truncated SVD of X itself (addresses U sqrt(S), bases sqrt(S) V^T), the best
  rank-K reconstruction of exactly those images;
- `pca`: bases are the top K principal directions of a larger pool of real images
  (`POOL_PER_CLASS` per class, uncentred, so the first is close to the mean image), addresses the
  least-squares coefficients of X on them;
- `kmeans`: bases are K k-means centroids of the pool, addresses least-squares coefficients of X.
Every fit is balanced: component k of the bases and column k of the addresses get the same norm,
which leaves the examples unchanged and gives both factors comparable gradient steps.
"""

from __future__ import annotations

import torch

from compressdata.errors import UsageError

POOL_PER_CLASS = 256
KMEANS_ITERATIONS = 20


def svd_fit(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(addresses [n, K], bases [K, d]) of the rank-K truncated SVD of rows [n, d] (float64)."""
    u, s, vh = torch.linalg.svd(rows.double(), full_matrices=False)
    if s.numel() < k:
        raise UsageError(f"an SVD fit needs at least K={k} rows, got {s.numel()}")
    root = s[:k].sqrt()
    return u[:, :k] * root, root.unsqueeze(1) * vh[:k]


def pca_bases(pool: torch.Tensor, k: int) -> torch.Tensor:
    """The top K right singular vectors of pool [m, d] (uncentred principal directions), [K, d]."""
    _, s, vh = torch.linalg.svd(pool.double(), full_matrices=False)
    if s.numel() < k:
        raise UsageError(f"PCA bases need a pool of at least K={k} images, got {s.numel()}")
    return vh[:k]


def kmeans_bases(pool: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """K centroids of pool [m, d] by k-means (k-means++ seeding, `KMEANS_ITERATIONS` Lloyd steps)."""
    pool = pool.double()
    if pool.shape[0] < k:
        raise UsageError(f"k-means bases need a pool of at least K={k} images, got {pool.shape[0]}")
    centroids = pool[torch.randint(pool.shape[0], (1,), generator=generator)]
    for _ in range(1, k):
        distance = torch.cdist(pool, centroids).min(dim=1).values.square()
        pick = torch.multinomial(distance / distance.sum(), 1, generator=generator)
        centroids = torch.cat([centroids, pool[pick]])
    for _ in range(KMEANS_ITERATIONS):
        assign = torch.cdist(pool, centroids).argmin(dim=1)
        for j in range(k):
            members = pool[assign == j]
            if members.shape[0]:
                centroids[j] = members.mean(dim=0)
    return centroids


def least_squares_addresses(rows: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """Addresses A [n, K] minimising ||A @ bases - rows|| (float64)."""
    return torch.linalg.lstsq(bases.double().T, rows.double().T).solution.T


def balanced(addresses: torch.Tensor, bases: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same product addresses @ bases with column k of addresses and row k of bases of equal norm."""
    scale = (bases.norm(dim=1) / addresses.norm(dim=0).clamp_min(1e-12)).clamp_min(1e-12).sqrt()
    return addresses * scale, bases / scale.unsqueeze(1)
