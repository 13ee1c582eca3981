"""Exports of a decoded bank: a `datasets.Dataset`, webdataset shards, a PNG image folder.

Images are the bank's decoded pixels (`bank.decode_pixels`, the recorded normalisation undone)
stored as 8-bit PNG; hard labels are class indices, soft labels (probabilities or logits, as the
bank stores them) travel as float32 vectors. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from compressdata.bank.memory_bank import MemoryBank, decode_limit
from compressdata.errors import IndexOutOfRangeError, UsageError
from compressdata.files import atomic_directory, atomic_write, staging_directory

DECODE_CHUNK = 1024
CLASSES_FILE = "classes.json"  # beside webdataset shards, inside a PNG export: the class names in order
IMAGE_FORMATS = ("pil", "array")
MAX_FOLDER_NAME = 100  # characters of a class name kept in a PNG export's folder name


def to_pil_images(pixels: torch.Tensor) -> list[Image.Image]:
    """float [n, C, H, W] pixels in [0, 1] (C = 1 or 3) -> 8-bit PIL images ("L" or "RGB")."""
    if pixels.dim() != 4 or pixels.shape[1] not in (1, 3):
        raise UsageError(
            f"expected pixels [n, 1 or 3, H, W] to make images, got {list(pixels.shape)}"
        )
    data = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if data.shape[1] == 1:
        return [Image.fromarray(x[0], mode="L") for x in data]
    return [Image.fromarray(x.transpose(1, 2, 0), mode="RGB") for x in data]


def png_bytes(image: Image.Image) -> bytes:
    """Encode a PIL image as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """Encode an array in the .npy format (pickles refused)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _select(bank: MemoryBank, index: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    if index is None:
        return torch.arange(len(bank))
    index = torch.as_tensor(index, dtype=torch.int64).flatten()
    if index.numel() and not (0 <= int(index.min()) and int(index.max()) < len(bank)):
        raise IndexOutOfRangeError(f"export index must lie in [0, {len(bank)}), got {index.tolist()[:8]}")
    return index


def _batches(bank: MemoryBank, index: torch.Tensor, desc: str) -> Iterator[torch.Tensor]:
    """`index` in chunks of at most DECODE_CHUNK examples, fewer when their decode would pass the limit."""
    chunk = max(1, min(DECODE_CHUNK, bank.decode_memory(pixels=True).max_batch(decode_limit())))
    chunks = index.split(chunk)
    yield from tqdm(chunks, desc=desc, leave=False, disable=len(chunks) < 2)


def _check_image_bank(bank: MemoryBank, what: str) -> None:
    if bank.image_shape[0] not in (1, 3):
        raise UsageError(
            f"{what} writes PNG images, which need 1 or 3 channels; the bank has "
            f"{bank.image_shape[0]} (use to_hf_dataset(image_format='array') instead)"
        )


def to_hf_dataset(bank: MemoryBank, lazy: bool = False, image_format: str = "pil",
                  index: Sequence[int] | torch.Tensor | None = None) -> Any:
    """The bank as a `datasets.Dataset`: `image`, `label` (`ClassLabel`) and, for soft-label
    banks, `soft_label` (float32 sequence of length `num_classes`, as the bank stores them).

    image_format "pil" gives 8-bit images of the decoded pixels (`Image` feature); "array" gives
    the exact float32 decoded examples in the bank's normalised space (`Array3D` [C, H, W]).
    lazy=True stores only `index` and the labels (that is what `.features` then describes) and
    decodes the images of the rows accessed through `with_transform`. `index` restricts the rows to
    those examples, in that order.
    """
    import datasets

    if image_format not in IMAGE_FORMATS:
        raise UsageError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if image_format == "pil":
        _check_image_bank(bank, "to_hf_dataset(image_format='pil')")
    image_feature = (
        datasets.Image()
        if image_format == "pil"
        else datasets.Array3D(shape=bank.image_shape, dtype="float32")
    )
    soft = bank.label_space != "index"
    rows = _select(bank, index)
    columns: dict[str, Any] = {"label": bank.hard_labels()[rows].tolist()}
    features: dict[str, Any] = {"label": datasets.ClassLabel(names=list(bank.classes))}
    if soft:
        columns["soft_label"] = bank.labels[rows].float().tolist()
        features["soft_label"] = datasets.Sequence(
            datasets.Value("float32"), length=bank.num_classes
        )

    def decode(index: torch.Tensor) -> list[Any]:
        if image_format == "pil":
            return to_pil_images(bank.decode_pixels(index))
        return list(bank.decode(index).numpy())

    if lazy:
        columns = {"index": rows.tolist(), **columns}
        stored = datasets.Features({"index": datasets.Value("int64"), **features})
        dataset = datasets.Dataset.from_dict(columns, features=stored)

        def transform(batch: dict[str, list]) -> dict[str, list]:
            out = {"image": decode(torch.as_tensor(batch["index"], dtype=torch.int64))}
            out.update({name: batch[name] for name in features})
            return out

        return dataset.with_transform(transform)
    images: list[Any] = []
    for chunk in _batches(bank, rows, "decoding bank"):
        images += decode(chunk)
    columns = {"image": images, **columns}
    return datasets.Dataset.from_dict(
        columns, features=datasets.Features({"image": image_feature, **features})
    )


def iter_samples(
    bank: MemoryBank, index: Sequence[int] | torch.Tensor | None = None
) -> Iterator[dict[str, Any]]:
    """webdataset samples of the decoded bank: `__key__`, `png`, `cls` (the class index), `json`
    ({"label": index, "class": name}) and `npy` (soft labels, as stored), every member already encoded
    as bytes."""
    _check_image_bank(bank, "the webdataset export")
    selected = _select(bank, index)
    width = max(6, len(str(max(len(bank) - 1, 0))))
    hard = bank.hard_labels()
    for chunk in _batches(bank, selected, "encoding samples"):
        for i, image in zip(chunk.tolist(), to_pil_images(bank.decode_pixels(chunk)), strict=True):
            label = int(hard[i])
            sample = {
                "__key__": f"{i:0{width}d}",
                "png": png_bytes(image),
                "cls": str(label).encode("ascii"),
                "json": json.dumps({"label": label, "class": bank.classes[label]}, ensure_ascii=True).encode("ascii"),
            }
            if bank.label_space != "index":
                sample["npy"] = npy_bytes(bank.labels[i].float().numpy())
            yield sample


def export_webdataset(
    bank: MemoryBank,
    pattern: str | os.PathLike,
    maxcount: int = 10_000,
    index: Sequence[int] | torch.Tensor | None = None,
) -> list[str]:
    """Write webdataset tar shards (`pattern` like "out/shard-%06d.tar", at most `maxcount`
    samples each): `KEY.png` + `KEY.cls` + `KEY.json` (label and class name) (+ `KEY.npy` soft
    labels), and `classes.json` (the class names in order) beside them. Returns the shard paths.

    `index` restricts the export to those examples. Shards are written to a temporary folder
    beside the target and moved into place once complete.
    """
    import webdataset as wds

    pattern = str(pattern)
    if maxcount < 1:
        raise UsageError(f"maxcount must be >= 1, got {maxcount}")
    try:
        first = pattern % 0
    except TypeError:
        raise UsageError(
            f"pattern must hold one integer field such as %06d, got {pattern!r}"
        ) from None
    target_dir = Path(first).parent
    staging = staging_directory(target_dir / "webdataset-shards")  # no % in the folder: the pattern is formatted
    try:
        staged = str(staging / Path(pattern).name)
        with wds.ShardWriter(staged, maxcount=maxcount, verbose=0) as sink:
            for sample in iter_samples(bank, index):
                sink.write(sample)
        written = []
        for shard in sorted(staging.iterdir()):
            final = target_dir / shard.name
            os.replace(shard, final)
            written.append(str(final))
        names = class_names_json(bank.classes)
        atomic_write(target_dir / CLASSES_FILE, lambda tmp: Path(tmp).write_text(names, encoding="ascii"))
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def class_names_json(classes: Sequence[str]) -> str:
    """The class names in order as the JSON of an export's `classes.json`."""
    return json.dumps(list(classes), indent=1, ensure_ascii=True)


