"""Mixed precision: where bfloat16 autocast runs natively."""

from __future__ import annotations

import torch


def native_bfloat16(device: torch.device) -> bool:
    """True when `device` computes bfloat16 matrix products in hardware: a CUDA device with bf16
    support, or a CPU with AVX512-BF16 or AMX. Elsewhere bf16 autocast works but is emulated and
    slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
        return any(check() for check in checks if check is not None)
    return False
