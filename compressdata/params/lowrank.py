"""The `lowrank` parameterization: every channel of every example is a rank-r product U @ V."""

from __future__ import annotations

import torch


def decode_lowrank(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Example i, channel c = u[i, c] @ v[i, c], in float32.

    u: [N, C, H, r]; v: [N, C, r, W]; returns [N, C, H, W].
    """
    return u.to(torch.float32) @ v.to(torch.float32)
