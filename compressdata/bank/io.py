"""Reading and writing bank files: header checks before anything is trusted, atomic writes.

Files are read header first (spec section 2): the 8-byte length is checked against the limit and
the file's size, then the header is read and checked, and only then the data section; a file that
is not a regular file (a FIFO, a device, a folder) is refused before any byte is read.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from compressdata.bank import strict_json
from compressdata.bank.format import (
    MAX_HEADER_BYTES,
    MAX_JSON_DEPTH,
    MAX_TENSORS,
    METADATA_KEY,
    canonical_json,
    check_bank,
    check_metadata_json,
)
from compressdata.errors import BankFormatError
from compressdata.files import atomic_write_bytes

DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I8": 1}
# every dtype safetensors writes: for the run files (checkpoints, experts, teachers) read with `read_container`
SAFETENSORS_DTYPE_SIZES = {**DTYPE_SIZES, "F64": 8, "I32": 4, "I16": 2, "U8": 1, "BOOL": 1,
                           "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
TENSOR_ENTRY_MEMBERS = frozenset({"dtype", "shape", "data_offsets"})
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


@dataclass(frozen=True)
class Container:
    """A checked safetensors file: its bytes, tensor entries (name -> dtype, shape, data_offsets)
    and `__metadata__` (string -> string)."""

    data: bytes
    entries: dict[str, dict[str, Any]]
    metadata: dict[str, str] | None
    checked_metadata: Any = None  # what `metadata_check` returned

    def tensors(self) -> dict[str, torch.Tensor]:
        """Decode every tensor with safetensors (R17: anything else safetensors forbids)."""
        try:
            return safetensors_load(self.data)
        except (SafetensorError, ValueError, RuntimeError) as e:
            raise BankFormatError(f"safetensors could not decode the file: {e}") from None


def read_bank_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and fully validate a bank file; returns (tensors, metadata). Never unpickles."""
    path = str(path)
    try:
        container = read_container(path, metadata_check=_bank_metadata, max_tensors=MAX_TENSORS)
        tensors, meta = container.tensors(), container.checked_metadata
        check_bank(tensors, meta)
    except BankFormatError as e:
        raise BankFormatError(e.problem, path) from None
    return tensors, meta


def read_container(path: str | os.PathLike, *, dtype_sizes: Mapping[str, int] = DTYPE_SIZES,
                   max_tensors: int | None = None, metadata_check: Callable[[dict[str, str] | None], Any] | None = None,
                   what: str = "bank file") -> Container:
    """Read a safetensors file header first and check its framing (rules R1-R16).

    `metadata_check(metadata)` runs on `__metadata__` before the tensor entries are checked (the
    bank's R6-R9); its result is kept as `checked_metadata`. `max_tensors` refuses a header listing
    more tensors as soon as the next one is read. Raises FileNotFoundError, or BankFormatError
    (without the path: callers add it).
    """
    path = str(path)
    try:
        f = open_regular_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such {what}") from None
    except BankFormatError as e:
        raise BankFormatError(f"{e.problem}; a {what} is a safetensors file") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        head = _read_exactly(f, min(size, 8))
        header_len = check_length(head, size)
        text = _read_exactly(f, header_len)
        entries, metadata = parse_header(text, max_tensors)
        checked = metadata_check(metadata) if metadata_check is not None else None
        check_entries(entries, size - 8 - header_len, dtype_sizes, max_tensors)
        f.seek(0)
        data = _read_exactly(f, size)
    if data[:8] != head or data[8 : 8 + header_len] != text:
        raise BankFormatError("the file changed while it was read")
    return Container(data, entries, metadata, checked)


