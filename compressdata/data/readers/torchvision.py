"""Reader `torchvision:CLASS`: a `torchvision.datasets` class (downloaded only with download=True)."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from compressdata.data.images import array_to_nchw, stack_images
from compressdata.data.real import RealData, Statistics, check_split, real_data
from compressdata.errors import MissingDependencyError, MissingFileError, SourceError

DEFAULT_DOWNLOAD_ROOT = Path("~/.cache/compressdata/data")


def load_torchvision(class_name: str, split: str, root: str | os.PathLike | None,
                      download: bool, name: str, classes: Sequence[str] | None = None,
                      statistics: Statistics | None = None) -> RealData:
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise MissingDependencyError(f"{name}: torchvision is needed for this source; "
                          f"pip install 'compressdata[vision]'") from None
    cls = getattr(tvd, class_name, None)
    if not isinstance(cls, type):
        raise SourceError(f"{name}: torchvision.datasets has no dataset class {class_name!r}")
    root = Path(root if root is not None else DEFAULT_DOWNLOAD_ROOT).expanduser()
    params = inspect.signature(cls).parameters
    if "train" in params:
        check_split(split, name)
        kwargs: dict[str, Any] = {"train": split == "train"}
    elif "split" in params:
        kwargs = {"split": split}
    else:
        kwargs = {}
    try:
        ds = cls(str(root), download=download, **kwargs)
    except RuntimeError as exc:
        hints = {} if download else {"hint": "pass download=True to fetch it", "cli_hint": "add --download to fetch it"}
        said = re.sub(r"\s*[^.]*download=True[^.]*\.?", "", str(exc)).strip()  # torchvision's own advice: the hint's
        raise MissingFileError(f"{name}: {class_name} not found under {root}" + (f" ({said})" if said else ""),
                               **hints) from None
    pixels, labels = torchvision_arrays(ds, name)
    classes = classes if classes is not None else getattr(ds, "classes", None)
    return real_data(pixels, labels, classes, name, split, statistics)


def torchvision_arrays(ds: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = getattr(ds, "data", None)
    targets = next((getattr(ds, a) for a in ("targets", "labels") if hasattr(ds, a)), None)
    if data is None or targets is None:
        items = [ds[i] for i in tqdm(range(len(ds)), desc=f"reading {name}", leave=False)]
        return stack_images([img for img, _ in items], name), \
            torch.as_tensor([int(t) for _, t in items], dtype=torch.int64)
    pixels = array_to_nchw(np.asarray(data), name, batched=True)
    return pixels, torch.as_tensor(np.asarray(targets), dtype=torch.int64)


def read(spec: str, split: str, *, root: str | os.PathLike | None = None, download: bool = False,
         name: str | None = None) -> RealData:
    """The `torchvision:CLASS` reader."""
    return load_torchvision(spec, split, root, download, name=name or f"torchvision:{spec}")
