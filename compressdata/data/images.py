"""Image arrays of any common layout as the [N, C, H, W] tensors every reader returns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from compressdata.errors import SourceError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
GRAY_MODES = ("1", "L", "I", "I;16", "F")


def array_to_nchw(array: np.ndarray, name: str, batched: bool) -> torch.Tensor:
    """[N,] H, W[, C] or [N,] C, H, W arrays (0-255 integers, or floats in [0, 1]) -> a [N,] C,
    H, W tensor (uint8 or float32)."""
    a = array if batched else array[None]
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    elif not (a.ndim == 4 and a.shape[1] in (1, 3)):
        raise SourceError(f"{name}: cannot read images of shape {array.shape}; expected [H, W], "
                         f"[H, W, C] or [C, H, W] per image with C in (1, 3)")
    if a.dtype.kind in "iu" and a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            raise SourceError(f"{name}: integer images must lie in [0, 255]; got "
                             f"[{a.min()}, {a.max()}]")
        a = a.astype(np.uint8)
    t = torch.from_numpy(np.ascontiguousarray(a))
    if t.dtype != torch.uint8:
        if not t.is_floating_point():
            raise SourceError(f"{name}: images must be integers or floats; got {t.dtype}")
        t = t.to(torch.float32)
    return t if batched else t[0]


def stack_images(images: Iterable[Any], name: str) -> torch.Tensor:
    """PIL images (converted to the first one's gray/RGB mode) -> uint8 [N, C, H, W]."""
    arrays: list[np.ndarray] = []
    mode = None
    for i, img in enumerate(images):
        if mode is None:
            mode = "L" if img.mode in GRAY_MODES else "RGB"
        array = np.asarray(img if img.mode == mode else img.convert(mode), dtype=np.uint8)
        if arrays and array.shape != arrays[0].shape:
            raise SourceError(f"{name}: image {i} has shape {array.shape}; image 0 has "
                             f"{arrays[0].shape} (all images must have the same size)")
        arrays.append(array)
    if not arrays:
        raise SourceError(f"{name}: no images found")
    return array_to_nchw(np.stack(arrays), name, batched=True)


def stack_arrays(arrays: list[torch.Tensor], name: str) -> torch.Tensor:
    if not arrays:
        raise SourceError(f"{name}: no samples found")
    shapes = {tuple(a.shape) for a in arrays}
    dtypes = {a.dtype for a in arrays}
    if len(shapes) > 1 or len(dtypes) > 1:
        raise SourceError(f"{name}: .npy images differ in shape or dtype: {sorted(shapes)[:3]}, "
                         f"{sorted(map(str, dtypes))}")
    return torch.stack(arrays)
