"""Reader `folder:PATH`: an ImageFolder layout, PATH/<class>/<images>."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from compressdata.data.images import IMAGE_EXTENSIONS, stack_images
from compressdata.data.real import RealData, real_data
from compressdata.errors import MissingFileError, SourceError


def load_image_folder(path: str | os.PathLike, split: str = "train", name: str | None = None
                      ) -> RealData:
    """ImageFolder layout: PATH/<class>/<images> (or PATH/<split>/<class>/... when present).

    Classes are the sub-folder names in sorted order; images are read in sorted path order.
    """
    name = name or f"folder:{path}"
    base = Path(path).expanduser()
    if (base / split).is_dir():
        base = base / split
    if not base.is_dir():
        raise MissingFileError(f"{name}: folder {base} does not exist")
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise SourceError(f"{name}: {base} has no class sub-folders")
    files: list[Path] = []
    labels: list[int] = []
    for c, d in enumerate(class_dirs):
        found = sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise SourceError(f"{name}: class folder {d} holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
        files += found
        labels += [c] * len(found)
    from PIL import Image

    def read(f: Path) -> Any:
        with Image.open(f) as img:
            img.load()
            return img

    pixels = stack_images((read(f) for f in tqdm(files, desc=f"reading {name}", leave=False)),
                           name)
    return real_data(pixels, torch.tensor(labels, dtype=torch.int64),
                      [d.name for d in class_dirs], name, split)


def read(spec: str, split: str, *, root: str | os.PathLike | None = None, download: bool = False,
         name: str | None = None) -> RealData:
    """The `folder:PATH` reader."""
    return load_image_folder(spec, split, name=name)
