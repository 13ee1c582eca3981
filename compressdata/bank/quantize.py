"""Post-training quantisation: a finished bank stored in fewer bytes (float16, bfloat16, or 8-bit
with a scale and zero point, spec 2.6), and what that costs on its decoded examples.

`quantize_bank(bank, "int8")` returns a new bank whose tensors are the old ones' float values
stored in the new dtypes (an 8-bit bank is dequantised first, so any bank can be re-stored); labels,
classes, normalisation, recipe and tasks are kept, evaluations dropped (they measured the old
values), and the error of the decoded examples is printed by the command line and recorded in the
provenance under `quantization`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

from compressdata.errors import UsageError
from compressdata.params.base import DecodeMemory, decode_limit
from compressdata.params.quant import (
    TensorStorage,
    parse_storage,
    scale_name,
    storage_label,
    store_all,
    zero_point_name,
)


class StoredBank(Protocol):
    """What quantising needs of a bank (`MemoryBank` has it; the result is built with the bank's own
    class, so this module does not import it)."""

    labels: torch.Tensor
    classes: list[str]
    image_size: tuple[int, int]
    upsample: str
    normalization: Any
    recipe: Any
    provenance: dict[str, Any]
    evaluations: list[Any]
    label_space: str
    tasks: list[dict[str, Any]] | None
    extra_metadata: dict[str, Any]

    @property
    def tensor_names(self) -> tuple[str, ...]: ...

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    @property
    def storage(self) -> dict[str, Any]: ...

    def __len__(self) -> int: ...

    def float_tensors(self) -> dict[str, torch.Tensor]: ...

    def checksum(self) -> str: ...

    def decode_memory(self, pixels: bool = False) -> DecodeMemory: ...

    def decode(self, index: Any = None, device: Any = None) -> torch.Tensor: ...


Bank = TypeVar("Bank", bound=StoredBank)
POST_TRAINING = "post-training"
QUANTIZATION_AWARE = "quantization-aware"
ERROR_BATCH = 1024  # examples decoded at a time while measuring the error


@dataclass(frozen=True)
class DecodedError:
    """How far the decoded examples of a stored bank are from a reference decode (the bank's space):
    root-mean-square and largest absolute difference over every decoded value, and the RMS relative
    to the reference values' standard deviation."""

    rmse: float
    max_abs: float
    relative_rmse: float

    def to_dict(self) -> dict[str, float]:
        return {"rmse": self.rmse, "max_abs": self.max_abs, "relative_rmse": self.relative_rmse}

    def summary(self) -> str:
        return (f"RMSE {self.rmse:.4g} ({100 * self.relative_rmse:.2f} % of the decoded values' std), "
                f"max abs {self.max_abs:.4g}")


class ErrorMeter:
    """Accumulates `DecodedError` over batches of (reference, stored) decoded examples."""

    def __init__(self) -> None:
        self.count = 0
        self.squares = 0.0
        self.max_abs = 0.0
        self.total = 0.0
        self.total_squares = 0.0

    def add(self, reference: torch.Tensor, stored: torch.Tensor) -> None:
        diff = (stored.double() - reference.double())
        self.count += reference.numel()
        self.squares += float(diff.square().sum())
        self.max_abs = max(self.max_abs, float(diff.abs().max())) if diff.numel() else self.max_abs
        self.total += float(reference.double().sum())
        self.total_squares += float(reference.double().square().sum())

    def result(self) -> DecodedError:
        n = max(self.count, 1)
        rmse = math.sqrt(self.squares / n)
        std = math.sqrt(max(self.total_squares / n - (self.total / n) ** 2, 0.0))
        return DecodedError(rmse, self.max_abs, rmse / std if std > 0 else 0.0)


def decoded_error(reference: StoredBank, stored: StoredBank, batch: int = ERROR_BATCH) -> DecodedError:
    """The error of `stored`'s decoded examples against `reference`'s (same examples, row by row),
    decoded `batch` examples at a time (fewer when the decode limit asks for it)."""
    if len(reference) != len(stored) or reference.image_shape != stored.image_shape:
        raise UsageError(f"cannot compare banks of {len(reference)} and {len(stored)} examples "
                         f"({reference.image_shape} vs {stored.image_shape})")
    limit = decode_limit()
    fits = min(reference.decode_memory().max_batch(limit), stored.decode_memory().max_batch(limit))
    batch = max(1, min(batch, fits))
    meter = ErrorMeter()
    with torch.no_grad():
        for start in range(0, len(reference), batch):
            rows = slice(start, min(start + batch, len(reference)))
            meter.add(reference.decode(rows), stored.decode(rows))
    return meter.result()


def stored_bank(bank: Bank, tensors: Mapping[str, torch.Tensor],
                storage: Mapping[str, TensorStorage], provenance: dict[str, Any]) -> Bank:
    """A bank like `bank` (labels, classes, normalisation, recipe, tasks, unknown keys) whose kind's
    tensors are float `tensors` stored as `storage` says, with `provenance`; no evaluations."""
    stored = store_all(tensors, storage)
    names = bank.tensor_names
    quantization = {n: (stored[scale_name(n)], stored[zero_point_name(n)]) for n in names if scale_name(n) in stored}
    return type(bank)(
        **{n: stored[n] for n in names},
        quantization=quantization,
        labels=bank.labels,
        classes=bank.classes,
        image_size=bank.image_size,
        upsample=bank.upsample,
        normalization=bank.normalization,
        recipe=bank.recipe,
        provenance=provenance,
        label_space=bank.label_space,
        tasks=bank.tasks,
        extra_metadata=bank.extra_metadata,
    )


def quantize_bank(bank: Bank, dtype: str | Mapping[str, str]) -> Bank:
    """`bank` stored in `dtype`: one of f32, f16, bf16, int8 (one scale and zero point per tensor),
    int8-row (one per row), for every tensor of the kind, or per tensor (`bases=f16,addresses=int8`,
    or a mapping; tensors not named become f32). The decoded error against `bank` is in
    `provenance["quantization"]["decoded_error"]`; evaluations are dropped."""
    if isinstance(dtype, Mapping):
        dtype = ",".join(f"{name}={value}" for name, value in dtype.items())
    storage = parse_storage(dtype, bank.tensor_names)
    quantized = stored_bank(bank, bank.float_tensors(), storage, bank.provenance)
    error = decoded_error(bank, quantized)
    quantized.provenance["quantization"] = quantization_record(
        POST_TRAINING, storage, error, source_checksum=bank.checksum(), source_bytes=bank.storage["bytes_stored"],
        evaluations_dropped=len(bank.evaluations))
    return quantized


def quantization_record(method: str, storage: Mapping[str, TensorStorage], error: DecodedError,
                        **details: Any) -> dict[str, Any]:
    """The provenance entry of a stored bank: how it was quantised, each tensor's dtype, the decoded
    error against the float values it came from, and `details`."""
    return {"method": method, "storage_dtype": storage_label(storage),
            "dtypes": {name: s.dtype for name, s in storage.items()}, "decoded_error": error.to_dict(), **details}
