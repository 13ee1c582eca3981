"""`MemoryDataset`: a bank served as a torchvision-style dataset, decoded on the fly."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from compressdata.bank.memory_bank import MemoryBank
from compressdata.bank.order import interleaved_rows
from compressdata.dataset.targets import SoftTargets
from compressdata.errors import IndexOutOfRangeError, UsageError

OUTPUTS = ("tensor", "pixels", "pil")
ORDERS = ("interleaved", "stored")
_REPR_INDENT = 4


class MemoryDataset(torch.utils.data.Dataset):
    """A drop-in for torchvision's FashionMNIST/CIFAR10: `ds[i] -> (image, target)`.

    bank: a `MemoryBank`, or a bank file or Hub id (`load_memory_bank(bank, config=, revision=)`).
    output:
      - "tensor": float32 [C, H, W] in the bank's (normalised) space, ready for the network;
      - "pixels": float32 [C, H, W] in [0, 1] (the recorded normalisation undone);
      - "pil": a PIL image (uint8), so an existing torchvision pipeline (ToTensor, Normalize, ...)
        runs unchanged; normalise with the bank's mean / std (`repr(ds)` states them).
    order: "interleaved" (default) serves the rows class by class in turn (the first example of every
      class, then the second, ...), as a real dataset's files mix the classes, so a loop that does not
      shuffle still sees every class in every batch; "stored" serves the bank's row order. `rows[i]` is
      the bank row of example i.
    Targets: class indices (int) for hard labels; for soft labels (learned or given) the distributions
      the bank's recipe trains on (`bank.soft_targets()`: softmax(labels / T) of learned logits), as
      `SoftTargets`, float vectors that `CrossEntropyLoss` takes as they are; hard_targets=True gives
      their argmax as class indices instead. `targets` holds them in example order.
    A DataLoader batch decodes in one matrix product via `__getitems__`. `device` decodes there
    (e.g. "cuda"); keep num_workers=0 with a GPU device.
    """

    def __init__(
        self,
        bank: MemoryBank | str | os.PathLike,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        output: str = "tensor",
        device: torch.device | str | None = None,
        *,
        order: str = "interleaved",
        hard_targets: bool = False,
        config: str | None = None,
        revision: str | None = None,
    ):
        if output not in OUTPUTS:
            raise UsageError(f"output must be one of {OUTPUTS}, got {output!r}")
        if order not in ORDERS:
            raise UsageError(f"order must be one of {ORDERS}, got {order!r}")
        if not isinstance(bank, MemoryBank):
            if not isinstance(bank, (str, os.PathLike)):
                raise UsageError(f"bank must be a MemoryBank, a bank file or a Hub id, got {type(bank).__name__}")
            from compressdata.loading import load_memory_bank

            bank = load_memory_bank(bank, config=config, revision=revision)
        if output == "pil" and bank.image_shape[0] not in (1, 3):
            raise UsageError(f"output 'pil' needs 1 or 3 channels, the bank has {bank.image_shape[0]}")
        self.bank = bank
        self.transform = transform
        self.target_transform = target_transform
        self.output = output
        self.order = order
        self.device = None if device is None else torch.device(device)
        self.classes = list(bank.classes)
        self.class_to_idx = bank.class_to_idx
        hard = bank.hard_labels()
        self.rows = interleaved_rows(hard, bank.num_classes) if order == "interleaved" else torch.arange(len(bank))
        self.hard_targets = hard_targets or bank.label_space == "index"
        if self.hard_targets:
            self.targets: torch.Tensor = hard[self.rows]
        else:
            self.targets = bank.soft_targets()[self.rows].as_subclass(SoftTargets)

    def __len__(self) -> int:
        return len(self.bank)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not -len(self) <= index < len(self):
            raise IndexOutOfRangeError(f"index {index} out of range for a bank of {len(self)} examples")
        return self.__getitems__([index % len(self)])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, Any]]:
        """Decode a whole batch at once; returns [(image, target), ...] like __getitem__."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        images = self._decode(self.rows[index])
        targets = self.targets[index]
        images = list(images.unbind(0)) if self.output != "pil" else _to_pil(images)
        targets = targets.tolist() if targets.dim() == 1 else list(targets.unbind(0))
        if self.transform is not None:
            images = [self.transform(x) for x in images]
        if self.target_transform is not None:
            targets = [self.target_transform(t) for t in targets]
        return list(zip(images, targets, strict=True))

    def _decode(self, rows: torch.Tensor) -> torch.Tensor:
        if self.output == "tensor":
            return self.bank.decode(rows, self.device)
        return self.bank.decode_pixels(rows, self.device)

    def __repr__(self) -> str:
        body = [f"Number of datapoints: {len(self)}", *self.extra_repr().splitlines()]
        if self.transform is not None:
            body += _labelled("Transform: ", repr(self.transform))
        if self.target_transform is not None:
            body += _labelled("Target transform: ", repr(self.target_transform))
        return "\n".join([f"Dataset {type(self).__name__}"] + [" " * _REPR_INDENT + line for line in body])

    def extra_repr(self) -> str:
        """What the dataset serves: the bank, the row order, the images (and their normalisation), the targets."""
        bank = self.bank
        c, h, w = bank.image_shape
        order = ("interleaved across classes (order='stored': the bank's row order)" if self.order == "interleaved"
                 else "the bank's row order (stored)")
        return "\n".join([
            f"Bank: {bank.kind}, {bank.num_classes} classes, "
            f"{bank.storage['ipc_equivalent']:g} images per class of storage",
            f"Order: {order}",
            f"Output: {self.output}: {self._describe_output((c, h, w))}",
            f"Targets: {self._describe_targets()}",
        ])

    def _describe_output(self, shape: tuple[int, int, int]) -> str:
        norm = self.bank.normalization
        stats = f"mean={_rounded(norm.mean)}, std={_rounded(norm.std)}"
        zca = f" then ZCA whitening (regularisation {norm.zca_regularization:g})" if norm.uses_zca else ""
        if self.output == "tensor":
            return (f"float32 {list(shape)} in the bank's normalised space (Normalize({stats}){zca} already "
                    "applied: do not normalise again)")
        where = "8-bit PIL images" if self.output == "pil" else f"float32 {list(shape)}"
        if norm.uses_zca:
            return (f"{where} of pixels in [0, 1]; the bank was distilled ZCA-whitened, which a transform does not "
                    "reproduce: use output='tensor'")
        return (f"{where} of pixels in [0, 1], not normalised: add Normalize({stats}), the bank's own statistics "
                "(others cost accuracy)")

    def _describe_targets(self) -> str:
        bank = self.bank
        if bank.label_space == "index":
            return "class indices (int)"
        if self.hard_targets:
            return f"class indices (int): the argmax of the bank's {bank.label_space} labels"
        what = (f"softmax(logits / {bank.recipe.label_temperature:g}) of the learned labels"
                if bank.label_space == "logits" else "the stored probabilities")
        return (f"distributions float32 [{bank.num_classes}] ({what}, as the recipe's {bank.recipe.label_loss} "
                "trains on them): CrossEntropyLoss takes them as they are; hard_targets=True for class indices")


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(float(v), 4) for v in values]


def _labelled(label: str, text: str) -> list[str]:
    lines = text.splitlines() or [""]
    return [label + lines[0], *lines[1:]]


def _to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    data = (pixels * 255).round_().to(torch.uint8).cpu()
    if data.shape[1] == 1:
        return [Image.fromarray(x[0].numpy(), mode="L") for x in data]
    return [Image.fromarray(x.permute(1, 2, 0).numpy(), mode="RGB") for x in data]
