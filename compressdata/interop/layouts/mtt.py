"""MTT / FTD / DATM layout: `images_best.pt`, `labels_best.pt` and, when saved, the learned lr.

MTT (GeorgeCazenavette/mtt-distillation, distill.py) and FTD (AngusDujw/FTD-distillation,
distill/distill_FTD.py) save `images_<it>.pt` / `images_best.pt` (float [N, C, H, W] in the training
space) and `labels_*.pt` (int64 [N]); DATM (NUS-HPC-AI-Lab/DATM, distill/DATM.py) also saves
`lr_*.pt` (the learned lr, a 0-d tensor) and learns soft labels (float [N, classes] logits, used
through softmax). `syn_lr_best.pt` is accepted as another name of the lr file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from compressdata.interop.errors import InteropError
from compressdata.interop.release import Release, as_lr, as_tensor
from compressdata.interop.safeload import load_pt

DEFAULT_FILES = {"images": "images_best.pt", "labels": "labels_best.pt"}
LR_FILES = ("lr_best.pt", "syn_lr_best.pt")


def role(path: Path) -> str | None:
    """"images", "labels" or "lr" from a file name such as images_best.pt or syn_lr_5000.pt."""
    name = path.name
    if name.startswith("images_zca") and name.endswith(".pt"):
        raise InteropError("images_zca_*.pt holds MTT's previews with the ZCA whitening undone, not the "
                           "images networks train on: import images_<it>.pt or images_best.pt with --zca", path)
    if not name.endswith(".pt"):
        return None
    for prefix, what in (("images", "images"), ("labels", "labels"), ("syn_lr", "lr"), ("lr", "lr")):
        if name.startswith(prefix):
            return what
    return None


def find_files(paths: Sequence[Path], names: dict[str, str], lr_names: Sequence[str],
               layout: str) -> dict[str, Path]:
    """{"images", "labels"[, "lr"]} -> file, from one folder (default names) or explicit files."""
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        found = {what: folder / name for what, name in names.items() if (folder / name).is_file()}
        lr = next((folder / n for n in lr_names if (folder / n).is_file()), None)
        if lr is not None:
            found["lr"] = lr
        if "images" not in found:
            present = sorted(p.name for p in folder.glob("*.pt"))[:10]
            raise InteropError(f"no {names['images']} in this folder (found {present or 'no .pt files'}); "
                               f"name the {layout} files instead", folder)
        return found
    found: dict[str, Path] = {}
    for path in paths:
        what = role(path)
        if what is None:
            raise InteropError(f"cannot tell what this file is in the {layout} layout: expected a name "
                               "starting with images, labels, lr or syn_lr and ending in .pt", path)
        if what in found:
            raise InteropError(f"two {what} files given: {found[what].name} and {path.name}", path)
        found[what] = path
    if "images" not in found:
        raise InteropError(f"no images file among {[p.name for p in paths]}")
    return found


def read(paths: Sequence[Path], experiment: int | None = None) -> Release:
    """Read a run folder (images_best.pt, labels_best.pt, lr_best.pt or syn_lr_best.pt) or the
    files themselves. Without a labels file the labels are class-ordered (DD-Ranking's rule)."""
    found = find_files(paths, DEFAULT_FILES, LR_FILES, "mtt")
    images = as_tensor(load_pt(found["images"]), "images", found["images"])
    labels = None
    if "labels" in found:
        labels = as_tensor(load_pt(found["labels"]), "labels", found["labels"])
    lr = as_lr(load_pt(found["lr"]), found["lr"]) if "lr" in found else None
    return Release(images=images, labels=labels, lr=lr, files=list(found.values()),
                   soft_labels="logits", labels_file=found.get("labels"),
                   details={"roles": {what: p.name for what, p in found.items()}})
