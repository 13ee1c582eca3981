"""Data: MemoryDataset (a bank as a torchvision-style dataset), real-data sources, exports."""

from compressdata.data.memory_dataset import MemoryDataset
from compressdata.data.sources import RealData, load_source, source_from_hf_dataset

__all__ = ["MemoryDataset", "RealData", "load_source", "source_from_hf_dataset"]
