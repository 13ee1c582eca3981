"""Read `.pt` files without running their code: `torch.load(weights_only=True)` only.

The restricted unpickler rebuilds tensors, numbers, strings and lists / tuples / dicts, and refuses
any other global, so a malicious `__reduce__` never runs. The only additions allowed are numpy
scalars (DC / DSA / DM result files store their accuracies as numpy floats), which rebuild a number
from a dtype and raw bytes. Zip-format files are memory-mapped, so only the tensors a caller keeps
are ever read into memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compressdata.errors import MissingFileError
from compressdata.interop.errors import InteropError, UnsafeFileError


def _numpy_scalar_globals() -> list[Any]:
    """The numpy scalar rebuilders, under the names numpy 1.x and 2.x files use for them."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    entries: list[Any] = [np.dtype, (scalar, "numpy.core.multiarray.scalar"),
                          (scalar, "numpy._core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        entries += [getattr(dtypes, name) for name in dir(dtypes)
                    if name.endswith("DType") and name[:-5].rstrip("0123456789") in
                    ("Float", "Int", "UInt", "Bool")]
    return entries


_ALLOWED_PREFIXES = ("numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")


@contextlib.contextmanager
def _allow_numpy_scalars() -> Iterator[None]:
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch < 2.5: numpy scalars stay refused
        yield
        return
    with safe_globals(_numpy_scalar_globals()):
        yield


def load_pt(path: str | Path) -> Any:
    """The object a `.pt` file holds, read with `torch.load(weights_only=True)` on the CPU.

    Raises `FileNotFoundError`, `UnsafeFileError` (the file needs full unpickling; the message
    names what it would have run) or `InteropError` (not a readable `torch.save` file).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file")
    mmap = zipfile.is_zipfile(path)
    try:
        with _allow_numpy_scalars():
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(_refusal(path, e), path) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InteropError(f"not a readable torch.save file ({first})", path) from None


def _refusal(path: Path, error: Exception) -> str:
    unsafe: list[str] = []
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if finder is not None and zipfile.is_zipfile(path):
        with contextlib.suppress(Exception):
            unsafe = [g for g in finder(path) if not g.startswith(_ALLOWED_PREFIXES)]
    if not unsafe:
        unsafe = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line or "global" in line][:1]
    named = f" (it references {', '.join(unsafe)})" if unsafe else ""
    return (f"refused: the file holds objects beyond tensors and plain containers{named}, and reading it "
            "would need full unpickling, which can run arbitrary code. Nothing in it was run. If you trust "
            "its origin, load it in a separate process and re-save only tensors, e.g. "
            "torch.save({'images': images, 'labels': labels}, 'plain.pt').")


def file_record(path: str | Path) -> dict[str, Any]:
    """{"name", "bytes", "sha256"} of a source file, for a bank's provenance."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def source_records(files: list[Path], listed: int = 16) -> list[dict[str, Any]]:
    """Provenance of the files read: one `file_record` each, or, for more than `listed` files (an
    image folder), one record of their common folder whose sha256 is taken over the sorted lines
    "<relative path> <sha256 of the file>"."""
    if len(files) <= listed:
        return [file_record(f) for f in files]
    root = Path(os.path.commonpath([str(f) for f in files]))
    lines = sorted(f"{Path(f).relative_to(root).as_posix()} {file_record(f)['sha256']}" for f in files)
    digest = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    return [{"name": root.name, "files": len(files), "bytes": sum(Path(f).stat().st_size for f in files),
             "sha256": digest, "sha256_of": "sorted lines '<relative path> <file sha256>'"}]
