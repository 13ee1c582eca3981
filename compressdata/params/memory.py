"""The `memory` parameterization: bases shared by all classes combined by per-example addresses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

UPSAMPLE_MODES = ("bilinear", "nearest")


def upsample(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize [N, C, h, w] to [N, C, H, W] exactly as the spec's upsampling section defines."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "bilinear":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    raise ValueError(f"unknown upsample mode {mode!r}; expected one of {UPSAMPLE_MODES}")


def decode_memory(
    bases: torch.Tensor,
    addresses: torch.Tensor,
    image_size: tuple[int, int],
    mode: str = "bilinear",
) -> torch.Tensor:
    """Example i = upsample(reshape(addresses[i] @ bases)), in float32. Differentiable.

    bases: [K, C, h, w]; addresses: [N, K]; returns [N, C, H, W] with (H, W) = image_size.
    """
    k, c, h, w = bases.shape
    flat = addresses.to(torch.float32) @ bases.reshape(k, c * h * w).to(torch.float32)
    return upsample(flat.reshape(-1, c, h, w), image_size, mode)
