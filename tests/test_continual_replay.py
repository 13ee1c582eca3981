"""Continual distillation with the earlier memories replayed (real Fashion-MNIST, small settings)."""

from __future__ import annotations

import pytest
import torch

from compressdata.cli import build_parser
from compressdata.continual.distill import TaskSynthetic, distill_task, local_view
from compressdata.continual.protocols import make_tasks
from compressdata.continual.replay import MixedSampler, old_memories
from compressdata.continual.runner import ContinualConfig, run_continual
from compressdata.data.sampler import ClassBalancedSampler
from compressdata.distiller.config import DistillConfig


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    tasks = make_tasks("split-fashion-mnist", train_per_class=30, test_per_class=10, seed=0)
    cfg = DistillConfig.from_flat(method="rtp", downsample=2, iterations=2, unroll_steps=3, inner_batch_per_class=4,
                        real_batch_per_class=4, width=8, seed=0).validate()
    first = distill_task(cfg, tasks[0].train, tasks[0].classes, tasks[0].name, None, new_bases=3, per_class=5,
                         progress=False)
    return tasks, cfg, first


def test_replay_distillation_keeps_old_rows_and_storage_and_changes_new_rows(setup) -> None:
    tasks, cfg, first = setup
    task = tasks[1]
    plain = distill_task(cfg, task.train, task.classes, task.name, first, new_bases=2, per_class=5, progress=False)
    replay = distill_task(cfg, task.train, task.classes, task.name, first, new_bases=2, per_class=5,
                          replay_old=True, progress=False)
    old_rows = torch.arange(len(first))
    assert torch.equal(replay.decode(old_rows), first.decode())
    assert torch.equal(replay.tensors["bases"][:3], first.tensors["bases"])
    assert replay.storage["floats_stored"] == plain.storage["floats_stored"] == sum(
        t.numel() for t in replay.tensors.values())
    assert replay.tasks == plain.tasks
    assert torch.equal(replay.labels, plain.labels) and replay.classes == plain.classes
    # same seeds, same init: only the replayed memories in the inner and outer batches differ
    new_rows = torch.arange(len(first), len(replay))
    assert not torch.allclose(replay.tensors["addresses"][new_rows], plain.tensors["addresses"][new_rows])


def test_old_memories_enter_inner_and_outer_batches(setup) -> None:
    tasks, cfg, first = setup
    task = tasks[1]
    seen = first.classes + [task.train.classes[c] for c in task.classes]
    old = old_memories(first, seen, torch.device("cpu"))
    # the first bank has 5 rows of each of its 2 classes, labelled 0 and 1 among the 4 seen classes
    assert old.images.shape[0] == 10 and sorted(old.labels.tolist()) == [0] * 5 + [1] * 5
    x, y = old.batch(4, torch.Generator().manual_seed(0))
    assert y.tolist() == [0] * 4 + [1] * 4
    decoded = first.decode()
    assert all(any(torch.equal(row, d) for d in decoded) for row in x)

    local = local_view(task.train, task.classes)
    label_map = torch.tensor([2, 3])
    frozen = first.tensors["bases"].float()
    synthetic = TaskSynthetic("memory", 2, 5, (28, 28), first.upsample, frozen, label_map, old)
    theta = {"addresses": torch.randn(10, 5, generator=torch.Generator().manual_seed(1)),
             "new_bases": torch.randn(2, 1, 14, 14, generator=torch.Generator().manual_seed(2))}
    xb, yb = synthetic.minibatch(theta, 3, torch.Generator().manual_seed(3))
    # class-balanced over all 4 seen classes: 3 new rows of each task class, then 3 old memories each
    assert yb.tolist() == [2] * 3 + [3] * 3 + [0] * 3 + [1] * 3
    assert all(any(torch.equal(row, d) for d in decoded) for row in xb[6:])
    assert not any(torch.equal(row, d) for row in xb[:6] for d in decoded)
    again, _ = synthetic.minibatch(theta, 3, torch.Generator().manual_seed(3))
    assert torch.equal(again, xb)  # the reverse pass replays the same batch from the same seed

    sampler = MixedSampler(ClassBalancedSampler(local.images, local.labels, 2), label_map, old)
    xr, yr = sampler.batch(4, torch.Generator().manual_seed(4))
    assert yr.tolist() == [2] * 4 + [3] * 4 + [0] * 4 + [1] * 4
    assert all(any(torch.equal(row, r) for r in local.images) for row in xr[:8])
    assert all(any(torch.equal(row, d) for d in decoded) for row in xr[8:])


def test_config_refuses_replay_with_finetuned_bases() -> None:
    with pytest.raises(ValueError, match="cannot be combined with finetune_bases"):
        ContinualConfig(replay_old_memories=True, finetune_bases=True).validate()


def test_runner_with_replay_on_the_domain_incremental_protocol() -> None:
    """Rotations share all 10 classes: the replayed memories carry the same labels as the new rows."""
    torch.set_num_threads(1)
    command = ["continual", "--protocol", "rotated-fashion-mnist", "--out", "x"]
    assert build_parser().parse_args(command).replay_old  # on by default
    assert not build_parser().parse_args([*command, "--no-replay-old"]).replay_old
    cfg = ContinualConfig(protocol="rotated-fashion-mnist", methods=("rtp",), budget_ipc=1, n_bases=4, new_bases=1,
                          iterations=1, unroll_steps=2, inner_batch=2, real_batch=2, width=4, epochs=2,
                          replay_old_memories=True, angles=(0.0, 90.0), train_per_class=12, test_per_class=5)
    result = run_continual(cfg, progress=False, log=lambda _m: None)
    assert result["config"]["replay_old_memories"] is True
    rtp = result["methods"]["rtp"]
    assert [len(row) for row in rtp["accuracies"]] == [1, 2]
    assert rtp["storage"][0] <= 7840 and rtp["storage"][1] <= 15680
    assert [t["classes"] for t in result["rtp_tasks"]] == [list(range(10))] * 2
