"""Image previews of a bank: a grid with one row per class, each row labelled with its class name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from compressdata.bank.memory_bank import MemoryBank
from compressdata.errors import UsageError
from compressdata.files import atomic_write

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
MAX_LABEL = 24  # characters of a class name shown
LABEL_MARGIN = 4  # pixels around a row's label


def grid_image(rows: list[torch.Tensor], scale: int = 2, padding: int = 1, columns: int | None = None,
               labels: Sequence[str] | None = None) -> Image.Image:
    """An RGB grid: row k shows the pixel images rows[k] ([n, C, H, W] in [0, 1]; may be empty);
    `columns` cells per row (default: the longest row); `labels[k]`, when given, is written left of row k."""
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
    image = Image.fromarray(array, mode="RGB")
    return image if labels is None else _with_labels(image, [label_text(t) for t in labels], cell_h, padding)


def label_text(name: str) -> str:
    """A class name as the preview writes it: printable ASCII (others as '?'), at most MAX_LABEL characters."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in str(name))
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 3] + "..."


def _with_labels(grid: Image.Image, labels: list[str], cell_h: int, padding: int) -> Image.Image:
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(grid)
    width = max((measure.textlength(t, font=font) for t in labels), default=0)
    left = int(width) + 2 * LABEL_MARGIN
    out = Image.new("RGB", (grid.width + left, grid.height), "white")
    out.paste(grid, (left, 0))
    draw = ImageDraw.Draw(out)
    for row, text in enumerate(labels):
        middle = padding + row * cell_h + (cell_h - padding) // 2
        draw.text((LABEL_MARGIN, middle), text, fill="black", font=font, anchor="lm")
    return out


def autocontrast(pixels: torch.Tensor) -> torch.Tensor:
    """Each image [C, H, W] of `pixels` stretched to span [0, 1] (a flat image stays as it is), so that
    faint structure shows."""
    flat = pixels.reshape(len(pixels), -1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = (high - low).where(high > low, torch.ones_like(high))
    stretched = (flat - low[:, None]) / span[:, None]
    return stretched.where((high > low)[:, None], flat).reshape(pixels.shape)


def preview_grid(bank: MemoryBank, per_class: int = 10, scale: int = 2, padding: int = 1, *,
                 labels: bool = True, contrast: bool = False) -> Image.Image:
    """A grid image: row c shows up to `per_class` examples of class c (by hard label), in pixels, labelled
    with the class name (labels=False: without); contrast=True stretches each example to span [0, 1]."""
    if per_class < 1 or scale < 1:
        raise UsageError(f"per_class and scale must be >= 1, got {per_class}, {scale}")
    hard = bank.hard_labels()
    rows = []
    for c in range(bank.num_classes):
        index = torch.nonzero(hard == c).flatten()[:per_class]
        pixels = bank.decode_pixels(index) if index.numel() else torch.empty(0, *bank.image_shape)
        rows.append(autocontrast(pixels) if contrast and len(pixels) else pixels)
    return grid_image(rows, scale=scale, padding=padding, columns=per_class,
                      labels=bank.classes if labels else None)


def save_preview(bank: MemoryBank, path: str | os.PathLike, per_class: int = 10, scale: int = 2, *,
                 labels: bool = True, contrast: bool = False) -> None:
    """Write the preview grid as an image file (atomically; PNG, or JPEG for a .jpg / .jpeg path)."""
    check_image_path(path)
    save_image(preview_grid(bank, per_class=per_class, scale=scale, labels=labels, contrast=contrast), path)


def check_image_path(path: str | os.PathLike) -> str:
    """The image format of `path` by its suffix (PNG, JPEG); a UsageError for a folder, a missing folder or
    another suffix, before any work is done."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{target} is a folder; expected an image file path such as {target / 'preview.png'}")
    image_format = IMAGE_FORMATS.get(target.suffix.lower())
    if image_format is None:
        raise UsageError(f"{target}: cannot tell the image format from the suffix {target.suffix!r}; "
                         f"expected {', '.join(IMAGE_FORMATS)}")
    if not target.parent.is_dir():
        raise UsageError(f"{target}: the folder {target.parent} does not exist")
    return image_format


def save_image(image: Image.Image, path: str | os.PathLike) -> None:
    """Write `image` atomically (temp file + rename: never a partial file) as PNG, or JPEG for a .jpg / .jpeg
    path (`check_image_path`)."""
    image_format = check_image_path(path)
    options = {"quality": 95} if image_format == "JPEG" else {}
    atomic_write(path, lambda tmp: image.save(tmp, format=image_format, **options))


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """Write `image` as a PNG file atomically, whatever the path's suffix."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
