"""`load_memory_bank` / `save_memory_bank`: one call from a local path or a Hub id to a bank."""

from __future__ import annotations

import os
from pathlib import Path

from compressdata.bank.memory_bank import MemoryBank


def save_memory_bank(bank: MemoryBank, path: str | os.PathLike) -> None:
    """Write `bank` to `path` atomically (temp file + rename); the bank is validated first."""
    bank.save(path)


def load_memory_bank(
    name_or_path: str | os.PathLike,
    config: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | None = None,
) -> MemoryBank:
    """Load a bank from a local file or a Hugging Face Hub dataset repo ("user/name").

    A local path wins when it exists or looks like a path (see `compressdata.hub.is_hub_id`);
    otherwise the name is a Hub repo id, downloaded through the huggingface_hub cache and
    checked against the bank's content checksum.
    """
    from compressdata.hub.load import load_hub_bank

    if is_local(name_or_path):
        return MemoryBank.from_file(name_or_path)
    return load_hub_bank(str(name_or_path), config=config, revision=revision,
                         cache_dir=cache_dir, token=token)


def is_local(name_or_path: str | os.PathLike) -> bool:
    """Whether `load_memory_bank` reads `name_or_path` as a local file (a Path, an existing file, or
    anything that looks like a path) rather than a Hub repo id."""
    from compressdata.hub.load import is_hub_id

    return isinstance(name_or_path, Path) or not is_hub_id(str(name_or_path))
