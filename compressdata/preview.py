"""PNG previews of a bank: a grid with one row per class."""

from __future__ import annotations

import os

import torch
from PIL import Image

from compressdata.bank.memory_bank import MemoryBank
from compressdata.errors import UsageError
from compressdata.files import atomic_write


def grid_image(rows: list[torch.Tensor], scale: int = 2, padding: int = 1,
               columns: int | None = None) -> Image.Image:
    """An RGB grid: row k shows the pixel images rows[k] ([n, C, H, W] in [0, 1]; may be empty);
    `columns` cells per row (default: the longest row)."""
    if scale < 1:
        raise UsageError(f"scale must be >= 1, got {scale}")
    shapes = {tuple(r.shape[1:]) for r in rows if r.numel()}
    if len(shapes) != 1:
        raise UsageError(f"grid rows need one common image shape and at least one image; got {sorted(shapes)}")
    c, h, w = shapes.pop()
    cell_h, cell_w = h * scale + padding, w * scale + padding
    columns = columns or max(len(r) for r in rows)
    grid = torch.ones(3, len(rows) * cell_h + padding, columns * cell_w + padding)
    for row, images in enumerate(rows):
        if images.numel() == 0:
            continue
        # 3+ channels: the first three as RGB; 1 or 2 channels: their mean as grey
        images = images[:, :3] if c >= 3 else images.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
        for col, image in enumerate(images):
            top, left = padding + row * cell_h, padding + col * cell_w
            grid[:, top : top + h * scale, left : left + w * scale] = image
    array = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(array, mode="RGB")


def preview_grid(bank: MemoryBank, per_class: int = 10, scale: int = 2, padding: int = 1) -> Image.Image:
    """A grid image: row c shows up to `per_class` examples of class c (by hard label), in pixels."""
    if per_class < 1 or scale < 1:
        raise UsageError(f"per_class and scale must be >= 1, got {per_class}, {scale}")
    labels = bank.hard_labels()
    rows = []
    for c in range(bank.num_classes):
        index = torch.nonzero(labels == c).flatten()[:per_class]
        rows.append(bank.decode_pixels(index) if index.numel() else torch.empty(0, *bank.image_shape))
    return grid_image(rows, scale=scale, padding=padding, columns=per_class)


def save_preview(bank: MemoryBank, path: str | os.PathLike, per_class: int = 10, scale: int = 2) -> None:
    """Write the preview grid as a PNG file (atomically)."""
    save_png(preview_grid(bank, per_class=per_class, scale=scale), path)


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """Write `image` as a PNG file atomically (temp file + rename: never a partial file)."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
