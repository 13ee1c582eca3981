"""Host-to-device copies that do not stall the host.

A copy from ordinary (pageable) host memory to a CUDA device first waits for all queued device work,
so a per-step index or augmentation draw copied that way serialises the host with the GPU. Small
per-step tensors go through pinned memory instead, asynchronously.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`; from the host to a CUDA device without waiting for queued work."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
