"""Data-parallel distillation on the CPU with gloo and 2 real processes on loopback: the result does
not depend on the world size, a dead rank makes the others fail within the collective timeout with
a checkpoint left, resuming with another world size completes, and G networks per iteration agree
between the Python loop and the vmap-vectorised bptt."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from compressdata import load_memory_bank
from compressdata.distiller.checkpoint import CHECKPOINT_FILE, load_checkpoint
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.loop import distill
from compressdata.runtime.distributed import World

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the local Fashion-MNIST files"),
              pytest.mark.usefixtures("one_torch_thread")]
REPO = Path(__file__).resolve().parents[1]

TINY = DistillConfig.from_flat(iterations=4, unroll_steps=3, width=8, inner_batch_per_class=3,
                     real_batch_per_class=3, checkpoint_every=2, seed=5, networks_per_iteration=2,
                     device="cpu")
# networks_per_iteration left out: on the command line it defaults to one network per process (2 here)
TINY_ARGS = ["--outer.iterations", "4", "--inner.unroll_steps", "3", "--model.width", "8",
             "--inner.batch_per_class", "3",
             "--outer.real_batch_per_class", "3", "--run.checkpoint_every", "2", "--run.seed", "5",
             "--run.device", "cpu", "--progress", "false", "--profile", "gpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def _quiet(_message: str) -> None:
    return None


@pytest.fixture(scope="module")
def train():
    from compressdata.data.sources import load_source

    return load_source("fashion-mnist", "train")


def test_world_share_splits_networks_disjointly_and_completely():
    for n in (2, 3, 7):
        for size in (1, 2, 3):
            if size > n:
                continue
            shares = [list(World(r, size).share(n)) for r in range(size)]
            assert sorted(i for s in shares for i in s) == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_networks_per_iteration_loop_and_vmap_agree(train):
    loop = distill(TINY.replace(iterations=2, networks_per_iteration=3), train, progress=False,
                   log=_quiet)
    vmap = distill(TINY.replace(iterations=2, networks_per_iteration=3, network_batching="vmap"),
                   train, progress=False, log=_quiet)
    single = distill(TINY.replace(iterations=2, networks_per_iteration=1), train, progress=False,
                     log=_quiet)
    for k in loop.tensors:
        torch.testing.assert_close(vmap.tensors[k], loop.tensors[k], rtol=1e-4, atol=1e-5)
        assert not torch.allclose(single.tensors[k], loop.tensors[k])  # G really changes the run


def test_torchrun_two_processes_equal_single_process(train, tmp_path):
    """Launched without --networks-per-iteration: one network per process, the run of G = 2 in one process."""
    out = tmp_path / "dist.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "compressdata", "distill", *TINY_ARGS, "--out", str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # only rank 0 writes and speaks
    reference = distill(TINY, train, progress=False, log=_quiet)
    bank = load_memory_bank(out)
    assert bank.provenance["method"]["hyperparameters"]["networks_per_iteration"] == 2  # one per process
    for k in reference.tensors:
        torch.testing.assert_close(bank.tensors[k], reference.tensors[k], rtol=1e-5, atol=1e-6)
    state, _ = load_checkpoint(f"{out}.ckpt")
    assert state.iteration == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist.safetensors", "dist.safetensors.ckpt"]


def test_dead_rank_fails_cleanly_then_resume_with_one_process(train, tmp_path):
    ckpt = tmp_path / "ckpt"
    port = str(_free_port())
    args = [sys.executable, "-m", "compressdata", "distill", *TINY_ARGS, "--outer.iterations", "500",
            "--run.checkpoint_every", "1", "--scale.collective_timeout", "30", "--run.checkpoint_dir", str(ckpt),
            "--out", str(tmp_path / "never.safetensors")]
    procs = [subprocess.Popen(args, env=_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r),
                                             MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    try:
        deadline = time.monotonic() + 180
        while not (ckpt / CHECKPOINT_FILE).exists():
            assert time.monotonic() < deadline, "no checkpoint appeared"
            assert procs[0].poll() is None, procs[0].communicate()[1][-3000:]
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        out, err = procs[0].communicate(timeout=90)
        assert time.monotonic() - killed < 60  # bounded: the collective fails, it does not hang
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[0].returncode == 1, err[-3000:]
    assert "all-reduce with the other ranks failed" in err
    assert "written to" in out and "--run.resume true" in out
    assert not (tmp_path / "never.safetensors").exists()
    state, _ = load_checkpoint(ckpt)
    assert 1 <= state.iteration < 500
    # resume in ONE process (world size 2 -> 1): same global configuration, so the same bank as an
    # uninterrupted run
    stop = state.iteration + 2
    resumed = distill(TINY.replace(iterations=stop, checkpoint_every=1, checkpoint_dir=str(ckpt),
                              resume=True), train, progress=False, log=_quiet)
    reference = distill(TINY.replace(iterations=stop), train, progress=False, log=_quiet)
    for k in reference.tensors:
        torch.testing.assert_close(resumed.tensors[k], reference.tensors[k], rtol=1e-5, atol=1e-6)


def test_more_processes_than_networks_is_a_clear_error():
    with pytest.raises(ValueError, match="network_batching"):
        DistillConfig.from_flat(network_batching="grouped").validate()
    with pytest.raises(ValueError, match="networks_per_iteration"):
        DistillConfig.from_flat(networks_per_iteration=0).validate()


def test_torchrun_evaluate_one_network_per_rank(train, tmp_path):
    from compressdata.data.sources import load_source
    from compressdata.evaluate import evaluate_bank
    from compressdata.loading import save_memory_bank

    bank = distill(TINY.replace(method="random-real"), train, progress=False, log=_quiet)
    path = tmp_path / "bank.safetensors"
    save_memory_bank(bank, path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "compressdata", "evaluate", str(path), "--test", "fashion-mnist", "--networks", "3",
           "--epochs", "1", "--width", "8", "--device", "cpu", "--record", "--no-progress"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("accuracy ") == 1  # rank 0 prints once
    recorded = load_memory_bank(path).evaluations[-1]
    expected = evaluate_bank(bank, load_source("fashion-mnist", "test"), networks=3, epochs=1,
                             width=8, device="cpu", progress=False, baselines=True,
                             train=load_source("fashion-mnist", "train"))
    assert recorded.accuracies == pytest.approx(expected.accuracies, abs=1e-9)
    assert recorded.extra["ranks"] == 2 and recorded.extra["seeds"] == [0, 1, 2]
    random_real = recorded.baselines["random_real"]  # split over the ranks like the networks
    assert random_real.accuracies == pytest.approx(expected.baselines["random_real"].accuracies, abs=1e-9)
    assert random_real.extra["seeds"] == [0, 1, 2] and random_real.extra["subset_seed"] == 0
