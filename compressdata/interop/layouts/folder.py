"""An image folder: one sub-folder of PNG (or other image) files per class, as torchvision's
`ImageFolder` reads it and `compressdata export --format png` writes it (`NN-name` folders and a
`classes.json` with the exact names). Images are pixels; nothing is unpickled."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from compressdata.data.readers.folder import load_image_folder
from compressdata.interop.errors import InteropError
from compressdata.interop.release import Release
from compressdata.serving.export import class_folder_names

CLASSES_FILE = "classes.json"


def read(paths: Sequence[Path], experiment: int | None = None) -> Release:
    """Read FOLDER/<class>/<image>; class names from classes.json when present, else the folder
    names (matched to the dataset's classes by name or by a leading class index)."""
    if len(paths) != 1 or not paths[0].is_dir():
        raise InteropError(f"the folder layout is one folder of class sub-folders; got {[str(p) for p in paths]}")
    folder = paths[0]
    data = load_image_folder(folder, split="train", name=f"folder:{folder}")
    names = list(data.classes)
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.parent != folder)
    classes_file = folder / CLASSES_FILE
    if classes_file.is_file():
        classes = _read_classes(classes_file)
        expected = class_folder_names(classes)
        unknown = sorted(set(names) - set(expected))
        if unknown:
            raise InteropError(f"folders {unknown[:5]} are not the class folders {CLASSES_FILE} names "
                               f"({expected[:5]}...)", folder)
        index = {name: i for i, name in enumerate(expected)}
        labels = torch.tensor([index[name] for name in names], dtype=torch.int64)[data.labels]
        files.append(classes_file)
        return Release(images=data.pixels, labels=labels, files=files, pixels=True, classes=classes,
                       details={"classes_from": CLASSES_FILE})
    return Release(images=data.pixels, labels=data.labels, files=files, pixels=True, classes=names,
                   details={"classes_from": "folder names"})


def _read_classes(path: Path) -> list[str]:
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InteropError(f"not a JSON list of class names ({e})", path) from None
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) and c for c in classes)):
        raise InteropError("expected a JSON list of non-empty class names", path)
    return classes
