"""`import_bank`: a released distilled dataset (any layout in `layouts`) -> a validated `MemoryBank`
that carries what the files leave out: classes, normalisation or ZCA, the method's evaluation recipe
(learned lr included) and the provenance of the files (method, paper, sha256 of every file read)."""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from compressdata.bank.memory_bank import MemoryBank
from compressdata.bank.metadata import Normalization
from compressdata.errors import BankFormatError, MissingFileError
from compressdata.interop.errors import InteropError
from compressdata.interop.layouts import LAYOUTS
from compressdata.interop.presets import (
    METHODS,
    DatasetPreset,
    MethodPreset,
    dataset_preset,
    method_preset,
    recipe,
)
from compressdata.interop.release import Release
from compressdata.interop.safeload import source_records
from compressdata.interop.zca import kornia_zca_normalization
from compressdata.serving.export import class_folder_names
from compressdata.version import __version__

SOFT_LABEL_SPACES = ("probabilities", "logits")
STORED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def import_bank(
    files: str | os.PathLike | Sequence[str | os.PathLike],
    layout: str,
    *,
    dataset: str | None = None,
    method: str | None = None,
    model: str | None = None,
    lr: float | None = None,
    zca: bool | None = None,
    zca_eps: float = 0.1,
    data_root: str | os.PathLike | None = None,
    experiment: int | None = None,
    label_space: str | None = None,
    pixels: bool = False,
    ipc: float | None = None,
) -> MemoryBank:
    """Read released files of `layout` ("mtt", "dc", "plain", "ddranking", "folder") into a bank.

    Only `torch.load(weights_only=True)` reads `.pt` files: a file that needs full unpickling raises
    `UnsafeFileError` and nothing in it runs. What the files cannot say comes from the arguments,
    or from what the file name says (the dc layout's res_<method>_<dataset>_<model>_<ipc>ipc.pt):
    dataset: a preset (fashion-mnist, mnist, cifar10, cifar100, svhn) giving classes and the mean /
    std the method's code normalises with. method: dc, dsa, dm, mtt, ftd, datm (required for the
    mtt layout, which three methods share): the published evaluation recipe; None keeps
    compressdata's default protocol. model: the network as the method's code names it (default
    ConvNet). lr: the training lr (default: the learned lr in the files; the mtt family needs one).
    zca: whether the images are ZCA-whitened (MTT's rule: kornia ZCAWhitening with eps `zca_eps`,
    fitted here on the real training split, read from `data_root` or the preset's usual place).
    experiment: which experiment of a dc file (default 0). label_space: "probabilities" or
    "logits" for float labels (default: logits in the mtt and ddranking layouts, else probabilities
    when every row is a distribution). pixels: float images are [0, 1] pixels rather than in the
    method's space (uint8 images always are). ipc: the budget the release claims, recorded in the
    provenance (the dc layout's name gives it); the bank's storage counts what the files hold.
    Raises `InteropError` (or `UnsafeFileError`, `FileNotFoundError`) naming the file and the problem.
    """
    if layout not in LAYOUTS:
        raise InteropError(f"unknown layout {layout!r}; expected one of {sorted(LAYOUTS)}")
    paths = [Path(files)] if isinstance(files, str | os.PathLike) else [Path(f) for f in files]
    if not paths:
        raise InteropError("no files given")
    for path in paths:
        if not path.exists():
            raise MissingFileError(f"{path}: no such file or folder")
    if experiment is not None and layout != "dc":
        raise InteropError(f"experiment selects one run of a dc result file; the {layout} layout has one")
    release = LAYOUTS[layout](paths, experiment)
    data = _resolve_dataset(dataset, release)
    preset = _resolve_method(method, release, layout)
    model = _resolved(model, release.hints.get("model"), "model", lambda m: m) or "ConvNet"
    zca = preset.zca_default(data) if zca is None else zca
    if zca is None:
        raise InteropError(f"{preset.name} runs on {data.name} may or may not use ZCA whitening (its --zca "
                           "flag) and the files do not say", hint="pass zca=True or False",
                           cli_hint="pass --zca or --no-zca")
    classes = _class_names(release, data, paths[0])
    labels, space = _labels(release, data, label_space)
    normalization = _normalization(preset, data, zca, zca_eps, data_root)
    images = _images(release, data, normalization, pixels)
    train_lr = _lr(preset, lr, release)
    provenance = _provenance(layout, release, preset, data, model, train_lr, zca, zca_eps, pixels,
                             _resolved(ipc, release.hints.get("ipc"), "ipc", float), space)
    try:
        return MemoryBank(pixels=images, labels=labels, classes=classes,
                          normalization=normalization, recipe=recipe(preset, data, model, train_lr, space),
                          provenance=provenance, label_space=space)
    except BankFormatError as e:
        raise InteropError(f"the release does not make a valid bank: {e.problem}", paths[0]) from None


