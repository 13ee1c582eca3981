"""`Release`: what a released distilled dataset holds, read from one of the field's layouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compressdata.interop.errors import InteropError


@dataclass
class Release:
    """The contents of released files, before the command's options complete them into a bank.

    images: [N, C, H, W]; floats in the space the method trained in (normalised or ZCA-whitened),
    or pixels (`pixels=True`: floats in [0, 1], or uint8 0-255). labels: int64 [N] class indices,
    float [N, classes] soft labels, or None when the layout implies class-ordered hard labels.
    lr: the learned training lr when the files hold one. hints: what file names say (method,
    dataset, model, ipc). details: layout facts for the provenance. classes: names the release
    carries. soft_labels: what float labels mean in this layout ("logits"), None when unknown.
    labels_file: the file the labels came from, when it is not the first of `files`.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    files: list[Path]
    lr: float | None = None
    pixels: bool = False
    hints: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    classes: list[str] | None = None
    soft_labels: str | None = None
    labels_file: Path | None = None

    @property
    def where_labels(self) -> Path:
        """The file to name in an error about the labels."""
        return self.labels_file or self.files[0]


def as_tensor(value: Any, what: str, path: Path) -> torch.Tensor:
    """`value` if it is a tensor, else an `InteropError` naming the file and what was found."""
    if not isinstance(value, torch.Tensor):
        raise InteropError(f"{what}: expected a tensor, got {type(value).__name__}", path)
    return value


def as_lr(value: Any, path: Path) -> float:
    """A learned lr stored as a number or a one-element tensor, checked finite and positive."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise InteropError(f"lr: expected one number, got a {str(value.dtype).removeprefix('torch.')} "
                               f"tensor of shape {list(value.shape)}", path)
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InteropError(f"lr: expected a number, got {type(value).__name__}", path)
    if not (value > 0 and value < float("inf")):
        raise InteropError(f"lr: expected a positive finite number, got {value}", path)
    return float(value)
