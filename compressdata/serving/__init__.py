"""Serving banks: `MemoryDataset` (a bank as a torchvision-style dataset) and exports of a decoded
bank (a `datasets.Dataset`, webdataset shards, PNG folders)."""

from compressdata.serving.export import export_png, export_webdataset, save_hf_dataset, to_hf_dataset
from compressdata.serving.memory_dataset import MemoryDataset

__all__ = ["MemoryDataset", "export_png", "export_webdataset", "save_hf_dataset", "to_hf_dataset"]
