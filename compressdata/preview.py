"""PNG previews of a bank: a grid with one row per class."""

from __future__ import annotations

import os

import torch
from PIL import Image

from compressdata.bank.memory_bank import MemoryBank


def preview_grid(bank: MemoryBank, per_class: int = 10, scale: int = 2, padding: int = 1) -> Image.Image:
    """A grid image: row c shows up to `per_class` examples of class c (by hard label), in pixels."""
    if per_class < 1 or scale < 1:
        raise ValueError(f"per_class and scale must be >= 1, got {per_class}, {scale}")
    labels = bank.hard_labels()
    c, h, w = bank.image_shape
    cell_h, cell_w = h * scale + padding, w * scale + padding
    grid = torch.ones(3, bank.num_classes * cell_h + padding, per_class * cell_w + padding)
    for row in range(bank.num_classes):
        index = torch.nonzero(labels == row).flatten()[:per_class]
        if index.numel() == 0:
            continue
        images = bank.decode_pixels(index)
        images = images.expand(-1, 3, -1, -1) if c == 1 else images[:, :3]
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
        for col, image in enumerate(images):
            top, left = padding + row * cell_h, padding + col * cell_w
            grid[:, top : top + h * scale, left : left + w * scale] = image
    array = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(array, mode="RGB")


def save_preview(bank: MemoryBank, path: str | os.PathLike, per_class: int = 10, scale: int = 2) -> None:
    """Write the preview grid as a PNG file."""
    preview_grid(bank, per_class=per_class, scale=scale).save(path, format="PNG")
