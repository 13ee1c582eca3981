"""Data: MemoryDataset (a bank as a torchvision-style dataset), real-data sources, exports."""
