"""The `memory` parameterization: bases shared by all classes combined by per-example addresses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compressdata.errors import UsageError

UPSAMPLE_MODES = ("bilinear", "nearest")
EXPAND_LIMIT_BYTES = 256 * 2**20  # upsample the K bases once only when they take at most this (spec 4.7)


def upsample(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize [N, C, h, w] to [N, C, H, W] exactly as the spec's upsampling section defines."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "bilinear":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    raise UsageError(f"unknown upsample mode {mode!r}; expected one of {UPSAMPLE_MODES}")


def expand_bases(bases: torch.Tensor, image_size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Bases [K, C, h, w] upsampled to float32 [K, C, H, W].

    Upsampling is linear, so upsample(a @ B) == a @ upsample(B): expanding the K bases once is
    cheaper than upsampling every decoded example and gives the same values (up to float rounding).
    """
    return upsample(bases.to(torch.float32), image_size, mode)


def upsample_first(k: int, channels: int, stored_size: tuple[int, int], image_size: tuple[int, int]) -> bool:
    """Whether a decode upsamples the K bases once (K*C*H*W floats kept) rather than combining the
    addresses with the stored bases first and upsampling each decoded example (spec 4.1, 4.7):
    always when no upsampling is needed, otherwise when the upsampled bases fit EXPAND_LIMIT_BYTES."""
    h, w = image_size
    return tuple(stored_size) == tuple(image_size) or 4 * k * channels * h * w <= EXPAND_LIMIT_BYTES


def decode_combined_first(addresses: torch.Tensor, bases: torch.Tensor, image_size: tuple[int, int],
                          mode: str) -> torch.Tensor:
    """Examples [N, C, H, W] = upsample(addresses @ bases): the spec's order (4.1), which never holds
    more than the examples asked for (used when the upsampled bases would be too large)."""
    return upsample(combine(addresses, bases.to(torch.float32)), image_size, mode)


def combine(addresses: torch.Tensor, expanded: torch.Tensor) -> torch.Tensor:
    """Examples [N, C, H, W] = addresses [N, K] @ expanded bases [K, C, H, W], in float32."""
    k = expanded.shape[0]
    return (addresses.to(torch.float32) @ expanded.reshape(k, -1)).reshape(-1, *expanded.shape[1:])


def decode_memory(
    bases: torch.Tensor,
    addresses: torch.Tensor,
    image_size: tuple[int, int],
    mode: str = "bilinear",
) -> torch.Tensor:
    """Example i = upsample(reshape(addresses[i] @ bases)), in float32. Differentiable.

    bases: [K, C, h, w]; addresses: [N, K]; returns [N, C, H, W] with (H, W) = image_size.
    """
    return combine(addresses, expand_bases(bases, image_size, mode))
