"""DD-Ranking's inputs (NUS-HPC-AI-Lab/DD-Ranking, README and demo_soft.py / demo_hard.py):
`images.pt` (float [N, C, H, W]), `labels.pt` (soft labels as logits: its soft cross-entropy takes
softmax(labels / T); absent for hard labels, which it takes as class-ordered, IPC per class) and
`lr.pt` (the learned lr)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from compressdata.interop.layouts.mtt import find_files
from compressdata.interop.release import Release, as_lr, as_tensor
from compressdata.interop.safeload import load_pt

DEFAULT_FILES = {"images": "images.pt", "labels": "labels.pt"}
LR_FILES = ("lr.pt",)


def read(paths: Sequence[Path], experiment: int | None = None) -> Release:
    """Read a folder holding images.pt [, labels.pt] [, lr.pt], or those files named."""
    found = find_files(paths, DEFAULT_FILES, LR_FILES, "ddranking")
    images = as_tensor(load_pt(found["images"]), "images", found["images"])
    labels = None
    if "labels" in found:
        labels = as_tensor(load_pt(found["labels"]), "labels", found["labels"])
    lr = as_lr(load_pt(found["lr"]), found["lr"]) if "lr" in found else None
    return Release(images=images, labels=labels, lr=lr, files=list(found.values()),
                   soft_labels="logits", labels_file=found.get("labels"),
                   details={"roles": {what: p.name for what, p in found.items()}})
