"""Reader `idx:FOLDER`: MNIST-layout folders of IDX files, gzip-compressed or plain.

IDX files (the MNIST / Fashion-MNIST format):

Layout: two zero bytes, a dtype code, the number of dimensions n, n big-endian uint32 sizes, then
the row-major big-endian data. Every field is checked before the data are trusted.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from compressdata.data.real import RealData, Statistics, check_split, real_data
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


def find_idx_files(folder: str | os.PathLike, split: str) -> tuple[Path, Path] | None:
    """(images, labels) IDX files of `split` in an MNIST-layout folder, or None."""
    prefixes = {"train": ("train",), "test": ("t10k", "test")}.get(split, (split,))
    folder = Path(folder)

    def first(prefix: str, what: str, dims: str) -> Path | None:
        names = (f"{prefix}-{what}{sep}{dims}-ubyte{gz}" for sep in ("-", ".") for gz in (".gz", ""))
        return next((folder / n for n in names if (folder / n).is_file()), None)

    for prefix in prefixes:
        images, labels = first(prefix, "images", "idx3"), first(prefix, "labels", "idx1")
        if images is not None and labels is not None:
            return images, labels
    return None


def load_idx_folder(folder: str | os.PathLike, split: str = "train", name: str | None = None,
                    classes: Sequence[str] | None = None, statistics: Statistics | None = None
                    ) -> RealData:
    """An MNIST-layout folder: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]."""
    name = name or f"idx:{folder}"
    check_split(split, name)
    found = find_idx_files(folder, split)
    if found is None:
        raise MissingFileError(f"{name}: no {split} IDX files in {folder} (expected e.g. "
                                f"{'train' if split == 'train' else 't10k'}-images-idx3-ubyte.gz "
                                f"and ...-labels-idx1-ubyte.gz)")
    images, labels = read_idx(found[0]), read_idx(found[1])
    if images.ndim != 3 or images.dtype != torch.uint8:
        raise SourceError(f"{found[0]}: expected uint8 images [N, H, W]; got {images.dtype} "
                         f"{tuple(images.shape)}")
    if labels.ndim != 1 or labels.is_floating_point():
        raise SourceError(f"{found[1]}: expected integer labels [N]; got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise SourceError(f"{name}: {images.shape[0]} images in {found[0].name} but "
                         f"{labels.shape[0]} labels in {found[1].name}")
    return real_data(images.unsqueeze(1), labels.to(torch.int64), classes, name, split, statistics)


def read(spec: str, split: str, *, root: str | os.PathLike | None = None, download: bool = False,
         name: str | None = None) -> RealData:
    """The `idx:FOLDER` reader."""
    return load_idx_folder(spec, split, name=name)
