"""A bank as a PyTorch dataset: `MemoryDataset` (torchvision-style, from a bank, a bank file or a Hub
id) and the soft targets it yields."""

from compressdata.dataset.memory_dataset import MemoryDataset
from compressdata.dataset.targets import SoftTargets

__all__ = ["MemoryDataset", "SoftTargets"]
