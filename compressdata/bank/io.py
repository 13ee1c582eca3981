"""Reading and writing bank files: header checks before anything is trusted, atomic writes."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from compressdata.bank.format import MAX_HEADER_BYTES, METADATA_KEY, canonical_json, check_bank
from compressdata.errors import BankFormatError
from compressdata.files import atomic_write_bytes

DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}


def read_bank_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and fully validate a bank file; returns (tensors, metadata). Never unpickles."""
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such bank file") from None
    try:
        tensors, meta = parse_bank_bytes(data)
        check_bank(tensors, meta)
    except BankFormatError as e:
        raise BankFormatError(e.problem, path) from None
    return tensors, meta


def parse_bank_bytes(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Check the safetensors framing (sizes, offsets, dtypes) and decode tensors and metadata."""
    if len(data) < 8:
        raise BankFormatError(f"truncated: {len(data)} bytes, a safetensors file needs at least 8")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES:
        hint = _foreign_hint(data)
        raise BankFormatError(f"header of {header_len} bytes exceeds the limit of {MAX_HEADER_BYTES}{hint}")
    if 8 + header_len > len(data):
        raise BankFormatError(f"truncated: header says {header_len} bytes, file has {len(data) - 8} after the length")
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"), object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, or an integer too long to parse
        raise BankFormatError(f"not a safetensors file: header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise BankFormatError("not a safetensors file: header is not a JSON object")
    meta = _metadata(header.pop("__metadata__", None))
    _check_offsets(header, len(data) - 8 - header_len)
    try:
        tensors = safetensors_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise BankFormatError(f"safetensors could not decode the file: {e}") from None
    return tensors, meta


def _foreign_hint(data: bytes) -> str:
    """A hint when the bytes look like a torch.save zip or a pickle (never unpickled here)."""
    if data.startswith(b"PK\x03\x04") or data[:1] == b"\x80":
        return " (this looks like a torch.save/pickle file, which compressdata refuses and never unpickles)"
    return ""


def _metadata(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or METADATA_KEY not in raw:
        raise BankFormatError(f"not a memory bank: safetensors __metadata__ has no '{METADATA_KEY}' entry")
    if not isinstance(raw[METADATA_KEY], str):
        raise BankFormatError(f"__metadata__['{METADATA_KEY}']: expected a JSON string")
    try:
        meta = json.loads(raw[METADATA_KEY], parse_constant=_reject_constant, parse_float=_finite_float)
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        raise BankFormatError(f"__metadata__['{METADATA_KEY}'] is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise BankFormatError(f"__metadata__['{METADATA_KEY}']: expected a JSON object, got {type(meta).__name__}")
    return meta


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in metadata")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of the float64 range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate key(s) {duplicated}")
    return dict(pairs)


def _check_offsets(header: dict[str, Any], data_len: int) -> None:
    """Every tensor's byte range must match its dtype*shape; the ranges tile the data exactly."""
    spans = []
    for name, entry in header.items():
        if not (isinstance(entry, dict) and {"dtype", "shape", "data_offsets"} <= entry.keys()):
            raise BankFormatError(f"tensor '{name}': header entry needs dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise BankFormatError(
                f"tensor '{name}': dtype {dtype!r} not allowed; expected one of {sorted(DTYPE_SIZES)}"
            )
        if not (isinstance(shape, list) and all(isinstance(d, int) and 0 <= d < 2**40 for d in shape)):
            raise BankFormatError(f"tensor '{name}': invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise BankFormatError(f"tensor '{name}': invalid data_offsets {offsets!r}")
        numel = 1
        for d in shape:
            numel *= d
        begin, end = offsets
        if not 0 <= begin <= end <= data_len or end - begin != numel * DTYPE_SIZES[dtype]:
            raise BankFormatError(
                f"tensor '{name}': data_offsets {offsets} do not fit {dtype}{shape} in {data_len} data bytes"
            )
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise BankFormatError("tensor data ranges overlap or leave gaps")
        position = end
    if position != data_len:
        raise BankFormatError(f"tensor data covers {position} bytes but the file holds {data_len}")


def bank_bytes(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """Serialize a bank: safetensors with one `__metadata__` entry of canonical JSON."""
    plain = {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
    return safetensors_save(plain, metadata={METADATA_KEY: canonical_json(meta)})


def write_bank_file(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: str | os.PathLike) -> None:
    """Validate, then write atomically (`compressdata.files.atomic_write`)."""
    check_bank(tensors, meta)
    data = bank_bytes(tensors, meta)
    atomic_write_bytes(path, data)
