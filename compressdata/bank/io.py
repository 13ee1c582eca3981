"""Bank files: the container's bank kind, read, hashed and checked once per load and once per save.

A bank file is the container (`compressdata.container`: safetensors read header first, rules R1-R17
of spec/memory-bank.md section 10) with the bank's metadata object under `__metadata__["compressdata"]`;
`check_bank` then applies R18-R60 and R62-R68. `read_bank_header` reads the header alone and applies
every rule that does not need the tensors' values.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from compressdata.bank.checksum import SAFETENSORS_DTYPES
from compressdata.bank.format import FORMAT_NAME, MAX_TENSORS, METADATA_KEY, check_bank, check_metadata_json
from compressdata.container import FileKind, file_bytes, read_file, read_header
from compressdata.errors import BankFormatError
from compressdata.files import atomic_write_bytes

DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I8": 1}
BANK_FILE = FileKind(what="bank file", key=METADATA_KEY, format=FORMAT_NAME, error=BankFormatError,
                     noun="memory bank", dtype_sizes=DTYPE_SIZES, max_tensors=MAX_TENSORS)
TORCH_DTYPES = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class BankFile:
    """A checked bank file: its tensors, metadata object and the tensors' content checksum (equal to
    the one the metadata records)."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    checksum: str


@dataclass(frozen=True)
class BankHeader:
    """A bank file's checked header: its tensors as shapes and dtypes without data (meta-device
    tensors) and its metadata object. Every rule was checked but those on the tensors' values (R43,
    R53, R57, R67, R68): the recorded checksum is not verified."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


def load_bank_file(path: str | os.PathLike) -> BankFile:
    """Read and fully check a bank file: one read, one hash of the tensors, one run of `check_bank`."""
    tensors, meta = read_file(path, BANK_FILE)
    with _naming(path):
        checksum = check_bank(tensors, meta)
    return BankFile(tensors, meta, checksum)


def read_bank_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and fully validate a bank file; returns (tensors, metadata). Never unpickles."""
    bank_file = load_bank_file(path)
    return bank_file.tensors, bank_file.meta


def read_bank_header(path: str | os.PathLike) -> BankHeader:
    """Read a bank file's header alone (no tensor data) and check it (see `BankHeader`)."""
    header = read_header(path, BANK_FILE)
    tensors = {name: torch.empty(shape, dtype=TORCH_DTYPES[dtype], device="meta")
               for name, (dtype, shape) in header.shapes().items()}
    with _naming(path):
        check_bank(tensors, header.meta, values=False)
    return BankHeader(tensors, header.meta)


def bank_bytes(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """Serialize a bank: safetensors with one `__metadata__` entry of canonical JSON."""
    return file_bytes(BANK_FILE, tensors, meta)


def write_bank_file(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: str | os.PathLike,
                    checksum: str | None = None) -> None:
    """Validate (`checksum`: the tensors' content checksum when the caller just computed it, else
    computed here), then write atomically (`compressdata.files.atomic_write`)."""
    check_metadata_json(meta)
    check_bank(tensors, meta, checksum)
    atomic_write_bytes(path, bank_bytes(tensors, meta))


@contextlib.contextmanager
def _naming(path: str | os.PathLike) -> Iterator[None]:
    try:
        yield
    except BankFormatError as e:
        raise BankFormatError(e.problem, str(path)) from None