def _resolved(given: Any, hinted: Any, what: str, same: Any) -> Any:
    """The argument, else what the file name says; both given and different is an error."""
    if given is not None and hinted is not None and same(given) != same(hinted):
        raise InteropError(f"the file name says {what} {hinted!r}, but {what} {given!r} was given")
    return given if given is not None else hinted


def _resolve_dataset(name: str | None, release: Release) -> DatasetPreset:
    hinted = release.hints.get("dataset")
    if name is None and hinted is None:
        raise InteropError("the files do not say which dataset they distil: give the dataset "
                           "(--dataset fashion-mnist, mnist, cifar10, cifar100 or svhn)")
    chosen = dataset_preset(name) if name is not None else None
    from_name = dataset_preset(hinted) if hinted is not None else None
    if chosen is not None and from_name is not None and chosen != from_name:
        raise InteropError(f"the file name says dataset {hinted!r}, but {name!r} was given")
    return chosen or from_name  # type: ignore[return-value]


def _resolve_method(name: str | None, release: Release, layout: str) -> MethodPreset:
    hinted = release.hints.get("method")
    if hinted is not None and hinted.lower() not in METHODS:  # e.g. a DC-layout file of another method
        if name is None:
            raise InteropError(f"the file name says method {hinted!r}, which has no preset: give the method "
                               f"whose evaluation protocol to record ({', '.join(sorted(METHODS))})")
        hinted = None
    if name is not None and hinted is not None and method_preset(name) != method_preset(hinted):
        raise InteropError(f"the file name says method {hinted!r}, but {name!r} was given")
    name = name if name is not None else hinted
    if name is None and layout == "mtt":
        raise InteropError("the mtt layout is shared by MTT, FTD and DATM, whose recipes differ: give the "
                           "method (--method mtt, ftd or datm)")
    return method_preset(name)


