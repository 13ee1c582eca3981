"""The plain layout many repositories save: `torch.save((images, labels), f)`, a list of the two,
or a dict with images under `images` / `image` / `x` / `data` / `syn_images` and labels under
`labels` / `label` / `y` / `targets` / `syn_labels` (optionally a learned lr under `lr` / `syn_lr`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from compressdata.interop.errors import InteropError
from compressdata.interop.release import Release, as_lr, as_tensor
from compressdata.interop.safeload import load_pt

IMAGE_KEYS = ("images", "image", "x", "data", "syn_images", "image_syn")
LABEL_KEYS = ("labels", "label", "y", "targets", "syn_labels", "label_syn")
LR_KEYS = ("lr", "syn_lr", "lr_net")


def read(paths: Sequence[Path], experiment: int | None = None) -> Release:
    """Read one file holding (images, labels) or {"images": ..., "labels": ...[, "lr": ...]}."""
    if len(paths) != 1 or paths[0].is_dir():
        raise InteropError(f"the plain layout is one .pt file; got {[str(p) for p in paths]}")
    path = paths[0]
    content = load_pt(path)
    lr = None
    if isinstance(content, list | tuple):
        if len(content) != 2:
            raise InteropError(f"expected (images, labels), got a {type(content).__name__} of length "
                               f"{len(content)}", path)
        images, labels = content
    elif isinstance(content, Mapping):
        images, labels = _pick(content, IMAGE_KEYS, "images", path), _pick(content, LABEL_KEYS, "labels", path)
        lr_key = next((k for k in LR_KEYS if k in content), None)
        lr = None if lr_key is None else as_lr(content[lr_key], path)
    else:
        raise InteropError(f"expected (images, labels) or a dict of them, got {type(content).__name__}", path)
    return Release(images=as_tensor(images, "images", path), labels=as_tensor(labels, "labels", path),
                   lr=lr, files=[path])


def _pick(content: Mapping, keys: tuple[str, ...], what: str, path: Path):
    key = next((k for k in keys if k in content), None)
    if key is None:
        raise InteropError(f"no {what} in the dict: expected one of the keys {list(keys)}, got "
                           f"{sorted(map(str, content))}", path)
    return content[key]
