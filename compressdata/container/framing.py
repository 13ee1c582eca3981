"""A safetensors file read header first: every length and offset checked before anything is trusted.

The 8-byte header length is checked against the limit and the file's size, then the header is read
and checked (rules R1-R16 of spec/memory-bank.md section 10, for every file compressdata writes), and
only then the data section; a file that is not a regular file (a FIFO, a device, a folder) is refused
before any byte is read. Problems are `FileFormatError`s without the path (callers add it).
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from collections.abc import Mapping
from typing import Any, BinaryIO

from compressdata.container import strict_json
from compressdata.errors import FileFormatError

MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 64  # nesting of the metadata JSON (and the header's)
# every dtype safetensors writes, by its size in bytes (a kind of file may allow fewer)
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
TENSOR_ENTRY_MEMBERS = frozenset({"dtype", "shape", "data_offsets"})
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, ASCII only, no NaN: the same metadata always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """`path` opened for reading, unbuffered; FileFormatError when it is not a regular file. Opened
    non-blocking, so a FIFO is refused at once instead of waited on."""
    fd = os.open(str(path), _READ_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileFormatError(f"not a regular file ({_file_type(mode)})")
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of a small regular file (a manifest): FileFormatError when it is not a regular file or
    holds more than `limit` bytes."""
    with open_regular_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise FileFormatError(f"{size} bytes, more than the {limit} this file may hold")
        return read_exactly(f, size)


def read_exactly(f: BinaryIO, n: int) -> bytes:
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
        raise FileFormatError(f"the file changed while it was read (expected {n} bytes, got {len(data)})")
    return data


def check_length(head: bytes, size: int) -> int:
    """R1-R3: the 8-byte header length, checked against the limit and the file size."""
    if size < 8:
        raise FileFormatError(f"truncated: {size} bytes, a safetensors file needs at least 8")
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > MAX_HEADER_BYTES:
        hint = _foreign_hint(head)
        raise FileFormatError(f"header of {header_len} bytes exceeds the limit of {MAX_HEADER_BYTES}{hint}")
    if 8 + header_len > size:
        raise FileFormatError(f"truncated: header says {header_len} bytes, file has {size - 8} after the length")
    return header_len


def parse_header(text: bytes, key: str, noun: str, max_tensors: int | None = None
                 ) -> tuple[dict[str, Any], dict[str, str] | None]:
    """R4, R5 and R7's string rule: (tensor entries, `__metadata__` or None) of a header's JSON text,
    for a file whose metadata lives under `key` (`noun` names the kind of file in messages). With
    `max_tensors`, a header listing more tensors is refused as soon as the next one is read."""
    try:
        header = strict_json.object_members(text.decode("utf-8"), max_tensors, MAX_JSON_DEPTH, "__metadata__")
    except strict_json.NotAnObject:
        raise FileFormatError("not a safetensors file: header is not a JSON object") from None
    except strict_json.TooManyMembers:
        raise FileFormatError(f"header lists more than {max_tensors} tensors, the most a {noun} holds: "
                              "unexpected tensor(s)") from None
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, duplicate keys, an integer too long to parse
        raise FileFormatError(f"not a safetensors file: header is not JSON ({e})") from None
    metadata = header.pop("__metadata__", None)
    if isinstance(metadata, dict):
        for name, value in metadata.items():
            if not isinstance(value, str):
                raise FileFormatError(f"__metadata__[{name!r}]: expected a JSON string, got {type(value).__name__} "
                                      "(safetensors metadata values are strings)")
    elif metadata is not None:
        raise FileFormatError(f"not a {noun}: safetensors __metadata__ is a {type(metadata).__name__}, so "
                              f"it has no '{key}' entry")
    return header, metadata


def parse_metadata_json(text: Any, where: str) -> dict[str, Any]:
    """R7-R9: a JSON object from metadata text (`strict_json`: no duplicate keys, no NaN/Infinity,
    every number finite in binary64, no unpaired surrogates, at most MAX_JSON_DEPTH levels)."""
    if not isinstance(text, str):
        raise FileFormatError(f"{where}: expected a JSON string")
    try:
        meta = strict_json.loads(text, MAX_JSON_DEPTH)
    except (ValueError, RecursionError) as e:
        raise FileFormatError(f"{where} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise FileFormatError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    return meta


def check_entries(header: dict[str, Any], data_len: int, dtype_sizes: Mapping[str, int] = DTYPE_SIZES,
                  max_tensors: int | None = None, noun: str = "file") -> None:
    """R10-R16: every tensor's byte range matches its dtype*shape; the ranges tile the data exactly."""
    if max_tensors is not None and len(header) > max_tensors:
        raise FileFormatError(f"header lists {len(header)} tensors, a {noun} holds at most {max_tensors}: "
                              "unexpected tensor(s)")
    spans = []
    for name, entry in header.items():
        if not (isinstance(entry, dict) and entry.keys() == TENSOR_ENTRY_MEMBERS):
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise FileFormatError(f"tensor {name!r}: header entry needs dtype, shape and data_offsets "
                                  f"(exactly these members), got {_short(got)}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in dtype_sizes:
            raise FileFormatError(f"tensor {name!r}: dtype {dtype!r} not allowed; expected one of "
                                  f"{sorted(dtype_sizes)}")
        if not (isinstance(shape, list) and all(_is_uint(d) and d < 2**40 for d in shape)):
            raise FileFormatError(f"tensor {name!r}: invalid shape {_short(shape)} (expected integers in [0, 2^40))")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise FileFormatError(f"tensor {name!r}: invalid data_offsets {_short(offsets)} (expected two integers)")
        numel = math.prod(shape)
        begin, end = offsets
        if not 0 <= begin <= end <= data_len or end - begin != numel * dtype_sizes[dtype]:
            raise FileFormatError(f"tensor {name!r}: data_offsets {offsets} do not fit {dtype}{shape} in "
                                  f"{data_len} data bytes")
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise FileFormatError("tensor data ranges overlap or leave gaps")
        position = end
    if position != data_len:
        raise FileFormatError(f"tensor data covers {position} bytes but the file holds {data_len}")


def _foreign_hint(data: bytes) -> str:
    """A hint when the bytes look like a torch.save zip or a pickle (never unpickled here)."""
    if data.startswith(b"PK\x03\x04") or data[:1] == b"\x80":
        return " (this looks like a torch.save/pickle file, which compressdata refuses and never unpickles)"
    return ""


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_uint(v: Any) -> bool:
    return _is_int(v) and v >= 0


def _short(value: Any, limit: int = 120) -> str:
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "..."
