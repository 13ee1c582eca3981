"""`SoftTargets`: the target distributions a soft-label bank serves, as a float tensor that says what it is.

A bank with learned labels trains on softmax(labels / T) (its recipe's `soft_cross_entropy` or
`kl_divergence`), so `MemoryDataset` yields those distributions: `torch.nn.CrossEntropyLoss` takes them
as they are (probability targets). `nll_loss` (`NLLLoss`) cannot: it needs class indices, and given a
distribution torch fails with "0D or 1D target tensor expected, multi-target not supported". A
`SoftTargets` tensor answers that call with a `UsageError` that says what to do instead. It stays a
`SoftTargets` through what a DataLoader and a training loop do to targets (stacking into batches,
indexing, `.to(device)`, pinning); every other operation gives plain tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from compressdata.errors import UsageError

# Operations whose result is still the same targets (moved, copied, batched or selected).
_KEEPS_TARGETS = frozenset({
    "__getitem__", "as_strided", "chunk", "clone", "contiguous", "cpu", "cuda", "detach", "double", "float",
    "narrow", "pin_memory", "reshape", "select", "share_memory_", "split", "stack", "cat", "to", "unbind",
    "view", "view_as",
})
_NEEDS_INDICES = (F.nll_loss,)


class SoftTargets(torch.Tensor):
    """Float target distributions [..., num_classes] (each row sums to 1)."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _NEEDS_INDICES:
            raise UsageError(
                f"{func.__name__} needs class indices, but this bank's targets are distributions (its learned "
                "labels as softmax(labels / T), what its recipe trains on): use torch.nn.CrossEntropyLoss (or "
                "F.cross_entropy), which takes them as they are, or MemoryDataset(..., hard_targets=True) for "
                "class indices (the argmax)")
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
        if getattr(func, "__name__", None) in _KEEPS_TARGETS:
            return _as_targets(result)
        return result

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        return f"SoftTargets({self.as_subclass(torch.Tensor)!r})"


def _as_targets(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.as_subclass(SoftTargets)
    if isinstance(value, (tuple, list)):
        return type(value)(_as_targets(v) for v in value)
    return value
