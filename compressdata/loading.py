"""`load_memory_bank` / `save_memory_bank`: one call from a local path or a Hub id to a bank; and the
`BANK [--config] [--revision]` arguments of the commands that read one."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from compressdata.bank.io import BankHeader, read_bank_header
from compressdata.bank.memory_bank import MemoryBank
from compressdata.errors import MissingFileError, UsageError


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

    A local path wins when it exists or looks like a path (see `compressdata.hub.is_hub_id`: a
    `user/name` whose `user` is a local folder is a path too, and a missing one fails at once);
    otherwise the name is a Hub repo id, downloaded through the huggingface_hub cache and
    checked against the bank's content checksum. `config` and `revision` apply to Hub repos only.
    """
    from compressdata.hub.load import load_hub_bank

    if not is_local(name_or_path):
        return load_hub_bank(str(name_or_path), config=config, revision=revision,
                             cache_dir=cache_dir, token=token)
    if config is not None or revision is not None:
        raise UsageError(f"{name_or_path} is a local file; config and revision select a bank in a Hub repo",
                         cli_hint="--config and --revision apply to Hub ids")
    with _hint_for_missing(name_or_path):
        return MemoryBank.from_file(name_or_path)


def read_local_header(path: str | os.PathLike) -> BankHeader:
    """`read_bank_header(path)`, a missing file's error saying when the name looked like a Hub id."""
    with _hint_for_missing(path):
        return read_bank_header(path)


@contextlib.contextmanager
def _hint_for_missing(name_or_path: str | os.PathLike) -> Iterator[None]:
    """A MissingFileError for `folder/name` whose `folder` exists says how to name the Hub repo instead."""
    try:
        yield
    except MissingFileError as err:
        folder = _local_namespace(name_or_path)
        if folder is None:
            raise
        raise MissingFileError(
            str(err), hint=f"{folder}/ is a local folder, so {name_or_path} names a file in it, not a Hub repo; "
                           f"write hf://{name_or_path} for the Hub repo of that name") from None


def is_local(name_or_path: str | os.PathLike) -> bool:
    """Whether `load_memory_bank` reads `name_or_path` as a local file (a Path, an existing file, or
    anything that looks like a path) rather than a Hub repo id."""
    from compressdata.hub.load import is_hub_id

    return isinstance(name_or_path, Path) or not is_hub_id(str(name_or_path))


def _local_namespace(name_or_path: str | os.PathLike) -> str | None:
    """`user` when `name_or_path` is `user/name` (no hf:// prefix) and `user` is a local folder."""
    name = str(name_or_path)
    head, sep, _ = name.partition("/")
    if not sep or name.startswith("hf://") or not head or not Path(head).is_dir():
        return None
    return head


def add_bank_arguments(parser: argparse.ArgumentParser) -> None:
    """The positional BANK (a bank file or Hub id) and the Hub's --config and --revision."""
    parser.add_argument("bank", help="bank file or Hub id (namespace/name; hf://namespace/name forces the Hub)")
    parser.add_argument("--config", default=None, help="the config of a Hub repo holding several (e.g. ipc10)")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or full commit id (default main)")


def load_bank_argument(args: argparse.Namespace) -> MemoryBank:
    """The bank `add_bank_arguments`' arguments name."""
    return load_memory_bank(args.bank, config=args.config, revision=args.revision)
