"""Shared fixtures: the real Fashion-MNIST splits from the local IDX files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressdata.data.sources import RealData, load_source

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def _load(split: str) -> RealData:
    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"real Fashion-MNIST IDX files not found at {FASHION_MNIST_DIR}")
    return load_source("fashion-mnist", split=split)


@pytest.fixture(scope="session")
def fashion_mnist_train() -> RealData:
    """The real Fashion-MNIST training split (60000 images)."""
    return _load("train")


@pytest.fixture(scope="session")
def fashion_mnist_test() -> RealData:
    """The real Fashion-MNIST test split (10000 images)."""
    return _load("test")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: bitwise-reproducible CPU runs, and tiny ops that would only
    contend on the shared cores with more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
