"""`load_source`: real labelled image data by name, from a preset or a reader.

Source names: the presets "fashion-mnist", "mnist", "cifar10", "cifar100", "svhn" (standard
mean/std and class names), or "idx:FOLDER", "torchvision:CLASS", "hf:ID_OR_PATH", "folder:PATH",
"wds:SHARDS" (a path ending in ".tar", a glob or a brace pattern also means webdataset shards), each
read by its module of `compressdata.data.readers`. Nothing is downloaded unless `download=True`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from compressdata.bank.metadata import Normalization
from compressdata.data.readers import READERS
from compressdata.data.readers.hf import source_from_hf_dataset
from compressdata.data.readers.idx import find_idx_files, load_idx_folder
from compressdata.data.readers.torchvision import load_torchvision
from compressdata.data.readers.webdataset import load_webdataset
from compressdata.data.real import RealData, check_split
from compressdata.errors import SourceError

PREFIXES = tuple(READERS)


@dataclass(frozen=True)
class Preset:
    """A named dataset: torchvision class, standard statistics, class names, local IDX folder."""

    torchvision_class: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] | None  # None: the source's own names
    idx_folder: str | None = None  # local IDX folder used when no root is given


_DIGITS = tuple(str(d) for d in range(10))
PRESETS: dict[str, Preset] = {
    "fashion-mnist": Preset(
        "FashionMNIST", (0.2860,), (0.3530,),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"),
        "/usr/share/datasets/fashion-mnist"),
    "mnist": Preset("MNIST", (0.1307,), (0.3081,), _DIGITS),
    "cifar10": Preset(
        "CIFAR10", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
         "truck")),
    "cifar100": Preset("CIFAR100", (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), None),
    "svhn": Preset("SVHN", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), _DIGITS),
}


def load_source(
    name_or_path: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = False,
    normalization: Normalization | None = None,
) -> RealData:
    """Load split `split` of a real source as `RealData` (see the module docstring for names).

    normalization=None uses the preset's standard mean/std, or for other sources the per-channel
    mean/std of the loaded split. `root`: for presets, a folder holding the MNIST-layout IDX files
    (else the torchvision root); for torchvision classes, the root they read (or, with
    download=True, download) into; default ~/.cache/compressdata/data.
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise SourceError(f"source must be a non-empty string; got {name_or_path!r}")
    key = name_or_path.strip()
    if key.lower() in PRESETS:
        data = _load_preset(key.lower(), split, root, download)
    elif key.startswith(PREFIXES):
        prefix = next(p for p in PREFIXES if key.startswith(p))
        data = READERS[prefix](key[len(prefix):], split, root=root, download=download, name=key)
    elif ".tar" in key:
        data = load_webdataset(key, split, download=download, name=key)
    else:
        raise SourceError(f"unknown source {name_or_path!r}; expected a preset "
                         f"({', '.join(PRESETS)}) or a prefixed source ({', '.join(PREFIXES)}) "
                         f"or a webdataset .tar pattern")
    return data if normalization is None else data.with_normalization(normalization)


def _load_preset(name: str, split: str, root: str | os.PathLike | None, download: bool
                 ) -> RealData:
    preset = PRESETS[name]
    check_split(split, name)
    folder = Path(root) if root is not None else (
        Path(preset.idx_folder) if preset.idx_folder else None)
    if folder is not None and find_idx_files(folder, split):
        return load_idx_folder(folder, split, name=name, classes=preset.classes, statistics=(preset.mean, preset.std))
    return load_torchvision(preset.torchvision_class, split, root, download, name=name,
                             classes=preset.classes, statistics=(preset.mean, preset.std))


__all__ = ["PRESETS", "PREFIXES", "Preset", "RealData", "load_source", "source_from_hf_dataset"]
