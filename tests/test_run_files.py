"""Crafted files of a distillation run (checkpoints, MTT expert trajectories, DWA teachers) end in a
`CheckpointError` naming the file and the field, never in a traceback from torch or safetensors or in
a run that silently does something else; a rerun starts its metrics fresh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from compressdata.container import canonical_json, read_file
from compressdata.data.sources import load_source
from compressdata.distiller.checkpoint import CHECKPOINT, CHECKPOINT_FILE, METRICS_FILE, MetricsLog
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.experts import EXPERT, ExpertConfig, ExpertStore, expert_file, train_experts
from compressdata.distiller.loop import distill
from compressdata.distiller.teacher import TEACHER, load_teacher, save_teacher, train_teacher
from compressdata.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = DistillConfig.from_flat(iterations=2, unroll_steps=2, width=8, inner_batch_per_class=2, real_batch_per_class=2,
                     checkpoint_every=2, seed=3)
KEY = "compressdata.checkpoint"


@pytest.fixture(scope="module")
def train():
    return load_source("fashion-mnist", "train")


@pytest.fixture(scope="module")
def small(train):
    return train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:300])


def _quiet(_: str) -> None:
    return None


@pytest.fixture(scope="module")
def checkpoint(train, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]]:
    """A real checkpoint of a finished 2-iteration run: (directory, tensors, metadata object)."""
    directory = tmp_path_factory.mktemp("run")
    distill(TINY.replace(checkpoint_dir=str(directory)), train, progress=False, log=_quiet)
    path = directory / CHECKPOINT_FILE
    with safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()[KEY])
    return directory, load_file(path), meta


def _crafted(base: Path, tmp_path: Path, tensors: dict[str, torch.Tensor], meta: Any) -> Path:
    directory = tmp_path / "crafted"
    directory.mkdir(exist_ok=True)
    text = meta if isinstance(meta, str) else json.dumps(meta)
    save_file({k: v.contiguous() for k, v in tensors.items()}, directory / CHECKPOINT_FILE, metadata={KEY: text})
    return directory


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


CRAFTS = {
    "metadata-list": (lambda t, m: (t, "[]"), "expected a JSON object"),
    "no-iteration": (lambda t, m: (t, _without(m, "iteration")), "field 'iteration'"),
    "negative-iteration": (lambda t, m: (t, {**m, "iteration": -5}), "field 'iteration'"),
    "boolean-iteration": (lambda t, m: (t, {**m, "iteration": True}), "field 'iteration'"),
    "a-million-iterations": (lambda t, m: (t, {**m, "iteration": 10**6}), "more than the 2 iterations"),
    "config-null": (lambda t, m: (t, {**m, "config": None}), "field 'config'"),
    "config-unknown-option": (lambda t, m: (t, {**m, "config": {**m["config"], "rocket": 1}}), "field 'config'"),
    "config-wrong-type": (lambda t, m: (t, {**m, "config": {**m["config"], "inner_lr": "fast"}}), "field 'config'"),
    "short-rng": (lambda t, m: ({**t, "rng.master": t["rng.master"][:7]}, m), "tensor 'rng.master'"),
    "garbage-rng": (lambda t, m: ({**t, "rng.master": torch.full_like(t["rng.master"], 255)}, m),
                    "tensor 'rng.master'"),
    "theta-shape": (lambda t, m: ({**t, "theta.bases": torch.zeros(1, 1, 1, 1),
                                   "momentum.bases": torch.zeros(1, 1, 1, 1)}, m), "tensor 'theta.bases'"),
    "momentum-shape": (lambda t, m: ({**t, "momentum.bases": torch.zeros(3)}, m), "tensor 'momentum.bases'"),
    "nan-theta": (lambda t, m: ({**t, "theta.bases": torch.full_like(t["theta.bases"], float("nan"))}, m),
                  "tensor 'theta.bases'"),
    "extra-tensor": (lambda t, m: ({**t, "notes": torch.zeros(1)}, m), "unexpected tensor 'notes'"),
}


@pytest.mark.parametrize("craft", sorted(CRAFTS))
def test_a_crafted_checkpoint_is_a_typed_error_naming_file_and_field(train, checkpoint, tmp_path, craft):
    base, tensors, meta = checkpoint
    edit, fragment = CRAFTS[craft]
    directory = _crafted(base, tmp_path, *edit(dict(tensors), json.loads(json.dumps(meta))))
    with pytest.raises(CheckpointError) as info:
        distill(TINY.replace(checkpoint_dir=str(directory), resume=True), train, progress=False, log=_quiet)
    assert info.value.path == str(directory / CHECKPOINT_FILE)
    assert fragment in info.value.problem, info.value.problem


def test_a_checkpoint_that_is_not_safetensors_is_a_typed_error(train, tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"\x80\x04junk" * 10)
    with pytest.raises(CheckpointError, match="torch.save/pickle"):
        distill(TINY.replace(checkpoint_dir=str(tmp_path), resume=True), train, progress=False, log=_quiet)


def test_a_rerun_after_a_kill_before_the_first_checkpoint_starts_its_metrics_fresh(train, tmp_path):
    MetricsLog(tmp_path / METRICS_FILE).append({"iteration": 1, "outer_loss": 9.9})  # what a killed run left
    distill(TINY.replace(checkpoint_dir=str(tmp_path)), train, progress=False, log=_quiet)
    assert [r["iteration"] for r in MetricsLog(tmp_path / METRICS_FILE).records()] == [1, 2]
    assert all(r["outer_loss"] != 9.9 for r in MetricsLog(tmp_path / METRICS_FILE).records())


# ---- MTT expert trajectories ------------------------------------------------------------------------

EXPERTS = ExpertConfig(experts=2, epochs=2, width=8, lr=0.05, seed=1)


@pytest.fixture(scope="module")
def experts(small, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("experts")
    train_experts(EXPERTS, directory, data=small, progress=False)
    return directory


def _copy(directory: Path, tmp_path: Path) -> Path:
    out = tmp_path / "experts"
    out.mkdir()
    for path in directory.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    return out


def test_expert_files_are_checked_before_use(experts, tmp_path):
    copy = _copy(experts, tmp_path)
    store = ExpertStore(copy)
    assert store.load(1, 2)["features.0.weight"].shape[0] == 8
    damaged = expert_file(copy, 0)
    damaged.write_bytes(damaged.read_bytes()[:-10])  # a download or copy cut short
    with pytest.raises(CheckpointError, match="do not fit") as info:
        ExpertStore(copy).load(0, 1)
    assert info.value.path == str(damaged)
    tensors = load_file(expert_file(experts, 1))
    with safe_open(expert_file(experts, 1), framework="pt") as f:
        metadata = f.metadata()
    tensors["epoch_0001.features.0.weight"] = torch.zeros(2, 2)
    save_file(tensors, expert_file(copy, 1), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"tensor 'epoch_0001.features.0.weight': expected float32\[8, 1, 3, 3\]"):
        ExpertStore(copy).load(1, 0)


def test_expert_manifests_are_checked(experts, tmp_path):
    copy = _copy(experts, tmp_path)
    manifest = copy / "manifest.json"
    good = json.loads(manifest.read_text())
    for broken, fragment in (("not json", "is not valid JSON"),
                             (json.dumps({**good, "config": None}), "field 'config'"),
                             (json.dumps({**good, "config": {**good["config"], "epochs": "many"}}), "field 'config'"),
                             (json.dumps({**good, "parameters": [1, 2]}), "field 'parameters'"),
                             (json.dumps({**good, "experts": [{"index": True, "epochs": 2}]}), "field 'experts[0]'"),
                             (json.dumps({**good, "experts": [{"index": 0, "epochs": 99}]}), "field 'experts[0]'")):
        manifest.write_text(broken)
        with pytest.raises(CheckpointError, match=fragment.replace("[", r"\[")) as info:
            ExpertStore(copy)
        assert info.value.path == str(manifest)
    manifest.write_text(json.dumps(good))
    store = ExpertStore(copy)
    with pytest.raises(CheckpointError, match="the run's network has"):
        store.check_parameters({"weight": (1,)})
    store.check_parameters({name: tuple(v.shape) for name, v in store.load(0, 0).items()})


# ---- DWA teachers ---------------------------------------------------------------------------------------


def test_crafted_teacher_files_are_typed_errors(small, tmp_path):
    path = save_teacher(train_teacher(small, width=8, epochs=1), tmp_path / "teacher.safetensors")
    state = load_file(path)
    with safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()["compressdata.teacher"])
    assert load_teacher(path, small).meta["width"] == 8
    crafted = tmp_path / "crafted.safetensors"
    for tensors, edited, fragment in (
        (state, {**meta, "width": 10**9}, "of width 1000000000"),
        (state, {**meta, "width": 9}, "expected float32[9, 1, 3, 3], got float32[8, 1, 3, 3]"),
        (state, {**meta, "width": True}, "fields 'arch', 'width'"),
        (state, {**meta, "arch": "evil"}, "fields 'arch', 'width'"),
        ({**state, "features.0.weight": torch.zeros(8, 1, 2, 2)}, meta, "tensor 'features.0.weight'"),
        ({**state, "classifier.bias": torch.full_like(state["classifier.bias"], float("inf"))}, meta,
         "contains NaN or Inf"),
    ):
        save_file(tensors, crafted, metadata={"compressdata.teacher": json.dumps(edited)})
        with pytest.raises(CheckpointError) as info:
            load_teacher(crafted, small)
        assert fragment in info.value.problem, info.value.problem
        assert info.value.path == str(crafted)
    crafted.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(CheckpointError, match="torch.save/pickle"):
        load_teacher(crafted, small)


def test_every_run_file_is_the_container(checkpoint, experts, small, tmp_path):
    """What the distiller writes (checkpoint, expert trajectories, teacher) is the one container: one
    `__metadata__` entry of canonical JSON declaring the kind's format and version, read back checked."""
    teacher = save_teacher(train_teacher(small, width=8, epochs=1), tmp_path / "teacher.safetensors")
    files = [(checkpoint[0] / CHECKPOINT_FILE, CHECKPOINT), (expert_file(experts, 0), EXPERT),
             (expert_file(experts, 1), EXPERT), (teacher, TEACHER)]
    for path, kind in files:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata()
        assert list(metadata) == [kind.key], path
        meta = json.loads(metadata[kind.key])
        assert metadata[kind.key] == canonical_json(meta)
        assert (meta["format"], meta["version"]) == (kind.format, kind.version)
        assert read_file(path, kind)[1] == meta

