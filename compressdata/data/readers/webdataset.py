"""Reader `wds:SHARDS`: webdataset tar shards, one sample per key with an image and a `.cls` label."""

from __future__ import annotations

import glob
import io
import os
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from compressdata.data.images import IMAGE_EXTENSIONS, array_to_nchw, stack_arrays, stack_images
from compressdata.data.real import RealData, real_data
from compressdata.errors import MissingFileError, SourceError


def expand_shards(pattern: str) -> list[str]:
    """Shard paths from a brace pattern (a-{000..009}.tar), a glob (a-*.tar) or one path."""
    import braceexpand

    paths: list[str] = []
    for part in braceexpand.braceexpand(os.path.expanduser(pattern)):
        paths += sorted(glob.glob(part)) if glob.has_magic(part) else [part]
    return paths


def load_webdataset(pattern: str, split: str = "train", download: bool = False,
                    name: str | None = None) -> RealData:
    """webdataset shards: one sample per key with an image (.png/.jpg/... or .npy) and a .cls.

    Samples are read in shard order, then tar order; classes are named "0".."K-1".
    """
    import webdataset as wds
    from PIL import Image

    name = name or f"wds:{pattern}"
    remote = "://" in pattern or pattern.startswith("pipe:")
    if remote and not download:
        raise MissingFileError(f"{name}: remote shards are only read when downloading is allowed",
                               hint="pass download=True", cli_hint="add --download")
    urls = [pattern] if remote else expand_shards(pattern)
    missing = [u for u in urls if not remote and not os.path.isfile(u)]
    if not urls or missing:
        raise MissingFileError(f"{name}: no shard files match {pattern!r}"
                                + (f" (missing: {missing[:3]})" if missing else ""))
    image_exts = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    images: list[Any] = []
    labels: list[int] = []
    arrays: list[torch.Tensor] = []
    for sample in tqdm(wds.WebDataset(urls, shardshuffle=False), desc=f"reading {name}",
                       leave=False):
        key = f"{sample.get('__url__')}:{sample['__key__']}"
        if "cls" not in sample:
            raise SourceError(f"{name}: sample {key} has no .cls label")
        ext = next((e for e in image_exts if e in sample), None)
        if ext is not None:
            images.append(Image.open(io.BytesIO(sample[ext])))
        elif "npy" in sample:
            try:
                array = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
            except ValueError as e:  # object arrays (pickles) are refused, never unpickled
                raise SourceError(f"{name}: sample {key}: .npy member is not a plain numeric array ({e})") from None
            arrays.append(array_to_nchw(array, name, batched=False))
        else:
            raise SourceError(f"{name}: sample {key} has no image member "
                             f"(.{', .'.join(image_exts)} or .npy); members: {sorted(sample)}")
        labels.append(int(sample["cls"].decode("ascii").strip()))
    if images and arrays:
        raise SourceError(f"{name}: shards mix encoded images and .npy arrays")
    pixels = stack_images(images, name) if images else stack_arrays(arrays, name)
    return real_data(pixels, torch.tensor(labels, dtype=torch.int64), None, name, split)


def read(spec: str, split: str, *, root: str | os.PathLike | None = None, download: bool = False,
         name: str | None = None) -> RealData:
    """The `wds:SHARDS` reader (a path ending in .tar, a glob or a brace pattern)."""
    return load_webdataset(spec, split, download=download, name=name)
