"""The content checksum: SHA-256 over every tensor's name, dtype, shape and raw bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch

CHECKSUM_ALGORITHM = "sha256-tensors-v1"

SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int8: "I8",
}


def tensor_bytes(t: torch.Tensor) -> np.ndarray:
    """Raw little-endian, row-major bytes of a tensor (as safetensors stores them), without a copy
    when the tensor is already a contiguous CPU tensor."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().reshape(-1).view(np.uint8)


def tensor_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 of, for each tensor in sorted name order, `name\nDTYPE\nd0,d1,...\n` + bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        dtype = SAFETENSORS_DTYPES.get(t.dtype, str(t.dtype))
        shape = ",".join(str(d) for d in t.shape)
        h.update(f"{name}\n{dtype}\n{shape}\n".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()
