"""Atomic file writes: never a half-written file, whatever the writer and however it fails.

Temporary files and folders are hidden beside their target and named after it, this host and this
process (`.NAME.HOST.PID.RANDOM.tmp`), so the next write of the same target removes what a killed
writer left (its process is gone, or the leftover is a day old).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from compressdata.errors import OutputExistsError

STALE_AFTER_SECONDS = 24 * 3600
_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_LONG_NAME = 160


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp) on a temporary path in `path`'s folder, fsync it, give it the usual file mode
    (0666 minus the umask) and rename it onto `path`; on any failure the temp file is removed and
    `path` is left as it was. Parent folders are created."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside `path`; when the block ends normally the folder is
    renamed to `path`, otherwise it is removed, so `path` is either complete or absent.

    `path` must not exist or be an empty folder (FileExistsError otherwise, before any work)."""
    target = Path(path)
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise OutputExistsError(f"{target} already exists and is not an empty folder; choose a new output folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    staging = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_current_umask())  # mkdtemp creates 0700
        if target.is_dir():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def staging_directory(target: str | os.PathLike) -> Path:
    """A new hidden folder beside `target` named like `atomic_write`'s temporaries (the caller moves
    its content into place and removes it); stale ones of the same target are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    return Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders a killed writer of `target` left beside it: those of
    a process of this host that no longer runs, and any older than a day. Returns what was removed."""
    target = Path(target)
    prefix = f".{_stem(target)}."
    # mkstemp / mkdtemp add 8 characters of [a-z0-9_]; files of older versions lack host and pid
    pattern = re.compile(re.escape(prefix) + r"(?:(?P<host>[0-9a-f]{8})\.(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp")
    removed = []
    try:
        candidates = [e for e in os.scandir(target.parent) if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return removed
    now = time.time()
    for entry in candidates:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_SECONDS
        except OSError:
            continue
        orphan = match["host"] == _HOST and int(match["pid"]) != os.getpid() and not _process_alive(int(match["pid"]))
        if not (old or orphan):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _stem(target: Path) -> str:
    name = target.name
    if len(name) <= _LONG_NAME:
        return name
    return f"{name[:100]}-{hashlib.sha1(name.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def _temp_prefix(target: Path) -> str:
    return f".{_stem(target)}.{_HOST}.{os.getpid()}."


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there; rely on the age rule
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
