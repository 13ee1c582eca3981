"""ZCA whitening fitted on real images (KIP style), stored in a bank's `Normalization`.

Rule, on images already standardised per channel and flattened to D features:
    zca_mean = mean over images;  cov = (X - zca_mean)^T (X - zca_mean) / N
    cov = U diag(s) U^T;  zca_whiten = U diag(1 / sqrt(s + regularization * mean(s))) U^T
mean(s) = trace(cov) / D, so `regularization` is relative to the average feature variance (KIP and
the RTP code use 0.1 for CIFAR). Whitened image = (x - zca_mean) @ zca_whiten.
"""

from __future__ import annotations

import torch

from compressdata.bank.metadata import Normalization
from compressdata.errors import SourceError


def fit_zca(
    images: torch.Tensor, regularization: float = 0.1, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ZCA on standardised images [N, C, H, W] -> (zca_mean [D], zca_whiten [D, D]) float32."""
    if images.ndim != 4 or images.shape[0] < 2:
        raise SourceError(f"fit_zca needs images [N>=2, C, H, W]; got shape {tuple(images.shape)}")
    if not regularization > 0:
        raise SourceError(f"regularization must be > 0; got {regularization!r}")
    flat = images.reshape(images.shape[0], -1)
    mean = flat.to(torch.float64).mean(0)
    cov = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64)
    for start in range(0, flat.shape[0], chunk):
        block = flat[start:start + chunk].to(torch.float64) - mean
        cov += block.T @ block
    cov /= flat.shape[0]
    s, u = torch.linalg.eigh(cov)
    s = s.clamp_min(0)
    inv_sqrt = 1.0 / torch.sqrt(s + regularization * s.mean())
    whiten = (u * inv_sqrt) @ u.T
    return mean.to(torch.float32), whiten.to(torch.float32)


def zca_normalization(
    normalization: Normalization, pixels: torch.Tensor, regularization: float = 0.1
) -> Normalization:
    """`normalization`'s mean/std plus ZCA fitted on `normalization.apply(pixels)` (pixels in [0,1])."""
    base = Normalization(mean=list(normalization.mean), std=list(normalization.std))
    zca_mean, zca_whiten = fit_zca(base.apply(pixels.to(torch.float32)), regularization)
    return Normalization(mean=base.mean, std=base.std, zca_regularization=regularization,
                         zca_mean=zca_mean, zca_whiten=zca_whiten)