def _read_exactly(f: BinaryIO, n: int) -> bytes:
    """n bytes from an unbuffered file (one read is capped near 2 GiB, so larger reads loop)."""
    data = f.read(n) or b""
    if len(data) < n:
        parts, got = [data], len(data)
        while got < n:
            chunk = f.read(n - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        data = b"".join(parts)
    if len(data) != n:
        raise BankFormatError(f"the file changed while it was read (expected {n} bytes, got {len(data)})")
    return data


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def check_length(head: bytes, size: int) -> int:
    """R1-R3: the 8-byte header length, checked against the limit and the file size."""
    if size < 8:
        raise BankFormatError(f"truncated: {size} bytes, a safetensors file needs at least 8")
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > MAX_HEADER_BYTES:
        hint = _foreign_hint(head)
        raise BankFormatError(f"header of {header_len} bytes exceeds the limit of {MAX_HEADER_BYTES}{hint}")
    if 8 + header_len > size:
        raise BankFormatError(f"truncated: header says {header_len} bytes, file has {size - 8} after the length")
    return header_len


def parse_header(text: bytes, max_tensors: int | None = None) -> tuple[dict[str, Any], dict[str, str] | None]:
    """R4, R5 and R7's string rule: (tensor entries, `__metadata__` or None) of a header's JSON text.
    With `max_tensors`, a header listing more tensors is refused as soon as the next one is read."""
    try:
        header = strict_json.object_members(text.decode("utf-8"), max_tensors, MAX_JSON_DEPTH, "__metadata__")
    except strict_json.NotAnObject:
        raise BankFormatError("not a safetensors file: header is not a JSON object") from None
    except strict_json.TooManyMembers:
        raise BankFormatError(f"header lists more than {max_tensors} tensors, the most a bank holds: "
                              "unexpected tensor(s)") from None
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, duplicate keys, an integer too long to parse
        raise BankFormatError(f"not a safetensors file: header is not JSON ({e})") from None
    metadata = header.pop("__metadata__", None)
    if isinstance(metadata, dict):
        for key, value in metadata.items():
            if not isinstance(value, str):
                raise BankFormatError(f"__metadata__[{key!r}]: expected a JSON string, got {type(value).__name__} "
                                      "(safetensors metadata values are strings)")
    elif metadata is not None:
        raise BankFormatError(f"not a memory bank: safetensors __metadata__ is a {type(metadata).__name__}, so "
                              f"it has no '{METADATA_KEY}' entry")
    return header, metadata


def _foreign_hint(data: bytes) -> str:
    """A hint when the bytes look like a torch.save zip or a pickle (never unpickled here)."""
    if data.startswith(b"PK\x03\x04") or data[:1] == b"\x80":
        return " (this looks like a torch.save/pickle file, which compressdata refuses and never unpickles)"
    return ""


def _bank_metadata(raw: dict[str, str] | None) -> dict[str, Any]:
    """R6-R9: the bank's metadata object from `__metadata__["compressdata"]`."""
    if raw is None or METADATA_KEY not in raw:
        raise BankFormatError(f"not a memory bank: safetensors __metadata__ has no '{METADATA_KEY}' entry")
    return parse_metadata_json(raw[METADATA_KEY], f"__metadata__['{METADATA_KEY}']")


def parse_metadata_json(text: Any, where: str) -> dict[str, Any]:
    """R7-R9: a JSON object from metadata text (`strict_json`: no duplicate keys, no NaN/Infinity,
    every number finite in binary64, no unpaired surrogates, at most MAX_JSON_DEPTH levels)."""
    if not isinstance(text, str):
        raise BankFormatError(f"{where}: expected a JSON string")
    try:
        meta = strict_json.loads(text, MAX_JSON_DEPTH)
    except (ValueError, RecursionError) as e:
        raise BankFormatError(f"{where} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise BankFormatError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    return meta


def check_entries(header: dict[str, Any], data_len: int, dtype_sizes: Mapping[str, int] = DTYPE_SIZES,
                  max_tensors: int | None = None) -> None:
    """R10-R16: every tensor's byte range matches its dtype*shape; the ranges tile the data exactly."""
    if max_tensors is not None and len(header) > max_tensors:
        raise BankFormatError(f"header lists {len(header)} tensors, a bank holds at most {max_tensors}: "
                              "unexpected tensor(s)")
    spans = []
    for name, entry in header.items():
        if not (isinstance(entry, dict) and entry.keys() == TENSOR_ENTRY_MEMBERS):
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise BankFormatError(f"tensor {name!r}: header entry needs dtype, shape and data_offsets "
                                  f"(exactly these members), got {_short(got)}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in dtype_sizes:
            raise BankFormatError(
                f"tensor {name!r}: dtype {dtype!r} not allowed; expected one of {sorted(dtype_sizes)}"
            )
        if not (isinstance(shape, list) and all(_is_uint(d) and d < 2**40 for d in shape)):
            raise BankFormatError(f"tensor {name!r}: invalid shape {_short(shape)} (expected integers in [0, 2^40))")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise BankFormatError(f"tensor {name!r}: invalid data_offsets {_short(offsets)} (expected two integers)")
        numel = math.prod(shape)
        begin, end = offsets
        if not 0 <= begin <= end <= data_len or end - begin != numel * dtype_sizes[dtype]:
            raise BankFormatError(
                f"tensor {name!r}: data_offsets {offsets} do not fit {dtype}{shape} in {data_len} data bytes"
            )
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise BankFormatError("tensor data ranges overlap or leave gaps")
        position = end
    if position != data_len:
        raise BankFormatError(f"tensor data covers {position} bytes but the file holds {data_len}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_uint(v: Any) -> bool:
    return _is_int(v) and v >= 0


def _short(value: Any, limit: int = 120) -> str:
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "..."


def bank_bytes(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """Serialize a bank: safetensors with one `__metadata__` entry of canonical JSON."""
    plain = {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
    return safetensors_save(plain, metadata={METADATA_KEY: canonical_json(meta)})


def write_bank_file(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: str | os.PathLike) -> None:
    """Validate, then write atomically (`compressdata.files.atomic_write`)."""
    check_metadata_json(meta)
    check_bank(tensors, meta)
    data = bank_bytes(tensors, meta)
    atomic_write_bytes(path, data)


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """`path` opened for reading, unbuffered; BankFormatError (without the path) when it is not a
    regular file. Opened non-blocking, so a FIFO is refused at once instead of waited on."""
    fd = os.open(str(path), _READ_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BankFormatError(f"not a regular file ({_file_type(mode)})")
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of a small regular file (a manifest): BankFormatError without the path when it is
    not a regular file or holds more than `limit` bytes."""
    with open_regular_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise BankFormatError(f"{size} bytes, more than the {limit} this file may hold")
        return _read_exactly(f, size)
