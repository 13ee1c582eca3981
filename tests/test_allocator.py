"""Heavy commands run on a caching allocator: the plan for every mode, and the real command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from compressdata.runtime import allocator
from compressdata.runtime.allocator import AllocatorError, plan_allocator, requested_mode


def test_requested_mode_reads_the_environment():
    assert requested_mode({}) == "auto"
    assert requested_mode({"COMPRESSDATA_ALLOCATOR": " TCMalloc "}) == "tcmalloc"
    with pytest.raises(AllocatorError, match="'bogus' is not an allocator mode"):
        requested_mode({"COMPRESSDATA_ALLOCATOR": "bogus"})


def test_plan_for_every_mode(monkeypatch):
    monkeypatch.setattr(allocator, "find_allocator_library",
                        lambda name: "libtcmalloc_minimal.so.4" if name == "tcmalloc" else None)
    auto = plan_allocator("auto", "system", reexecuted=False)
    assert (auto.allocator, auto.library, auto.note) == ("tcmalloc", "libtcmalloc_minimal.so.4", None)
    assert plan_allocator("system", "system", reexecuted=False).library is None
    assert plan_allocator("tcmalloc", "tcmalloc", reexecuted=True).library is None  # already preloaded
    glibc = plan_allocator("glibc", "system", reexecuted=False)
    assert glibc.library is None and glibc.tune_glibc and glibc.note is None
    missing = plan_allocator("jemalloc", "system", reexecuted=False)
    assert missing.library is None and missing.tune_glibc
    assert missing.note == "allocator: jemalloc is not installed; using glibc (tuned)"
    failed = plan_allocator("auto", "system", reexecuted=True)  # preloading did not take: never loop
    assert failed.library is None and "could not be preloaded" in failed.note


def test_auto_falls_back_to_tuned_glibc_with_a_note(monkeypatch):
    monkeypatch.setattr(allocator, "find_allocator_library", lambda name: None)
    plan = plan_allocator("auto", "system", reexecuted=False)
    assert plan.tune_glibc and plan.library is None
    assert plan.note == ("allocator: tcmalloc not installed (Debian libtcmalloc-minimal4); "
                         "using glibc (tuned)")


def _distill(tmp_path, mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMPRESSDATA_ALLOCATOR": mode, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "compressdata", "distill", "--out", str(tmp_path / f"{mode}.safetensors"),
         "--outer.iterations", "1", "--model.width", "8", "--inner.unroll_steps", "2",
         "--outer.real_batch_per_class", "4",
         "--progress", "false", "--checkpoints", "false"],
        capture_output=True, text=True, env=env, timeout=300, check=False)


def test_the_command_line_runs_distill_on_the_caching_allocator(tmp_path):
    expected = "tcmalloc" if allocator.find_allocator_library("tcmalloc") else "glibc (tuned)"
    auto = _distill(tmp_path, "auto")
    assert auto.returncode == 0, auto.stderr
    assert f"allocator {expected}" in auto.stdout
    system = _distill(tmp_path, "system")
    assert system.returncode == 0, system.stderr
    assert "allocator system" in system.stdout


def test_an_unknown_mode_is_a_one_line_error(tmp_path):
    result = _distill(tmp_path, "bogus")
    assert result.returncode == 2
    assert result.stderr.strip() == ("compressdata: error: COMPRESSDATA_ALLOCATOR='bogus' is not an allocator "
                                     "mode; expected one of auto, tcmalloc, jemalloc, glibc, system")
