"""The distiller on real Fashion-MNIST: resume is exact, short runs learn, banks are complete,
and the `distill` / `evaluate` commands refuse bad options with clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from compressdata import DivergenceError, load_memory_bank
from compressdata.bank.memory_bank import MemoryBank
from compressdata.cli import main
from compressdata.data.sources import RealData, load_source
from compressdata.distiller.checkpoint import CHECKPOINT_FILE, MetricsLog, load_checkpoint, save_checkpoint
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.loop import distill
from compressdata.evaluate import evaluate_bank

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the local Fashion-MNIST files")

# A deliberately tiny run: fast on two shared cores, still every code path of the real thing.
TINY = DistillConfig.from_flat(iterations=6, unroll_steps=4, width=8, inner_batch_per_class=4,
                     real_batch_per_class=4, checkpoint_every=2, seed=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def train():
    return load_source("fashion-mnist", "train")


@pytest.fixture(scope="module")
def test_split():
    return load_source("fashion-mnist", "test")


@pytest.fixture(scope="module")
def uninterrupted(train):
    return distill(TINY, train, progress=False, log=lambda s: None)


def _quiet(_):
    return None


def test_ctrl_c_then_resume_equals_uninterrupted(train, uninterrupted, tmp_path):
    config = TINY.replace(checkpoint_dir=str(tmp_path / "ckpt"))

    def interrupt_after_third(state, metrics):
        if state.iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(config, train, progress=False, callback=interrupt_after_third, log=_quiet)
    state, saved = load_checkpoint(config.run.checkpoint_dir)
    assert state.iteration == 3  # written on Ctrl-C, not only at the periodic iteration 2
    assert saved == config.to_dict()
    resumed = distill(config.replace(resume=True), train, progress=False, log=_quiet)
    for name, tensor in uninterrupted.tensors.items():
        assert torch.equal(resumed.tensors[name], tensor), name
    assert resumed.checksum() == uninterrupted.checksum()
    log = MetricsLog(Path(config.run.checkpoint_dir) / "metrics.jsonl").records()
    assert [r["iteration"] for r in log] == [1, 2, 3, 4, 5, 6]


def test_killed_process_resumes_exactly(train, uninterrupted, tmp_path):
    """SIGKILL a real run after a periodic checkpoint; the resumed bank equals the uninterrupted."""
    resumed = _kill_and_resume(TINY.replace(checkpoint_dir=str(tmp_path / "ckpt")), train)
    assert resumed.checksum() == uninterrupted.checksum()


# The Adam outer optimiser with its cosine schedule (dwa's default) on the cheap bptt objective.
TINY_ADAM = TINY.replace(outer_optimizer="adam", outer_lr=0.01, outer_schedule="cosine")


def test_killed_adam_run_resumes_exactly(train, tmp_path):
    """The same for Adam: its second moments are checkpointed and the resumed bank is identical."""
    uninterrupted = distill(TINY_ADAM, train, progress=False, log=_quiet)
    ckpt = tmp_path / "ckpt"
    resumed = _kill_and_resume(TINY_ADAM.replace(checkpoint_dir=str(ckpt)), train)
    assert resumed.checksum() == uninterrupted.checksum()
    state, _ = load_checkpoint(ckpt)
    assert set(state.second_moment) == set(state.theta) == {"bases", "addresses"}
    assert all(bool((v > 0).any()) for v in state.second_moment.values())
    hyper = resumed.provenance["method"]["hyperparameters"]
    assert (hyper["outer_optimizer"], hyper["outer_schedule"], list(hyper["outer_betas"])) == ("adam", "cosine",
                                                                                              [0.5, 0.9])
    with pytest.raises(ValueError, match="different iterations"):  # the cosine schedule depends on them
        distill(TINY_ADAM.replace(checkpoint_dir=str(ckpt), resume=True, iterations=8), train, progress=False,
                log=_quiet)


def test_resume_refuses_missing_or_foreign_optimizer_buffers(train, tmp_path):
    sgd_dir, adam_dir = tmp_path / "sgd", tmp_path / "adam"
    config = TINY.replace(iterations=1)
    distill(config.replace(checkpoint_dir=str(sgd_dir)), train, progress=False, log=_quiet)
    with pytest.raises(ValueError, match="different outer_betas, outer_lr, outer_momentum, outer_optimizer"):
        distill(config.replace(outer_optimizer="adam", checkpoint_dir=str(sgd_dir), resume=True), train,
                progress=False, log=_quiet)
    adam = config.replace(outer_optimizer="adam", outer_lr=0.01, checkpoint_dir=str(adam_dir))
    distill(adam, train, progress=False, log=_quiet)
    state, saved = load_checkpoint(adam_dir)
    save_checkpoint(adam_dir, replace(state, second_moment={}), saved)  # an adam run without its buffers
    with pytest.raises(ValueError, match=r"the adam outer optimiser needs a second moment per theta tensor "
                                         r"\['addresses', 'bases'\], the checkpoint has \[\]"):
        distill(adam.replace(resume=True, iterations=2), train, progress=False, log=_quiet)


def _kill_and_resume(config: DistillConfig, train: RealData) -> MemoryBank:
    """Run `config` in a real process, SIGKILL it after the periodic checkpoint of iteration 2 and
    return the bank of the resumed run."""
    ckpt = Path(config.run.checkpoint_dir)
    script = (
        "import json, time, torch\n"
        "torch.set_num_threads(1)\n"
        "from compressdata.distiller.config import DistillConfig\n"
        "from compressdata.distiller.loop import distill\n"
        f"config = DistillConfig.from_dict(json.loads({json.dumps(json.dumps(config.to_dict()))}))\n"
        "distill(config, progress=False, callback=lambda state, metrics: time.sleep(1))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (ckpt / CHECKPOINT_FILE).is_file() and load_checkpoint(ckpt)[0].iteration >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = load_checkpoint(ckpt)[0].iteration
    assert 2 <= done < config.outer.iterations
    return distill(config.replace(resume=True), train, progress=False, log=_quiet)


def test_checkpoint_is_safetensors_with_canonical_json(train, tmp_path):
    config = TINY.replace(iterations=2, learn_labels=True, checkpoint_dir=str(tmp_path),
                     eval_every=2, eval_epochs=1)
    distill(config, train, progress=False, log=_quiet)
    log = MetricsLog(tmp_path / "metrics.jsonl").records()
    assert "eval_accuracy" not in log[0] and 0.0 <= log[1]["eval_accuracy"] <= 1.0
    path = tmp_path / CHECKPOINT_FILE
    with safe_open(path, framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
        rng = f.get_tensor("rng.master")
    assert keys == {"theta.bases", "theta.addresses", "theta.labels", "momentum.bases",
                    "momentum.addresses", "momentum.labels", "rng.master"}
    assert rng.dtype == torch.uint8
    assert list(meta) == ["compressdata.checkpoint"]
    raw = meta["compressdata.checkpoint"]
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    assert json.loads(raw)["iteration"] == 2
    assert not list(tmp_path.glob("*.tmp")), "temporary files left behind"


def test_resume_refuses_a_different_configuration(train, tmp_path):
    config = TINY.replace(iterations=2, checkpoint_dir=str(tmp_path))
    distill(config, train, progress=False, log=_quiet)
    with pytest.raises(ValueError, match="different inner_lr, seed"):
        distill(config.replace(resume=True, seed=4, inner_lr=0.02), train, progress=False,
                log=_quiet)
    # more iterations is a legal change: continue from 2 to 3
    bank = distill(config.replace(resume=True, iterations=3), train, progress=False, log=_quiet)
    assert bank.provenance["method"]["iterations_done"] == 3


def test_short_rtp_run_beats_chance(train, test_split):
    """Random (xavier) init, 10 outer iterations of BPTT: far above the 10% chance level."""
    config = DistillConfig.from_flat(iterations=10, unroll_steps=6, width=16, inner_batch_per_class=8,
                           real_batch_per_class=16, outer_lr=1.0, seed=0)
    bank = distill(config, train, progress=False, log=_quiet)
    result = evaluate_bank(bank, test_split.subset(torch.arange(2000)), networks=1, epochs=30,
                           progress=False)  # the recipe records width 16
    assert result.mean > 0.25, result.summary()


def test_banks_carry_recipe_provenance_and_storage(train):
    rtp = distill(TINY.replace(iterations=1, learn_labels=True, budget_ipc=2, n_bases=16, downsample=2),
                  train, progress=False, log=_quiet)
    assert rtp.kind == "memory" and rtp.label_space == "logits"
    assert rtp.tensors["bases"].shape == (16, 1, 14, 14)
    per_class = (2 * 784 * 10 - 16 * 196) // (16 * 10)
    assert rtp.tensors["addresses"].shape == (10 * per_class, 16)
    assert rtp.recipe.label_loss == "soft_cross_entropy"
    model = TINY.model
    assert rtp.recipe.network_options() == {"width": model.width, "depth": model.depth, "norm": model.norm}
    assert rtp.storage["floats_stored"] <= 2 * 784 * 10
    prov = rtp.provenance
    assert prov["budget_ipc"] == 2 and prov["method"]["name"] == "rtp"
    hyper = prov["method"]["hyperparameters"]
    assert hyper["unroll_steps"] == TINY.inner.unroll_steps and hyper["objective"] == "bptt"
    assert not [k for k in hyper if k.startswith(("mtt_", "dwa_", "gm_", "mim_", "stream_"))], hyper
    assert "checkpoint_dir" not in hyper and "device" not in hyper
    assert prov["source"] == {"dataset": "fashion-mnist", "split": "train", "examples": 60000}
    assert prov["library"]["version"] and prov["created"].endswith("+00:00")

    pixels = distill(TINY.replace(iterations=1, method="pixels"), train, progress=False,
                     log=_quiet)
    assert pixels.kind == "pixels" and len(pixels) == 10
    assert pixels.hard_labels().tolist() == list(range(10))

    real = distill(TINY.replace(method="random-real", budget_ipc=3), train, progress=False,
                   log=_quiet)
    assert real.kind == "pixels" and len(real) == 30
    # random-real stores real images: each equals some training image exactly
    first = real.decode(torch.tensor([0]))[0]
    assert (train.images == first).flatten(1).all(1).any()


def test_zca_bank_carries_its_whitening(train):
    subset = train.subset(torch.arange(5000))  # fitting ZCA on 60k images is slow on 2 cores
    bank = distill(TINY.replace(iterations=1, zca=True), subset, progress=False, log=_quiet)
    assert bank.normalization.uses_zca
    assert bank.normalization.zca_whiten.shape == (784, 784)


def test_cli_distill_then_evaluate_and_record(tmp_path, capsys):
    out = tmp_path / "real.safetensors"
    assert main(["distill", "--method", "random-real", "--parameterization.budget_ipc", "1", "--out", str(out),
                 "--progress", "false"]) == 0
    printed = capsys.readouterr().out
    assert "pixels: 1 examples per class" in printed and "wrote" in printed
    assert main(["evaluate", str(out), "--test", "fashion-mnist", "--networks", "1",
                 "--epochs", "2", "--width", "8", "--augmentation", "dsa", "--lr", "0.03", "--record",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "+-" in printed and "recorded" in printed
    bank = load_memory_bank(out)
    assert len(bank.evaluations) == 1 and bank.evaluations[0].epochs == 2
    assert bank.evaluations[0].extra["augmentation"] == "dsa" and bank.evaluations[0].extra["lr"] == 0.03
    assert bank.recipe.augmentation == "none"  # the override does not change the bank's recipe
    assert 0.0 <= bank.evaluations[0].mean <= 1.0


def test_cli_distill_rtp_prints_layout_and_writes_checkpoints(tmp_path, capsys):
    out = tmp_path / "rtp.safetensors"
    ckpt = tmp_path / "rtp.safetensors.ckpt"
    args = ["distill", "--out", str(out), "--outer.iterations", "2", "--inner.unroll_steps", "3",
            "--model.width", "8", "--inner.batch_per_class", "2", "--outer.real_batch_per_class", "2",
            "--progress", "false", "--profile", "gpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "K=20 bases at ds=2, 19 examples per class" in printed  # the budget's default layout
    assert (ckpt / CHECKPOINT_FILE).is_file()
    bank = load_memory_bank(out)
    assert bank.kind == "memory" and bank.provenance["profile"] == "gpu"
    assert {k: bank.provenance["method"]["hyperparameters"][k] for k in ("n_bases", "downsample")} == \
        {"n_bases": 20, "downsample": 2}
    assert main(args) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    # the same command again with --force: the finished run's checkpoint does not stand in the way
    assert main([*args, "--force"]) == 0
    assert "starting afresh: replacing the checkpoint" in capsys.readouterr().out
    assert load_memory_bank(out).checksum() == bank.checksum()  # the same run, done again
    # an unfinished run's checkpoint (2 of 5 iterations) stops a fresh run, which names both ways on
    state, saved = load_checkpoint(ckpt)
    save_checkpoint(ckpt, state, {**saved, "iterations": 5})
    assert main([*args, "--force"]) == 0  # --force: start afresh
    save_checkpoint(ckpt, state, {**saved, "iterations": 5})
    out.unlink()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "holds the checkpoint of an unfinished run (iteration 2 of 5); continue it with --resume, or start " \
           "afresh with --force" in err and "resume=True" not in err
    assert main([*args, "--resume", "--outer.iterations", "3"]) == 0
    assert load_memory_bank(out).provenance["method"]["iterations_done"] == 3


@pytest.mark.parametrize("args, message", [
    (["--parameterization.budget_ipc", "0"], "budget_ipc must be a positive number"),
    (["--parameterization.budget_ipc", "0.2", "--parameterization.n_bases", "16",
     "--parameterization.downsample", "2"], "budget too small for memory"),
    (["--parameterization.downsample", "3"], "downsample 3 does not divide the image size 28x28"),
    (["--inner.unroll_steps", "0"], "unroll_steps must be a positive int"),
    (["--inner.momentum", "1.5"], "inner_momentum must be in [0, 1)"),
    (["--data.source", "no-such-data"], "unknown source 'no-such-data'"),
    (["--run.resume", "true", "--checkpoints", "false"], "resume needs a checkpoint directory"),
    (["--run.resume", "true"], "no checkpoint to resume from"),
    (["--data.dsa", "true", "--data.dsa_strategy", "flip_spin"], "unknown ops ['spin']"),
    (["--method", "random-real", "--parameterization.learn_labels", "true"], "random-real does no optimisation"),
    (["--inner.bptt_window", "60"], "bptt_window (60) must be at most unroll_steps (50)"),
    (["--inner.bptt_window", "5", "--objective", "dm"], "bptt_window truncates the bptt objective"),
    (["--inner.bptt_window", "5", "--scale.network_batching", "vmap"], "use network_batching 'loop'"),
    (["--inner.graph_memory_mb", "-1"], "graph_memory_mb must be a number >= 0"),
    (["--outer.optimizer", "adam", "--outer.momentum", "0.9"], "outer_momentum (0.9) is an sgd option"),
    (["--outer.optimizer", "adam", "--outer.betas", "[0.5,1]"], "outer_betas must be two numbers in [0, 1)"),
    (["--run.device", "cuda:7"] if not torch.cuda.is_available() else ["--run.device", "tpu"],
     "device"),
])
def test_cli_bad_options_give_clear_errors(tmp_path, capsys, args, message):
    out = tmp_path / "x.safetensors"
    assert main(["distill", "--out", str(out), "--outer.iterations", "1", "--progress", "false", "--profile", "gpu",
                 *args]) == 1
    err = capsys.readouterr().err
    assert "compressdata distill: error:" in err and message in err, err
    assert not out.exists()


def test_cli_bad_out_and_bad_evaluate_options(tmp_path, capsys):
    assert main(["distill", "--out", str(tmp_path / "missing" / "x.safetensors")]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["distill", "--out", "x.safetensors", "--method", "magic"])
    assert "magic" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.safetensors"), "--test", "fashion-mnist",
                 "--record"]) == 1
    assert "--record writes into a local bank file" in capsys.readouterr().err
    assert main(["evaluate", "x.safetensors", "--test", "fashion-mnist", "--networks", "0"]) == 1
    assert "--networks must be >= 1" in capsys.readouterr().err


def test_a_diverging_run_stops_with_a_clear_error_and_a_finite_checkpoint(train, tmp_path):
    config = TINY.replace(method="pixels", outer_lr=1e38, clip_norm=1e38, checkpoint_dir=str(tmp_path / "ck"))
    with pytest.raises(DivergenceError, match=r"outer iteration \d+ diverged: the pixels loss or tensors became "
                                              r"NaN/Inf \(outer lr 1e\+38"):
        distill(config, train, progress=False, log=_quiet)
    state, _ = load_checkpoint(tmp_path / "ck", "cpu")
    assert state.iteration >= 1 and all(bool(torch.isfinite(v).all()) for v in state.theta.values())
