"""The low-dimensional-structure benchmark's library: multi-index data and BPTT point distillation."""

from __future__ import annotations

import pytest
import torch

from compressdata.research.lowdim import Learner, MultiIndexTask, accuracy, distill_points

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_directions_are_orthonormal_and_seeded():
    task = MultiIndexTask(12, 3, seed=4)
    u = task.directions
    assert u.shape == (12, 3)
    torch.testing.assert_close(u.T @ u, torch.eye(3), rtol=0, atol=1e-5)
    assert torch.equal(u, MultiIndexTask(12, 3, seed=4).directions)
    assert not torch.allclose(u, MultiIndexTask(12, 3, seed=5).directions)


def test_labels_depend_on_x_only_through_the_directions():
    task = MultiIndexTask(10, 2, seed=1)
    x, y = task.sample(2000, torch.Generator().manual_seed(0))
    u = task.directions
    noise = torch.randn(2000, 10, generator=torch.Generator().manual_seed(1)) * 5
    orthogonal = noise - (noise @ u) @ u.T  # moves x only inside the complement of span(U)
    assert torch.equal(task.label(x + orthogonal), y)
    assert not torch.equal(task.label(x + noise), y)  # a move along U does change labels


def test_classes_are_balanced_and_r1_is_a_sign():
    task = MultiIndexTask(6, 2)
    _, y = task.sample(8000, torch.Generator().manual_seed(2))
    counts = torch.bincount(y, minlength=4).float() / 8000
    assert torch.all((counts - 0.25).abs() < 0.03), counts
    sign = MultiIndexTask(6, 1, seed=3)
    x, y = sign.sample(500, torch.Generator().manual_seed(3))
    assert torch.equal(y, ((x @ sign.directions)[:, 0] < 0).long())  # class 0: z > 0, class 1: -z > 0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="need 1 <= r <= d"):
        MultiIndexTask(3, 4)
    with pytest.raises(ValueError, match="need 1 <= r <= d"):
        MultiIndexTask(3, 0)
    with pytest.raises(ValueError, match=r"m=3 < 4 classes"):
        MultiIndexTask(8, 2).balanced_sample(3, torch.Generator())


def test_balanced_sample_has_every_class():
    x, y = MultiIndexTask(8, 2).balanced_sample(10, torch.Generator().manual_seed(0))
    assert x.shape == (10, 8)
    assert torch.bincount(y, minlength=4).tolist() == [3, 3, 2, 2]
    assert torch.equal(MultiIndexTask(8, 2).label(x), y)  # real points with their true labels


def test_a_tiny_distillation_beats_its_random_real_start():
    """d=16, r=1, 2 stored points: the distilled points beat the real points they start from,
    and are far above chance (50%), on fresh test points."""
    task = MultiIndexTask(16, 1, seed=0)
    learner = Learner(width=16, steps=10, lr=0.1)
    x, y, x0, y0 = distill_points(task, learner, 2, iterations=40, outer_lr=0.05, real_batch=256, seed=0)
    x_test, y_test = task.sample(4000, torch.Generator().manual_seed(9))
    distilled = sum(accuracy(learner.train(task, x, y, s), x_test, y_test) for s in range(100, 103)) / 3
    real = sum(accuracy(learner.train(task, x0, y0, s), x_test, y_test) for s in range(100, 103)) / 3
    assert not torch.equal(x, x0)
    assert distilled > real + 0.05, (distilled, real)
    assert distilled > 0.75, distilled