def class_folder_names(classes: Sequence[str]) -> list[str]:
    """Folder names whose sorted order is the class order: "03-Dress" (unsafe characters -> _; a long
    name is cut to MAX_FOLDER_NAME characters and given a short hash, so names stay distinct and valid)."""
    width = len(str(max(len(classes) - 1, 0)))
    names = []
    for i, name in enumerate(classes):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
        if len(safe) > MAX_FOLDER_NAME:
            digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            safe = f"{safe[:MAX_FOLDER_NAME]}-{digest}"
        names.append(f"{i:0{width}d}-{safe}")
    return names


def export_png(
    bank: MemoryBank, out_dir: str | os.PathLike, index: Sequence[int] | torch.Tensor | None = None
) -> list[str]:
    """Write an ImageFolder tree: OUT/<NN-class>/<index>.png, plus OUT/classes.json (the exact
    class names in order). Folder names sort in class order. Returns the image paths.

    The tree is written in a hidden folder beside OUT and renamed to OUT when complete, so a failure
    (a full disk) leaves no partial export; OUT must not exist or be an empty folder."""
    _check_image_bank(bank, "export_png")
    out = Path(out_dir)
    folders = class_folder_names(bank.classes)
    hard = bank.hard_labels()
    selected = _select(bank, index)
    width = max(6, len(str(max(len(bank) - 1, 0))))
    relative = []
    with atomic_directory(out) as staging:
        for chunk in _batches(bank, selected, "writing PNGs"):
            for i, image in zip(chunk.tolist(), to_pil_images(bank.decode_pixels(chunk)), strict=True):
                path = Path(folders[int(hard[i])]) / f"{i:0{width}d}.png"
                (staging / path.parent).mkdir(exist_ok=True)
                (staging / path).write_bytes(png_bytes(image))
                relative.append(path)
        (staging / CLASSES_FILE).write_text(class_names_json(bank.classes), encoding="ascii")
    return [str(out / path) for path in relative]


def save_viewer_parquet(bank: MemoryBank, path: str | os.PathLike,
                        index: Sequence[int] | torch.Tensor | None = None) -> int:
    """`to_hf_dataset(bank, index=index)` as one parquet file (the features, class names included, in its
    schema, so `datasets.load_dataset` and the Hub's viewer read `image` and a named `label`); returns the
    number of rows. Written atomically."""
    import datasets

    dataset = to_hf_dataset(bank, index=index)
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # one small file: no bar
    try:
        atomic_write(path, lambda tmp: dataset.to_parquet(str(tmp)))
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    return len(dataset)


def save_hf_dataset(bank: MemoryBank, out_dir: str | os.PathLike) -> Any:
    """`to_hf_dataset(bank)` saved with `datasets`' `save_to_disk` into `out_dir`, written in a
    hidden folder beside it and renamed when complete (`out_dir` must not exist or be empty)."""
    dataset = to_hf_dataset(bank)
    with atomic_directory(out_dir) as staging:
        dataset.save_to_disk(str(staging))
    return dataset
