"""`export_release`: a bank's decoded examples as the `.pt` files the field's evaluators load.

DD-Ranking (`images.pt`, `labels.pt`, `lr.pt`) and MTT-style evaluation code (DATM's
distill/evaluation.py: `images_best.pt`, `labels_best.pt`, `lr_best.pt`) read tensors with
`torch.load`, so these two formats are the one place the library writes `torch.save` files: plain
tensors only, which `torch.load(weights_only=True)` reads. Images are the decoded examples in the
bank's space (normalised or ZCA-whitened, as the evaluators train on them); hard labels are int64
class indices, soft labels are logits (both evaluators take softmax(labels); probabilities p are
written as log p); the lr is the recipe's, a 0-d float32 tensor. `compressdata.json` beside them
records what the tensors cannot (classes, normalisation, recipe, source checksum) and, for ZCA
banks, `zca.safetensors` holds the whitening to apply to the test images.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from compressdata.bank.memory_bank import MemoryBank
from compressdata.interop.errors import InteropError

RELEASE_FORMATS: dict[str, tuple[str, str, str]] = {
    "ddranking": ("images.pt", "labels.pt", "lr.pt"),
    "mtt": ("images_best.pt", "labels_best.pt", "lr_best.pt"),
}
SIDECAR = "compressdata.json"
ZCA_FILE = "zca.safetensors"


def release_tensors(bank: MemoryBank, class_ordered: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images float32 [N, C, H, W], labels int64 [N] or float32 logits [N, K], lr 0-d float32).

    class_ordered: examples sorted by hard label (stable), as DD-Ranking's hard-label evaluator
    assumes (class 0's examples first)."""
    order = torch.argsort(bank.hard_labels(), stable=True) if class_ordered else torch.arange(len(bank))
    with torch.no_grad():
        images = bank.decode(order).to(torch.float32).contiguous()
    labels = bank.labels[order]
    if bank.label_space == "probabilities":
        labels = labels.clamp_min(torch.finfo(torch.float32).tiny).log()
    lr = torch.tensor(bank.recipe.lr, dtype=torch.float32)
    return images, labels.contiguous(), lr


def export_release(bank: MemoryBank, out_dir: str | os.PathLike, format: str) -> list[Path]:
    """Write the bank in `format` ("ddranking" or "mtt") into `out_dir`; returns the files written.

    The files are written to a temporary folder inside `out_dir` and moved into place once all are
    complete; existing files of the same names are replaced."""
    if format not in RELEASE_FORMATS:
        raise InteropError(f"unknown release format {format!r}; expected one of {sorted(RELEASE_FORMATS)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InteropError(f"{out}: expected a folder to write the {format} files into")
    out.mkdir(parents=True, exist_ok=True)
    images, labels, lr = release_tensors(bank, class_ordered=format == "ddranking")
    names = RELEASE_FORMATS[format]
    staging = Path(tempfile.mkdtemp(prefix=f".{format}-", dir=out))
    try:
        for name, tensor in zip(names, (images, labels, lr), strict=True):
            torch.save(tensor, staging / name)
        (staging / SIDECAR).write_text(json.dumps(_sidecar(bank, format, names), indent=1, sort_keys=True) + "\n",
                                       encoding="utf-8")
        written = [*names, SIDECAR]
        if bank.normalization.uses_zca:
            save_file({"zca_mean": bank.normalization.zca_mean.float().contiguous(),
                       "zca_whiten": bank.normalization.zca_whiten.float().contiguous()}, staging / ZCA_FILE)
            written.append(ZCA_FILE)
        for name in written:
            with open(staging / name, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(staging / name, out / name)
        return [out / name for name in written]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sidecar(bank: MemoryBank, format: str, names: tuple[str, str, str]) -> dict:
    norm = bank.normalization
    return {
        "format": format,
        "files": {"images": names[0], "labels": names[1], "lr": names[2]},
        "classes": list(bank.classes),
        "labels": "int64 class indices" if bank.label_space == "index" else
                  "float32 logits (train on softmax(labels / label_temperature))",
        "class_ordered": format == "ddranking",
        "normalization": {"mean": list(norm.mean), "std": list(norm.std),
                          "zca": None if not norm.uses_zca else
                          {"regularization": norm.zca_regularization, "tensors": ZCA_FILE,
                           "rule": "whitened = (x - zca_mean) @ zca_whiten on flattened normalised images"}},
        "recipe": bank.recipe.to_dict(),
        "source_bank": {"checksum": bank.checksum(), "kind": bank.kind, "storage": bank.storage},
    }
