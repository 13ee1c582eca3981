"""Pytest fixtures for the Hub and export tests: a fresh Hub-compatible server per test, an empty
cache, real Fashion-MNIST and small banks built from it.

Load from a test module with ``pytest_plugins = ["hub_fixtures"]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hubserver import TEST_TOKENS, HubServer

from compressdata import EvaluationResult, MemoryBank
from compressdata.data.sources import RealData, load_source


@pytest.fixture
def hub_server() -> Iterator[HubServer]:
    """A running server that knows the users of ``hubserver.TEST_TOKENS`` (alice and bob)."""
    with HubServer(tokens=TEST_TOKENS) as server:
        yield server


@pytest.fixture
def hub_cache(tmp_path: Path) -> Path:
    """An empty huggingface_hub cache directory."""
    path = tmp_path / "hf-cache"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def fashion_mnist() -> RealData:
    """The real Fashion-MNIST test split (10,000 images) from /usr/share/datasets."""
    return load_source("fashion-mnist", split="test")


def _pixel_bank(data: RealData, per_class: int, offset: int = 0, soft: bool = False
                ) -> MemoryBank:
    """A `pixels` bank of the first real images of every class (from `offset` on); with
    soft=True the labels are smoothed probabilities (label_space "probabilities")."""
    index = torch.cat([data.class_indices(c)[offset:offset + per_class]
                       for c in range(data.num_classes)])
    labels = data.labels[index]
    if soft:
        labels = torch.nn.functional.one_hot(labels, data.num_classes).float() * 0.9 + 0.01
    return MemoryBank(
        pixels=data.images[index], labels=labels, classes=data.classes,
        normalization=data.normalization,
        provenance={"source": {"dataset": data.name, "split": data.split},
                    "method": {"name": "real-subset", "per_class": per_class, "offset": offset}},
        evaluations=[EvaluationResult("convnet", [0.70 + 0.001 * per_class, 0.71], "test", 300)],
    )


def _memory_bank(data: RealData, per_class: int, seed: int = 0) -> MemoryBank:
    """A `memory` bank: 10 bases = real class means at 14x14, addresses near one-hot rows."""
    g = torch.Generator().manual_seed(seed)
    means = torch.stack([data.images[data.class_indices(c)].mean(0)
                         for c in range(data.num_classes)])
    bases = torch.nn.functional.avg_pool2d(means, 2)
    labels = torch.arange(data.num_classes).repeat_interleave(per_class)
    addresses = torch.nn.functional.one_hot(labels, data.num_classes).float()
    addresses = addresses + 0.05 * torch.rand(addresses.shape, generator=g)
    return MemoryBank(bases=bases, addresses=addresses, labels=labels, classes=data.classes,
                      image_size=(28, 28), normalization=data.normalization,
                      provenance={"source": {"dataset": data.name, "split": data.split}})


@pytest.fixture(scope="session")
def pixel_bank(fashion_mnist: RealData) -> Callable[..., MemoryBank]:
    """`pixel_bank(per_class, offset=0, soft=False)`: a `pixels` bank of real images."""
    return functools.partial(_pixel_bank, fashion_mnist)


@pytest.fixture(scope="session")
def memory_bank(fashion_mnist: RealData) -> Callable[..., MemoryBank]:
    """`memory_bank(per_class, seed=0)`: a `memory` bank built from real class means."""
    return functools.partial(_memory_bank, fashion_mnist)
