"""The storage budget rule and the default memory layout it picks."""

from __future__ import annotations

import pytest

from compressdata.params import layout_for_budget
from compressdata.params.budget import default_downsample, default_n_bases

FMNIST = (1, 28, 28)
CIFAR = (3, 32, 32)


@pytest.mark.parametrize("ipc, shape, classes, expected", [
    (1, FMNIST, 10, (20, 2, 19)),     # full resolution would buy 5 bases for 10 classes: ds=2
    (10, FMNIST, 10, (50, 1, 78)),    # 50 full-resolution bases >= 2 per class
    (1, CIFAR, 10, (20, 2, 76)),
    (1, CIFAR, 100, (200, 2, 7)),
])
def test_default_memory_layout_spends_half_the_budget_on_bases(ipc, shape, classes, expected):
    layout = layout_for_budget("memory", ipc, classes, shape)
    assert (layout.n_bases, layout.downsample, layout.per_class) == expected
    c, h, w = shape
    budget = ipc * c * h * w * classes
    base_floats = layout.n_bases * c * (h // layout.downsample) * (w // layout.downsample)
    assert base_floats <= budget / 2 < base_floats + c * (h // layout.downsample) * (w // layout.downsample)
    assert layout.floats <= budget


def test_default_downsample_stops_at_the_coarsest_that_divides_the_image():
    # 0.02 IPC: no ds buys 20 bases; 28 = 4 * 7, so ds=4 is the coarsest that divides 28x28
    assert default_downsample(0.02, 10, FMNIST) == 4
    assert default_n_bases(0.02, 10, FMNIST, 4) == 1
    assert layout_for_budget("memory", 0.02, 10, FMNIST).per_class == 10


def test_explicit_bases_and_downsample_override_the_rule():
    assert layout_for_budget("memory", 1, 10, FMNIST, n_bases=16, downsample=2).per_class == 29
    # ds given: K fills half the budget at that resolution
    layout = layout_for_budget("memory", 10, 10, FMNIST, downsample=2)
    assert (layout.n_bases, layout.per_class) == (200, 19)
    # K given: ds still follows the budget (ds=1 at IPC 10)
    layout = layout_for_budget("memory", 10, 10, FMNIST, n_bases=48)
    assert (layout.downsample, layout.per_class) == (1, 84)
