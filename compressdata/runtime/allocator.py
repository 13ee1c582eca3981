"""The memory allocator of CPU runs.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with a fresh mmap and
unmaps it on free, so a training step page-faults its large activations afresh each time (one
ConvNet-128 activation of 290 images is 152 MB; on a 2-core machine about 44 % of such a run is
system time). A caching allocator keeps freed memory for the next step. The heavy commands
(`distill`, `evaluate`, `experts`, `continual`) therefore run on one, chosen by the environment
variable COMPRESSDATA_ALLOCATOR:

- `auto` (default): tcmalloc when installed (Debian `libtcmalloc-minimal4`; `tools/setup.sh`
  installs it), else glibc tuned in-process;
- `tcmalloc`, `jemalloc`: that library, preloaded by re-executing the command with LD_PRELOAD
  (jemalloc with its decay off, so that it keeps freed pages); a one-line note and glibc tuned in-process
  when it is not installed;
- `glibc`: glibc's malloc told never to use mmap nor to trim its heap (`mallopt`), in-process;
- `system`: leave the process as it was started.

Python programs that call the library directly can call `tune_glibc_malloc()` at start-up or run
under `LD_PRELOAD=libtcmalloc_minimal.so.4`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from compressdata.errors import ConfigError

ENV = "COMPRESSDATA_ALLOCATOR"
MODES = ("auto", "tcmalloc", "jemalloc", "glibc", "system")
# The environment marker of a re-executed command: never re-execute twice.
_REEXEC_MARK = "COMPRESSDATA_ALLOCATOR_REEXEC"
# Shared-object names, most specific first (found by the dynamic linker's own search).
LIBRARIES = {"tcmalloc": ("tcmalloc_minimal", "tcmalloc"), "jemalloc": ("jemalloc",)}
# jemalloc returns freed pages to the system after a decay time; off, it caches them like tcmalloc.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_glibc_tuned = False


class AllocatorError(ConfigError):
    """COMPRESSDATA_ALLOCATOR names no known allocator."""


@dataclass(frozen=True)
class AllocatorPlan:
    """What to do for this process: preload `library` by re-executing (None: stay), tune glibc
    in-process, and the one-line note to print (None: nothing worth saying)."""

    allocator: str
    library: str | None = None
    tune_glibc: bool = False
    note: str | None = None


def requested_mode(environ: dict[str, str] | None = None) -> str:
    """The allocator mode asked for by COMPRESSDATA_ALLOCATOR (default auto)."""
    mode = (environ if environ is not None else os.environ).get(ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise AllocatorError(f"{ENV}={mode!r} is not an allocator mode; expected one of {', '.join(MODES)}")
    return mode


def loaded_allocator() -> str:
    """The allocator serving this process: tcmalloc or jemalloc when mapped into it, else system."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    for name in LIBRARIES:
        if f"lib{name}" in maps:
            return name
    return "system"


def active_allocator() -> str:
    """The allocator this process runs on: tcmalloc, jemalloc, glibc (tuned) or system."""
    loaded = loaded_allocator()
    if loaded == "system" and _glibc_tuned:
        return "glibc (tuned)"
    return loaded


def find_allocator_library(name: str) -> str | None:
    """The shared object of allocator `name` the dynamic linker would load, or None."""
    for candidate in LIBRARIES[name]:
        found = ctypes.util.find_library(candidate)
        if found:
            return found
    return None


def _glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def plan_allocator(mode: str, loaded: str, reexecuted: bool) -> AllocatorPlan:
    """Decide what this process does for allocator `mode`, given what is loaded now and whether
    the command was already re-executed once."""
    if mode == "system":
        return AllocatorPlan(loaded)
    if loaded != "system":
        return AllocatorPlan(loaded)
    if mode == "glibc":
        return AllocatorPlan("glibc (tuned)", tune_glibc=_glibc())
    wanted = ("tcmalloc",) if mode == "auto" else (mode,)
    for name in wanted:
        library = find_allocator_library(name)
        if library and not reexecuted:
            return AllocatorPlan(name, library=library)
    fallback = "glibc (tuned)" if _glibc() else "system"
    if mode == "auto" and not reexecuted:
        return AllocatorPlan(fallback, tune_glibc=_glibc(),
                             note=f"allocator: tcmalloc not installed (Debian libtcmalloc-minimal4); using {fallback}")
    why = "could not be preloaded" if reexecuted else "is not installed"
    return AllocatorPlan(fallback, tune_glibc=_glibc(), note=f"allocator: {mode} {why}; using {fallback}")


def tune_glibc_malloc() -> bool:
    """Tell glibc's malloc to keep freed memory (no mmap for large blocks, no heap trimming);
    True when applied. Memory freed by a run stays with the process until it exits."""
    global _glibc_tuned
    if not _glibc():
        return False
    libc = ctypes.CDLL(None)
    _glibc_tuned = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**30))
    return _glibc_tuned


def use_caching_allocator(argv: Sequence[str]) -> str:
    """Put the command `argv` (the arguments after the program name) on the allocator
    COMPRESSDATA_ALLOCATOR asks for: re-execute it with the library preloaded (does not return),
    or tune glibc in-process. Returns the allocator in use; prints the plan's note to stderr."""
    reexecuted = os.environ.get(_REEXEC_MARK) == "1"
    plan = plan_allocator(requested_mode(), loaded_allocator(), reexecuted)
    if plan.library is not None:
        env = dict(os.environ)
        env["LD_PRELOAD"] = " ".join(filter(None, (plan.library, env.get("LD_PRELOAD"))))
        env[_REEXEC_MARK] = "1"
        if plan.allocator == "jemalloc":
            env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "compressdata", *argv], env)
    if plan.tune_glibc:
        tune_glibc_malloc()
    if plan.note:
        print(plan.note, file=sys.stderr)
    return plan.allocator
