"""What the library writes under hostile conditions: a full disk ends every command in one line and
leaves no partial output, a killed writer's temporaries are cleaned up by the next write, class names
cannot break folder names, and pickled .npy members are refused, never loaded."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compressdata import MemoryBank
from compressdata.data.readers.webdataset import load_webdataset
from compressdata.files import atomic_write_bytes, remove_stale_temporaries
from compressdata.serving.export import MAX_FOLDER_NAME, class_folder_names, export_png

ROOT = Path(__file__).resolve().parent.parent


def bank_file(tmp_path: Path, classes: list[str] | None = None, n: int = 40) -> Path:
    classes = classes or ["a", "b"]
    g = torch.Generator().manual_seed(0)
    bank = MemoryBank(bases=torch.rand(4, 1, 8, 8, generator=g), addresses=torch.rand(n, 4, generator=g) / 4,
                      labels=torch.arange(n) % len(classes), classes=classes, image_size=(16, 16))
    path = tmp_path / "bank.safetensors"
    bank.save(path)
    return path


def run_cli_with_a_small_disk(commands: list[list[str]], limit: int, cwd: Path) -> list[tuple[int, str]]:
    """(exit status, stderr) of each `compressdata ARGS` run in one process that may write at most
    `limit` bytes per file (RLIMIT_FSIZE): a write past it fails with EFBIG, as a full disk fails
    with ENOSPC."""
    script = textwrap.dedent(f"""
        import contextlib, io, json, resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from compressdata.cli import main
        results = []
        for args in {commands!r}:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                status = main(args)
            results.append((status, err.getvalue()))
        print(json.dumps(results))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return [tuple(r) for r in json.loads(done.stdout.splitlines()[-1])]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_full_disk_ends_every_command_in_one_line_without_partial_output(tmp_path):
    source = bank_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    exports = [["export", str(source), str(out / fmt), "--format", fmt] for fmt in ("png", "hf", "webdataset")]
    others = [["preview", str(source), "-o", str(out / "grid.png")],
              ["query", str(source), "--vector", "1,0", "-o", str(out / "q.png")]]
    for args, (status, err) in zip(exports + others, run_cli_with_a_small_disk(exports + others, 100, tmp_path),
                                   strict=True):
        last = err.strip().splitlines()[-1]  # datasets may draw a progress bar first
        assert status == 1 and last.startswith(f"compressdata {args[0]}: error: "), err
        assert "File too large" in last or "No space left" in last, err
        assert "Traceback" not in err
    assert not any(p.is_file() for p in out.rglob("*")), sorted(out.rglob("*"))
    assert leftovers(out) == [] and leftovers(tmp_path) == []


def test_exports_are_complete_or_absent(tmp_path):
    source = MemoryBank.from_file(bank_file(tmp_path))
    paths = export_png(source, tmp_path / "png")
    assert len(paths) == len(source) and all(Path(p).is_file() for p in paths)
    with pytest.raises(FileExistsError, match="already exists and is not an empty folder"):
        export_png(source, tmp_path / "png")
    assert leftovers(tmp_path) == []


def test_long_and_odd_class_names_make_valid_distinct_folders(tmp_path):
    names = ["x" * 250, "x" * 250 + "y", "../../etc", "a/b", "\x1b[31m", "名前" * 100]
    folders = class_folder_names(names)
    assert len(set(folders)) == len(names)
    assert all(len(f.encode()) <= MAX_FOLDER_NAME + 20 and "/" not in f and not f.startswith(".") for f in folders)
    paths = export_png(MemoryBank.from_file(bank_file(tmp_path, names, n=12)), tmp_path / "png")
    assert len(paths) == 12
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == sorted([*folders, "classes.json"])


def test_a_killed_writer_leaves_temporaries_that_the_next_write_removes(tmp_path):
    target = tmp_path / "bank.safetensors"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from compressdata.files import atomic_write

        def write(tmp):
            Path(tmp).write_bytes(b"partial")
            time.sleep(600)

        atomic_write({str(target)!r}, write)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not leftovers(tmp_path):
            time.sleep(0.05)
        assert leftovers(tmp_path), "the writer never started"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    stale = leftovers(tmp_path)
    assert stale and all(name.endswith(".tmp") for name in stale) and not target.exists()
    atomic_write_bytes(target, b"complete")
    assert target.read_bytes() == b"complete" and leftovers(tmp_path) == []


def test_temporaries_of_a_live_writer_or_another_target_are_kept(tmp_path):
    mine = tmp_path / f".bank.safetensors.00000000.{os.getpid()}.abcdefgh.tmp"  # another host's name form
    other = tmp_path / ".other.safetensors.00000000.1.abcdefgh.tmp"
    mine.write_bytes(b"")
    other.write_bytes(b"")
    assert remove_stale_temporaries(tmp_path / "bank.safetensors") == []
    old = time.time() - 2 * 24 * 3600
    os.utime(mine, (old, old))
    assert remove_stale_temporaries(tmp_path / "bank.safetensors") == [mine]  # a day old: gone
    assert other.exists()


class Payload:
    """Unpickling this touches a marker file: the test fails if anything unpickles a .npy member."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_npy_members_are_refused_never_loaded(tmp_path):
    marker = tmp_path / "unpickled"
    buffer = io.BytesIO()
    np.save(buffer, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    image = io.BytesIO()
    Image.new("L", (4, 4)).save(image, format="PNG")
    shard = tmp_path / "shard-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("000000.npy", buffer.getvalue()), ("000000.cls", b"0")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="not a plain numeric array"):
        load_webdataset(str(shard))
    assert not marker.exists()
