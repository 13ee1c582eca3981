"""ZCA whitening as the MTT family fits it (kornia's `ZCAWhitening(eps=0.1)`, used by MTT, FTD, DATM
and DD-Ranking): on the training images as [0, 1] pixels (no mean / std), with the unbiased
covariance C = X_c^T X_c / (N - 1) = U diag(s) U^T and an absolute eps added to every eigenvalue:

    zca_mean = mean over images;  zca_whiten = U diag(1 / sqrt(s + eps)) U^T

so a whitened image is (x - zca_mean) @ zca_whiten, the rule a bank's `Normalization` stores.
(compressdata's own distiller uses `compressdata.data.zca`, whose eps is relative to mean(s).)
"""

from __future__ import annotations

import torch

from compressdata.bank.metadata import Normalization
from compressdata.interop.errors import InteropError


def fit_kornia_zca(pixels: torch.Tensor, eps: float = 0.1, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(zca_mean [D], zca_whiten [D, D]) float32 for images [N >= 2, C, H, W], computed in float64."""
    if pixels.ndim != 4 or pixels.shape[0] < 2:
        raise InteropError(f"ZCA needs images [N>=2, C, H, W]; got shape {tuple(pixels.shape)}")
    if not eps > 0:
        raise InteropError(f"the ZCA eps must be > 0; got {eps!r}")
    flat = pixels.reshape(pixels.shape[0], -1)
    mean = flat.to(torch.float64).mean(0)
    cov = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64)
    for start in range(0, flat.shape[0], chunk):
        block = flat[start:start + chunk].to(torch.float64) - mean
        cov += block.T @ block
    cov /= flat.shape[0] - 1
    s, u = torch.linalg.eigh(cov)
    whiten = (u * torch.rsqrt(s.clamp_min(0) + eps)) @ u.T
    return mean.to(torch.float32), whiten.to(torch.float32)


def kornia_zca_normalization(pixels: torch.Tensor, eps: float = 0.1) -> Normalization:
    """Identity mean / std, then ZCA fitted on `pixels` (float in [0, 1]) by `fit_kornia_zca`."""
    channels = int(pixels.shape[1])
    zca_mean, zca_whiten = fit_kornia_zca(pixels, eps)
    return Normalization(mean=[0.0] * channels, std=[1.0] * channels, zca_regularization=eps,
                         zca_mean=zca_mean, zca_whiten=zca_whiten)
