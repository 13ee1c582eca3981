"""Banks that grow (extend, merge, task metadata) and the continual-learning runner on real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compressdata import BankFormatError, MemoryBank, load_memory_bank, save_memory_bank
from compressdata.bank.format import check_bank
from compressdata.continual.distill import distill_task
from compressdata.continual.protocols import make_tasks
from compressdata.continual.runner import ContinualConfig, MethodResult
from compressdata.distiller.config import DistillConfig
from compressdata.summary import describe_bank

ROOT = Path(__file__).resolve().parent.parent


def memory_bank(seed: int, k: int = 5, n: int = 12, classes=("a", "b"), dtype=torch.float32) -> MemoryBank:
    g = torch.Generator().manual_seed(seed)
    return MemoryBank(bases=torch.randn(k, 1, 14, 14, generator=g).to(dtype),
                      addresses=torch.randn(n, k, generator=g).to(dtype),
                      labels=torch.arange(n) % len(classes), classes=list(classes), image_size=(28, 28))


def floats(bank: MemoryBank) -> int:
    return sum(t.numel() for t in bank.tensors.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_extend_keeps_old_examples_bit_identical_and_storage_exact(tmp_path, dtype) -> None:
    old = memory_bank(0, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    grown = old.extend("t1", [2, 2, 3], classes=["c", "d"], addresses=torch.randn(3, 7, generator=g),
                       bases=torch.randn(2, 1, 14, 14, generator=g))
    rows = torch.arange(len(old))
    assert torch.equal(grown.decode(rows), old.decode(rows))
    assert torch.equal(grown.tensors["bases"][:5], old.tensors["bases"])
    assert torch.equal(grown.tensors["addresses"][:12, :5], old.tensors["addresses"])
    assert not grown.tensors["addresses"][:12, 5:].any()
    assert grown.tensors["addresses"].dtype == dtype
    # exact: old floats + 2 new bases + 3 new rows of K=7 + the zeros padding 12 old rows on 2 bases
    assert grown.storage["floats_stored"] == floats(old) + 2 * 196 + 3 * 7 + 12 * 2 == floats(grown)
    assert grown.storage["ipc_equivalent"] == round(floats(grown) / (784 * 4), 6)
    assert grown.classes == ["a", "b", "c", "d"]
    assert grown.tasks == [{"name": "task-0", "classes": [0, 1], "rows": [0, 12], "bases": [0, 5]},
                           {"name": "t1", "classes": [2, 3], "rows": [12, 15], "bases": [5, 7]}]
    path = tmp_path / "grown.safetensors"
    save_memory_bank(grown, path)
    again = load_memory_bank(path)
    assert again.tasks == grown.tasks and again.metadata()["format_version"] == "1.2"
    assert torch.equal(again.decode(rows), old.decode(rows))
    assert again.task_rows("t1") == slice(12, 15)
    assert "task t1: rows 12..14, bases 5..6 (c, d)" in describe_bank(again)


def test_extend_pixels_bank_without_new_classes() -> None:
    old = MemoryBank(pixels=torch.rand(4, 1, 6, 6), labels=[0, 1, 0, 1], classes=["x", "y"])
    grown = old.extend("rot-90", [1, 0], pixels=torch.rand(2, 1, 6, 6))
    assert torch.equal(grown.decode(torch.arange(4)), old.decode())
    assert grown.tasks[1] == {"name": "rot-90", "classes": [0, 1], "rows": [4, 6]}
    assert grown.storage["floats_stored"] == 6 * 36


def test_extend_refuses_wrong_shapes_and_names() -> None:
    old = memory_bank(0)
    with pytest.raises(ValueError, match=r"new addresses must be \[n, 6\]"):
        old.extend("t1", [0], addresses=torch.zeros(1, 5), bases=torch.zeros(1, 1, 14, 14))
    with pytest.raises(ValueError, match="needs tensors"):
        old.extend("t1", [0], pixels=torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="already has a task named 'task-0'"):
        old.extend("task-0", [0], addresses=torch.zeros(1, 5))
    with pytest.raises(ValueError, match="grown bank would be invalid.*value 2 outside"):
        old.extend("t1", [2], addresses=torch.zeros(1, 5))


def test_merge_is_block_diagonal_and_keeps_both_banks_bit_identical() -> None:
    a, b = memory_bank(0, k=5, n=12), memory_bank(1, k=3, n=6, classes=("b", "c", "d"))
    merged = a.merge(b, names=("A", "B"))
    assert torch.equal(merged.decode(torch.arange(12)), a.decode())
    assert torch.equal(merged.decode(torch.arange(12, 18)), b.decode())
    assert merged.classes == ["a", "b", "c", "d"]
    assert merged.hard_labels()[12:].tolist() == [1, 2, 3, 1, 2, 3]  # b's "b" is a's "b"
    assert not merged.tensors["addresses"][:12, 5:].any() and not merged.tensors["addresses"][12:, :5].any()
    assert merged.storage["floats_stored"] == floats(a) + floats(b) + 12 * 3 + 6 * 5
    assert merged.tasks == [{"name": "A", "classes": [0, 1], "rows": [0, 12], "bases": [0, 5]},
                            {"name": "B", "classes": [1, 2, 3], "rows": [12, 18], "bases": [5, 8]}]
    pixels = MemoryBank(pixels=torch.rand(2, 1, 28, 28), labels=[0, 1], classes=["a", "b"])
    with pytest.raises(ValueError, match="differ in kind"):
        a.merge(pixels)
    with pytest.raises(ValueError, match="differ in tensor dtypes"):
        a.merge(memory_bank(2, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"both banks have task\(s\) \['x'\]"):
        a.merge(b, names=("x", "x"))


def _valid_grown() -> MemoryBank:
    return memory_bank(0).extend("t1", [2, 2], classes=["c"], addresses=torch.randn(2, 6),
                                 bases=torch.randn(1, 1, 14, 14))


@pytest.mark.parametrize("edit, message", [
    (lambda t, m: m.__setitem__("tasks", {"name": "t"}), "metadata field 'tasks': expected a non-empty list"),
    (lambda t, m: t[1].pop("rows"), "metadata field 'tasks[1]': expected"),
    (lambda t, m: t[1].__setitem__("name", "task-0"), "task names must be unique"),
    (lambda t, m: t[1].__setitem__("classes", [2, 9]), "metadata field 'tasks[1].classes'"),
    (lambda t, m: t[1].__setitem__("rows", [13, 14]), "metadata field 'tasks[1].rows': expected [12, end]"),
    (lambda t, m: t[1].__setitem__("rows", [12, 13]), "the rows ranges end at 13, expected 14"),
    (lambda t, m: t[1].__setitem__("bases", [5, 5]), "the bases ranges end at 5, expected 6"),
    (lambda t, m: t[0].__setitem__("classes", [0]), "example 1 has label 1, not one of the task's classes [0]"),
    (lambda t, m: t[0].__setitem__("bases", [0, 4]), "metadata field 'tasks[1].bases': expected [4, end]"),
])
def test_bad_task_metadata_is_rejected_by_check_bank(edit, message) -> None:
    bank = _valid_grown()
    meta = json.loads(json.dumps(bank.metadata()))
    edit(meta["tasks"], meta)
    with pytest.raises(BankFormatError) as info:
        check_bank(bank.all_tensors(), meta)
    assert message in str(info.value)


def test_a_task_using_a_later_basis_is_rejected(tmp_path) -> None:
    bank = _valid_grown()
    tensors = bank.all_tensors()
    tensors["addresses"] = tensors["addresses"].clone()
    tensors["addresses"][3, 5] = 0.5  # a row of task-0 on the basis t1 added
    meta = bank.metadata()
    from compressdata.bank.checksum import tensor_checksum

    meta["checksum"]["value"] = tensor_checksum(tensors)
    with pytest.raises(BankFormatError, match="rows 0..11 use bases at or after 5, added by a later task"):
        check_bank(tensors, meta)
    meta["format_version"] = "1.0"  # opaque in 1.0 files
    check_bank(tensors, meta)


@pytest.fixture(scope="module")
def split_tasks(fashion_mnist_train):
    return make_tasks("split-fashion-mnist", train_per_class=40, test_per_class=20, seed=0)


def test_distill_task_freezes_old_bases_or_finetunes_them(split_tasks, one_torch_thread) -> None:
    config = DistillConfig.from_flat(width=4, unroll_steps=2, inner_batch_per_class=4, real_batch_per_class=4,
                           outer_lr=30, iterations=2, device="cpu")
    first = distill_task(config, split_tasks[0].train, [0, 1], "t0", new_bases=3, per_class=5, progress=False)
    second = distill_task(config, split_tasks[1].train, [2, 3], "t1", first, new_bases=1, per_class=50,
                          progress=False)  # 50 rows per class > 40 real images: the rest start as mixtures
    rows = torch.arange(len(first))
    assert torch.equal(second.decode(rows), first.decode(rows))
    assert second.classes[2:] == ["Pullover", "Dress"] and len(second) == 110
    assert second.tasks[1] == {"name": "t1", "classes": [2, 3], "rows": [10, 110], "bases": [3, 4]}
    assert second.tensors["addresses"][10:].abs().sum(1).min() > 0
    tuned = distill_task(config, split_tasks[2].train, [4, 5], "t2", second, new_bases=0, per_class=5,
                         finetune_bases=True, progress=False)
    assert not torch.equal(tuned.tensors["bases"], second.tensors["bases"])
    assert torch.equal(tuned.tensors["addresses"][:110, :4], second.tensors["addresses"])
    assert first.tensors["bases"].shape[-1] == 14  # no downsample set: a first task takes ds=2
    with pytest.raises(ValueError, match="downsample 1 does not match the bank's bases, stored at ds=2"):
        distill_task(config.replace(downsample=1), split_tasks[1].train, [2, 3], "t1", first, new_bases=1,
                     per_class=5, progress=False)


def test_forgetting_and_average() -> None:
    r = MethodResult("x", accuracies=[[0.9], [0.5, 0.8], [0.7, 0.4, 0.6]])
    assert r.average() == pytest.approx([0.9, 0.65, 1.7 / 3])
    assert r.forgetting()[0] is None
    assert r.forgetting()[1] == pytest.approx(0.4)
    assert r.forgetting()[2] == pytest.approx(((0.9 - 0.7) + (0.8 - 0.4)) / 2)


def test_config_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="unknown protocol 'split-cifar'"):
        ContinualConfig(protocol="split-cifar").validate()
    with pytest.raises(ValueError, match="methods must be a non-empty subset"):
        ContinualConfig(methods=("ewc",)).validate()
    with pytest.raises(ValueError, match="budget too small for rtp"):
        from compressdata.continual.runner import rtp_rows_per_class

        rtp_rows_per_class(ContinualConfig(n_bases=16), None, 2, 1568, (1, 28, 28))


@pytest.mark.slow
def test_runner_end_to_end_on_real_fashion_mnist(tmp_path, fashion_mnist_train) -> None:
    """A tiny configuration of `compressdata continual` as a real process: the table, JSON and PNG."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "compressdata", "continual", "--protocol", "rotated-fashion-mnist",
           "--angles", "0", "90", "--out", str(out), "--budget-ipc", "1", "--n-bases", "4", "--new-bases", "1",
           "--iterations", "1", "--unroll-steps", "2", "--inner-batch", "2", "--real-batch", "2", "--width", "4",
           "--epochs", "2", "--real-epochs", "1", "--train-per-class", "12", "--test-per-class", "5",
           "--threads", "1", "--no-progress"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "results.json").read_text())
    assert result["tasks"] == ["rot-0", "rot-90"]
    assert set(result["methods"]) == {"rtp", "replay", "finetune", "joint"}
    for method in result["methods"].values():
        assert [len(row) for row in method["accuracies"]] == [1, 2]
        assert all(0 <= a <= 1 for row in method["accuracies"] for a in row)
    budget = result["budget_floats_per_task"]
    assert budget == [7840, 7840]
    rtp, replay = result["methods"]["rtp"]["storage"], result["methods"]["replay"]["storage"]
    assert replay == [7840, 15680] and rtp[0] <= 7840 and rtp[1] <= 15680
    assert result["methods"]["joint"]["storage"] == [120 * 784, 240 * 784]
    assert result["rtp_tasks"][1]["rows"][0] == result["rtp_tasks"][0]["rows"][1]
    table = (out / "table.md").read_text()
    assert table.startswith("| method | after 1 | after 2 | forgetting | floats (final) |") and "| rtp |" in table
    assert "| replay | 7,840 | 15,680 |" in table and table in done.stdout
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