def _labels(release: Release, data: DatasetPreset, label_space: str | None) -> tuple[torch.Tensor, str]:
    """(labels, label_space) checked against the images and the dataset's classes."""
    n, k = int(release.images.shape[0]), data.num_classes
    where = release.where_labels
    labels = release.labels
    if labels is None:
        if n % k:
            raise InteropError(f"no labels file: class-ordered labels need the {n} images to split evenly "
                               f"over the {k} classes of {data.name}", where)
        return torch.arange(k).repeat_interleave(n // k), "index"
    if labels.ndim == 1 and labels.is_floating_point():
        if not bool((labels == labels.round()).all()):
            raise InteropError("labels: a float vector that is not whole class numbers (soft labels are "
                               "[N, classes])", where)
        labels = labels.to(torch.int64)
    if labels.ndim == 1:
        if labels.dtype in (torch.bool, torch.complex64, torch.complex128):
            raise InteropError(f"labels: expected class indices, got {labels.dtype}", where)
        if labels.shape[0] != n:
            raise InteropError(f"labels: {labels.shape[0]} labels for {n} images", where)
        if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise InteropError(f"labels: values must lie in [0, {k}) ({data.name} has {k} classes); got "
                               f"[{int(labels.min())}, {int(labels.max())}]", where)
        if label_space not in (None, "index"):
            raise InteropError(f"label_space {label_space!r} is for soft labels; these are class indices", where)
        return labels.to(torch.int64).clone(), "index"
    if labels.ndim != 2 or not labels.is_floating_point() or tuple(labels.shape) != (n, k):
        raise InteropError(f"labels: expected int64 [{n}] or float soft labels [{n}, {k}], got "
                           f"{str(labels.dtype).removeprefix('torch.')} {list(labels.shape)}", where)
    soft = labels.to(torch.float32).clone()
    if not bool(torch.isfinite(soft).all()):
        raise InteropError("labels: soft labels contain NaN or Inf", where)
    space = label_space or release.soft_labels or _guess_soft_space(soft)
    if space not in SOFT_LABEL_SPACES:
        raise InteropError(f"label_space must be one of {SOFT_LABEL_SPACES} for soft labels; got {space!r}")
    return soft, space


def _guess_soft_space(labels: torch.Tensor) -> str:
    distributions = bool((labels >= 0).all()) and torch.allclose(labels.sum(1), torch.ones(len(labels)), atol=1e-4)
    return "probabilities" if distributions else "logits"


def _normalization(preset: MethodPreset, data: DatasetPreset, zca: bool, eps: float,
                   data_root: str | os.PathLike | None) -> Normalization:
    if not zca:
        mean, std = preset.normalization_stats(data)
        return Normalization(mean=list(mean), std=list(std))
    from compressdata.data.sources import load_source

    try:
        train = load_source(data.name, "train", root=data_root)
    except (FileNotFoundError, ImportError) as e:
        raise InteropError(f"ZCA whitening is fitted on the real {data.name} training split, which could "
                           f"not be read ({e}); pass its folder (--data-root)") from None
    return kornia_zca_normalization(train.float_pixels, eps)


def _images(release: Release, data: DatasetPreset, normalization: Normalization, pixels: bool) -> torch.Tensor:
    images = release.images
    where = release.files[0]
    if images.ndim != 4 or tuple(images.shape[1:]) != data.image_shape:
        raise InteropError(f"images: expected [N, {', '.join(map(str, data.image_shape))}] for {data.name}, "
                           f"got {list(images.shape)}", where)
    if images.shape[0] == 0:
        raise InteropError("images: the release holds no images", where)
    if images.dtype == torch.uint8:
        return normalization.apply(images.to(torch.float32) / 255.0).contiguous()
    if not images.is_floating_point():
        raise InteropError(f"images: expected floats (or uint8 pixels), got {images.dtype}", where)
    if not bool(torch.isfinite(images).all()):
        raise InteropError("images: contain NaN or Inf", where)
    if pixels or release.pixels:
        return normalization.apply(images.to(torch.float32)).contiguous()
    stored = images if images.dtype in STORED_DTYPES else images.to(torch.float32)
    return stored.contiguous().clone()


def _lr(preset: MethodPreset, lr: float | None, release: Release) -> float:
    if lr is not None:
        if not (isinstance(lr, int | float) and 0 < lr < float("inf")):
            raise InteropError(f"lr must be a positive number; got {lr!r}")
        return float(lr)
    if release.lr is not None:
        return release.lr
    if preset.learned_lr:
        raise InteropError(f"{preset.name} trains with the lr it learned with the images, and the files do not "
                           "hold it (no lr_best.pt / syn_lr_best.pt): pass it (--lr, the run's Synthetic_LR)")
    return preset.lr


def _class_names(release: Release, data: DatasetPreset, where: Path) -> list[str]:
    """The dataset's class names. A release that names its classes (an image folder) must name the
    same ones, by name or number; its labels are renumbered into the dataset's class order."""
    if release.classes is None:
        return list(data.classes)
    if len(release.classes) != data.num_classes:
        raise InteropError(f"the release has {len(release.classes)} classes, {data.name} has {data.num_classes}",
                           where)
    mapping = _class_order(release.classes, data)
    if mapping is None:
        raise InteropError(f"class folders {release.classes[:5]}... are neither {data.name}'s class names nor "
                           "numbered 0..K-1 (or NN-name): rename them or add classes.json", where)
    if release.labels is not None:
        release.labels = torch.tensor(mapping, dtype=torch.int64)[release.labels]
    return list(data.classes)


def _class_order(names: list[str], data: DatasetPreset) -> list[int] | None:
    """For each release class name, its index among the dataset's classes (None: no match): by the
    exact name, the name with unsafe characters as _ (T-shirt_top), or a leading number (03-Dress)."""
    known = {name: i for i, name in enumerate(data.classes)}
    for i, folder in enumerate(class_folder_names(list(data.classes))):
        known.setdefault(folder.split("-", 1)[1], i)
    order = []
    for name in names:
        number = re.fullmatch(r"(\d+)(?:-.*)?", name)
        index = known.get(name, int(number[1]) if number else None)
        if index is None or not 0 <= index < data.num_classes:
            return None
        order.append(index)
    return order if len(set(order)) == len(order) else None


def _provenance(layout: str, release: Release, preset: MethodPreset, data: DatasetPreset, model: str,
                lr: float, zca: bool, eps: float, pixels: bool, ipc: float | None, space: str) -> dict[str, Any]:
    hyperparameters: dict[str, Any] = {"model": model, "training_lr": lr,
                                       "learned_lr": preset.learned_lr or release.lr is not None}
    method: dict[str, Any] = {"name": preset.name, "hyperparameters": hyperparameters}
    if preset.paper:
        method.update(title=preset.title, paper=preset.paper, code=preset.code)
    space_of_images = "pixels" if (pixels or release.pixels or release.images.dtype == torch.uint8) else (
        "zca" if zca else "normalized")
    imported: dict[str, Any] = {"layout": layout, "files": source_records(release.files),
                                "images": space_of_images, "label_space": space, **release.details}
    if zca:
        imported["zca"] = {"rule": "kornia ZCAWhitening: unbiased covariance, eps added to its eigenvalues, "
                                   "fitted on [0, 1] pixels", "eps": eps, "fitted_on": f"{data.name}/train"}
    deviations = preset.deviations(data)
    if deviations:
        imported["recipe_deviations"] = deviations
    out: dict[str, Any] = {
        "source": {"dataset": data.name, "split": "train"},
        "method": method,
        "imported": imported,
        "library": {"name": "compressdata", "version": __version__},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if ipc is not None:
        out["budget_ipc"] = ipc
    return out
