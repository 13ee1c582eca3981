"""Serving banks to other loaders: exports of a decoded bank (a `datasets.Dataset`, the Hub viewer's
parquet, webdataset shards, PNG folders). A bank as a PyTorch dataset is `compressdata.dataset`."""

from compressdata.serving.export import export_png, export_webdataset, save_hf_dataset, to_hf_dataset

__all__ = ["export_png", "export_webdataset", "save_hf_dataset", "to_hf_dataset"]
