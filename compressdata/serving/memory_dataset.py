"""`MemoryDataset`: a bank served as a torchvision-style dataset, decoded on the fly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from compressdata.bank.memory_bank import MemoryBank
from compressdata.errors import IndexOutOfRangeError, UsageError

OUTPUTS = ("tensor", "pixels", "pil")


class MemoryDataset(torch.utils.data.Dataset):
    """A drop-in for torchvision's FashionMNIST/CIFAR10: `ds[i] -> (image, target)`.

    output:
      - "tensor": float32 [C, H, W] in the bank's (normalised) space, ready for the network;
      - "pixels": float32 [C, H, W] in [0, 1] (the recorded normalisation undone);
      - "pil": a PIL image (uint8), so an existing torchvision pipeline (ToTensor, Normalize, ...)
        runs unchanged.
    Targets are class indices for hard labels and float vectors for soft labels (as stored; see
    `bank.recipe.label_loss`). A DataLoader batch decodes in one matrix product via
    `__getitems__`. `device` decodes there (e.g. "cuda"); keep num_workers=0 with a GPU device.
    """

    def __init__(
        self,
        bank: MemoryBank,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        output: str = "tensor",
        device: torch.device | str | None = None,
    ):
        if output not in OUTPUTS:
            raise UsageError(f"output must be one of {OUTPUTS}, got {output!r}")
        if output == "pil" and bank.image_shape[0] not in (1, 3):
            raise UsageError(f"output 'pil' needs 1 or 3 channels, the bank has {bank.image_shape[0]}")
        self.bank = bank
        self.transform = transform
        self.target_transform = target_transform
        self.output = output
        self.device = None if device is None else torch.device(device)
        self.classes = list(bank.classes)
        self.class_to_idx = bank.class_to_idx
        self.targets = bank.labels

    def __len__(self) -> int:
        return len(self.bank)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not -len(self) <= index < len(self):
            raise IndexOutOfRangeError(f"index {index} out of range for a bank of {len(self)} examples")
        return self.__getitems__([index % len(self)])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, Any]]:
        """Decode a whole batch at once; returns [(image, target), ...] like __getitem__."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        images = self._decode(index)
        targets = self.targets[index]
        images = list(images.unbind(0)) if self.output != "pil" else _to_pil(images)
        targets = targets.tolist() if targets.dim() == 1 else list(targets.unbind(0))
        if self.transform is not None:
            images = [self.transform(x) for x in images]
        if self.target_transform is not None:
            targets = [self.target_transform(t) for t in targets]
        return list(zip(images, targets, strict=True))

    def _decode(self, index: torch.Tensor) -> torch.Tensor:
        if self.output == "tensor":
            return self.bank.decode(index, self.device)
        return self.bank.decode_pixels(index, self.device)


def _to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    data = (pixels * 255).round_().to(torch.uint8).cpu()
    if data.shape[1] == 1:
        return [Image.fromarray(x[0].numpy(), mode="L") for x in data]
    return [Image.fromarray(x.permute(1, 2, 0).numpy(), mode="RGB") for x in data]
