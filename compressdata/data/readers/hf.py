"""Reader `hf:ID_OR_PATH`: a Hugging Face `datasets` dataset (a local folder, or the Hub with download=True)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from compressdata.bank.metadata import Normalization
from compressdata.data.images import array_to_nchw, stack_images
from compressdata.data.real import RealData, real_data
from compressdata.errors import MissingFileError, SourceError


def read(spec: str, split: str, *, root: str | os.PathLike | None = None, download: bool = False,
         name: str | None = None) -> RealData:
    """The `hf:ID_OR_PATH` reader: a local dataset folder, or a Hub dataset with download=True."""
    import datasets

    name = name or f"hf:{spec}"
    path = Path(spec).expanduser()
    if path.is_dir():
        saved = any((path / f).is_file() for f in ("dataset_dict.json", "state.json"))
        ds = datasets.load_from_disk(str(path)) if saved else \
            datasets.load_dataset(str(path), split=split)
    elif download:
        ds = datasets.load_dataset(spec, split=split)
    else:
        later = " (HF_HUB_OFFLINE=1 then serves only the local cache)"
        raise MissingFileError(f"{name}: not a local dataset directory",
                               hint=f"pass download=True to load it from the Hugging Face Hub{later}",
                               cli_hint=f"add --download to load it from the Hugging Face Hub{later}")
    return source_from_hf_dataset(ds, name=name, split=split)


def source_from_hf_dataset(
    ds: Any,
    name: str = "hf",
    split: str = "train",
    normalization: Normalization | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> RealData:
    """RealData from a `datasets.Dataset` (or `DatasetDict`, whose `split` is taken).

    The image column is the first `Image` / `Array2D` / `Array3D` feature (else one named image,
    img, pixels or pixel_values); the label column the first `ClassLabel` (whose names become the
    classes), else one named label, labels, fine_label, target, cls or class.
    """
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise SourceError(f"{name}: no split {split!r}; available: {sorted(ds)}")
        ds = ds[split]
    if not isinstance(ds, datasets.Dataset):
        raise SourceError(f"{name}: expected a datasets.Dataset; got {type(ds).__name__}")
    features = ds.features
    image_column = image_column or _find_column(
        features, (datasets.Image, datasets.Array2D, datasets.Array3D),
        ("image", "img", "pixels", "pixel_values"))
    label_column = label_column or _find_column(
        features, (datasets.ClassLabel,), ("label", "labels", "fine_label", "target", "cls",
                                           "class"))
    for role, col in (("image", image_column), ("label", label_column)):
        if col is None or col not in features:
            raise SourceError(f"{name}: no {role} column found (columns: {list(features)}); "
                             f"pass {role}_column=")
    labels = torch.as_tensor(ds[label_column], dtype=torch.int64)
    label_feature = features[label_column]
    classes = label_feature.names if isinstance(label_feature, datasets.ClassLabel) else None
    column = ds.select_columns([image_column])
    if isinstance(features[image_column], datasets.Image):
        rows = (img for batch in column.iter(batch_size=1024) for img in batch[image_column])
        pixels = stack_images(tqdm(rows, total=len(ds), desc=f"decoding {name}", leave=False),
                               name)
    else:
        pixels = array_to_nchw(np.asarray(column.with_format("numpy")[image_column]), name,
                                batched=True)
    data = real_data(pixels, labels, classes, name, split)
    return data if normalization is None else data.with_normalization(normalization)


def _find_column(features: Any, types: tuple[type, ...], names: tuple[str, ...]) -> str | None:
    typed = [k for k, f in features.items() if isinstance(f, types)]
    if typed:
        return typed[0]
    return next((n for n in names if n in features), None)
