"""Reading and writing every file compressdata writes, one way: safetensors whose `__metadata__` holds
one entry, the file's JSON object as canonical JSON; written atomically (`files.atomic_write`), read
header first (`container.framing`) and checked before a tensor is trusted.

A `FileKind` says what a kind of file is called, under which `__metadata__` key its JSON object
lives, the format (and version) that object declares, the error that names its problems, and the
dtypes and number of tensors it may hold. The kinds: banks (`bank.io.BANK_FILE`), checkpoints,
MTT expert trajectories, DWA teachers and the full-data reference cache (each in its module).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from compressdata.container.framing import (
    DTYPE_SIZES,
    canonical_json,
    check_entries,
    check_length,
    open_regular_file,
    parse_header,
    parse_metadata_json,
    read_exactly,
)
from compressdata.errors import FileFormatError, MissingFileError
from compressdata.files import atomic_write_bytes


@dataclass(frozen=True)
class FileKind:
    """A kind of file compressdata writes. `version` None: the kind checks the version itself (banks:
    `format_version`, with the rule order of spec section 10)."""

    what: str  # in messages: "no such checkpoint", "a checkpoint is a safetensors file"
    key: str  # the `__metadata__` entry holding the JSON object
    format: str  # the object's "format" member
    version: int | None = None  # its "version" member
    error: type[FileFormatError] = FileFormatError
    noun: str = ""  # "not a NOUN: ..." (default: compressdata WHAT)
    dtype_sizes: Mapping[str, int] = field(default_factory=lambda: DTYPE_SIZES)
    max_tensors: int | None = None

    @property
    def called(self) -> str:
        return self.noun or f"compressdata {self.what}"

    def check_format(self, meta: Mapping[str, Any]) -> None:
        """The object declares this kind's format and version (FileFormatError otherwise)."""
        if self.version is None:
            return
        version = meta.get("version")
        if meta.get("format") != self.format or version != self.version or isinstance(version, bool):
            raise FileFormatError(f"expected format {self.format!r} version {self.version}, got "
                                  f"{meta.get('format')!r:.100} version {version!r:.40}")


@dataclass(frozen=True)
class Header:
    """A checked header: the tensor entries (name -> dtype, shape, data_offsets) and the JSON object."""

    entries: dict[str, dict[str, Any]]
    meta: dict[str, Any]

    def shapes(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """{tensor name: (safetensors dtype, shape)}."""
        return {name: (e["dtype"], tuple(e["shape"])) for name, e in self.entries.items()}


def file_bytes(kind: FileKind, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> bytes:
    """The file's bytes: the tensors (copied to the CPU) and `meta` as canonical JSON under `kind.key`."""
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    return safetensors_save(plain, metadata={kind.key: canonical_json(meta)})


def write_file(path: str | os.PathLike, kind: FileKind, tensors: Mapping[str, torch.Tensor],
               meta: Mapping[str, Any]) -> None:
    """Write a file of `kind` atomically: a crash or Ctrl-C leaves the previous file (or none)."""
    atomic_write_bytes(path, file_bytes(kind, tensors, meta))


def read_header(path: str | os.PathLike, kind: FileKind) -> Header:
    """The checked header of a file of `kind` (rules R1-R16, the JSON object and its format); no
    tensor byte is read. `kind.error` naming the file, or MissingFileError."""
    with _named(kind, path), _open(path, kind) as f:
        return _header(f, kind)[0]


def read_file(path: str | os.PathLike, kind: FileKind) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON object) of a file of `kind`, read header first and checked before the data is
    read; never unpickles. `kind.error` naming the file, or MissingFileError."""
    with _named(kind, path):
        with _open(path, kind) as f:
            header, head = _header(f, kind)
            f.seek(0)
            data = read_exactly(f, os.fstat(f.fileno()).st_size)
        if data[:len(head)] != head:
            raise FileFormatError("the file changed while it was read")
        try:
            return safetensors_load(data), header.meta
        except (SafetensorError, ValueError, RuntimeError) as e:
            raise FileFormatError(f"safetensors could not decode the file: {e}") from None


def read_tensors(path: str | os.PathLike, kind: FileKind, names: Iterable[str],
                 device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Only the tensors `names` of a file of `kind` (its header checked first), on `device`."""
    names = list(names)
    with _named(kind, path):
        header = read_header(path, kind)
        missing = [n for n in names if n not in header.entries]
        if missing:
            raise FileFormatError(f"tensor {missing[0]!r} is missing")
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                return {name: f.get_tensor(name) for name in names}
        except (SafetensorError, OSError) as e:
            raise FileFormatError(f"cannot read tensors ({e})") from None


@contextlib.contextmanager
def _named(kind: FileKind, path: str | os.PathLike) -> Iterator[None]:
    """Problems found inside the block become `kind.error` naming the file."""
    try:
        yield
    except FileFormatError as e:
        if isinstance(e, kind.error) and e.path is not None:
            raise
        raise kind.error(e.problem, str(path)) from None


@contextlib.contextmanager
def _open(path: str | os.PathLike, kind: FileKind) -> Iterator[Any]:
    try:
        f = open_regular_file(path)
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such {kind.what}") from None
    except FileFormatError as e:
        raise FileFormatError(f"{e.problem}; a {kind.what} is a safetensors file") from None
    with f:
        yield f


def _header(f: Any, kind: FileKind) -> tuple[Header, bytes]:
    """The checked header of an open file, and its bytes (length and JSON text) as read."""
    size = os.fstat(f.fileno()).st_size
    head = read_exactly(f, min(size, 8))
    header_len = check_length(head, size)
    text = read_exactly(f, header_len)
    entries, metadata = parse_header(text, kind.key, kind.called, kind.max_tensors)
    if metadata is None or kind.key not in metadata:
        raise FileFormatError(f"not a {kind.called}: safetensors __metadata__ has no '{kind.key}' entry")
    meta = parse_metadata_json(metadata[kind.key], f"__metadata__['{kind.key}']")
    kind.check_format(meta)
    check_entries(entries, size - 8 - header_len, kind.dtype_sizes, kind.max_tensors, kind.called)
    return Header(entries, meta), head + text
