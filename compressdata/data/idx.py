"""Reader for IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or plain.

Layout: two zero bytes, a dtype code, the number of dimensions n, n big-endian uint32 sizes, then
the row-major big-endian data. Every field is checked before the data are trusted.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from compressdata.errors import MissingFileError, SourceError

# IDX dtype code -> big-endian numpy dtype
IDX_DTYPES: dict[int, str] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
                              0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(SourceError):
    """An IDX file is malformed; the message names the file, the field, expected and got."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def read_idx_bytes(data: bytes, path: str | os.PathLike = "<bytes>") -> torch.Tensor:
    """Parse the bytes of an (uncompressed) IDX file into a tensor of its dtype and shape."""
    if len(data) < 4:
        raise IDXFormatError(path, f"file is {len(data)} bytes; an IDX header needs at least 4")
    if data[0] != 0 or data[1] != 0:
        raise IDXFormatError(path, f"magic must start with two zero bytes; got {data[:2].hex()}")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise IDXFormatError(path, f"unknown dtype code 0x{code:02X}; expected one of {known}")
    if ndim == 0:
        raise IDXFormatError(path, "number of dimensions is 0; expected at least 1")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(path, f"header needs {header} bytes for {ndim} dims; file has {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise IDXFormatError(
            path, f"shape {shape} of {dtype.name} needs {expected} bytes; file has {len(data)}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an IDX file (gzip detected from its magic bytes, not its name) into a tensor."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise IDXFormatError(path, f"corrupt gzip stream ({exc})") from None
    return read_idx_bytes(raw, path)
