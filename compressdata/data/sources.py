"""Real labelled image data as tensors: `RealData` and `load_source` (presets and source kinds).

Every source gives pixels in [0, 1] (kept as uint8 when the source is 8-bit), int64 labels, class
names and the `Normalization` that maps pixels to the space a bank is distilled in.

Source names: the presets "fashion-mnist", "mnist", "cifar10", "cifar100", "svhn" (standard
mean/std and class names), or "idx:FOLDER", "torchvision:CLASS", "hf:ID_OR_PATH", "folder:PATH",
"wds:SHARDS" (a path ending in ".tar", a glob or a brace pattern also means webdataset shards).
Nothing is downloaded unless `download=True`.
"""

from __future__ import annotations

import glob
import inspect
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from compressdata.bank.metadata import Normalization
from compressdata.data.idx import read_idx
from compressdata.errors import MissingDependencyError, MissingFileError, SourceError

PREFIXES = ("idx:", "torchvision:", "hf:", "folder:", "wds:")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                    ".webp")
DEFAULT_DOWNLOAD_ROOT = Path("~/.cache/compressdata/data")
_GRAY_MODES = ("1", "L", "I", "I;16", "F")


@dataclass(frozen=True)
class Preset:
    """A named dataset: torchvision class, standard statistics, class names, local IDX folder."""

    torchvision_class: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] | None  # None: the source's own names
    idx_folder: str | None = None  # local IDX folder used when no root is given


_DIGITS = tuple(str(d) for d in range(10))
PRESETS: dict[str, Preset] = {
    "fashion-mnist": Preset(
        "FashionMNIST", (0.2860,), (0.3530,),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"),
        "/usr/share/datasets/fashion-mnist"),
    "mnist": Preset("MNIST", (0.1307,), (0.3081,), _DIGITS),
    "cifar10": Preset(
        "CIFAR10", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
         "truck")),
    "cifar100": Preset("CIFAR100", (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), None),
    "svhn": Preset("SVHN", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), _DIGITS),
}


@dataclass
class RealData:
    """Real images and labels of one split.

    pixels: uint8 [N, C, H, W] (0-255) or float32 in [0, 1]; labels: int64 [N] in
    [0, len(classes)); normalization: pixels -> the model's input space.
    """

    pixels: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str
    normalization: Normalization
    _images: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _by_class: list[torch.Tensor] | None = field(default=None, init=False, repr=False,
                                                 compare=False)

    def __post_init__(self) -> None:
        p = self.pixels
        if not isinstance(p, torch.Tensor) or p.ndim != 4:
            raise SourceError(f"{self.name}: pixels must be a tensor [N, C, H, W]; "
                             f"got {getattr(p, 'shape', type(p).__name__)}")
        if p.dtype != torch.uint8:
            if not p.is_floating_point():
                raise SourceError(f"{self.name}: pixels must be uint8 or float; got {p.dtype}")
            self.pixels = p = p.to(torch.float32)
            if p.numel() and (p.min() < 0 or p.max() > 1):
                raise SourceError(f"{self.name}: float pixels must lie in [0, 1]; got "
                                 f"[{float(p.min()):.4g}, {float(p.max()):.4g}]")
        labels = self.labels
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point():
            raise SourceError(f"{self.name}: labels must be an integer tensor [N]; got "
                             f"{getattr(labels, 'dtype', type(labels).__name__)} "
                             f"{tuple(getattr(labels, 'shape', ()))}")
        self.labels = labels = labels.to(torch.int64)
        if labels.shape[0] != p.shape[0]:
            raise SourceError(f"{self.name}: {p.shape[0]} images but {labels.shape[0]} labels")
        self.classes = [str(c) for c in self.classes]
        if not self.classes:
            raise SourceError(f"{self.name}: classes must name at least one class")
        if labels.numel() and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise SourceError(f"{self.name}: labels must lie in [0, {len(self.classes)}); got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        _check_normalization(self.normalization, self.image_shape, self.name)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        c, h, w = self.pixels.shape[1:]
        return int(c), int(h), int(w)

    @property
    def float_pixels(self) -> torch.Tensor:
        """Pixels as float32 in [0, 1] (a new tensor for uint8 storage)."""
        if self.pixels.dtype == torch.uint8:
            return self.pixels.to(torch.float32) / 255.0
        return self.pixels

    @property
    def images(self) -> torch.Tensor:
        """All images in the normalised space, float32 [N, C, H, W] (computed once, cached)."""
        if self._images is None:
            self._images = self.normalization.apply(self.float_pixels).contiguous()
        return self._images

    def class_indices(self, c: int) -> torch.Tensor:
        """Indices (int64) of the examples of class `c`."""
        if not 0 <= int(c) < self.num_classes:
            raise SourceError(f"{self.name}: class {c} out of range [0, {self.num_classes})")
        if self._by_class is None:
            order = torch.argsort(self.labels, stable=True)
            counts = torch.bincount(self.labels, minlength=self.num_classes).tolist()
            self._by_class = list(torch.split(order, counts))
        return self._by_class[int(c)]

    def sample_class(self, c: int, n: int, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
        """`n` distinct random normalised images of class `c`, float32 [n, C, H, W]."""
        idx = self.class_indices(c)
        if not 0 < n <= idx.numel():
            raise SourceError(f"{self.name}: asked for {n} images of class {c} "
                             f"({self.classes[int(c)]!r}); it has {idx.numel()}")
        pick = idx[torch.randperm(idx.numel(), generator=generator)[:n]]
        return self.images[pick]

    def subset(self, index: torch.Tensor | Sequence[int] | slice) -> RealData:
        """The examples at `index` (same classes, name, split and normalisation)."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index)
            index = index if index.dtype == torch.bool else index.to(torch.int64)
        return RealData(self.pixels[index], self.labels[index], list(self.classes), self.name,
                        self.split, self.normalization)

    def balanced_subset(self, per_class: int, generator: torch.Generator | None = None
                        ) -> RealData:
        """`per_class` random examples of every class, grouped by class (class 0 first)."""
        picks = []
        for c in range(self.num_classes):
            idx = self.class_indices(c)
            if idx.numel() < per_class:
                raise SourceError(f"{self.name}: class {c} ({self.classes[c]!r}) has {idx.numel()} "
                                 f"examples; asked for {per_class}")
            picks.append(idx[torch.randperm(idx.numel(), generator=generator)[:per_class]])
        return self.subset(torch.cat(picks))

    def with_normalization(self, normalization: Normalization) -> RealData:
        """The same pixels seen through another normalisation (e.g. a bank's)."""
        return RealData(self.pixels, self.labels, list(self.classes), self.name, self.split,
                        normalization)


def _check_normalization(norm: Normalization, shape: tuple[int, int, int], name: str) -> None:
    c, h, w = shape
    if not isinstance(norm, Normalization):
        raise SourceError(f"{name}: normalization must be a Normalization; got {type(norm).__name__}")
    if len(norm.mean) != c or len(norm.std) != c:
        raise SourceError(f"{name}: normalization has {len(norm.mean)} means and {len(norm.std)} "
                         f"stds; the images have {c} channels")
    if any(not s > 0 for s in norm.std):
        raise SourceError(f"{name}: normalization std must be > 0; got {norm.std}")
    if norm.zca_whiten is not None:
        d = c * h * w
        if tuple(norm.zca_whiten.shape) != (d, d) or norm.zca_mean is None or \
                tuple(norm.zca_mean.shape) != (d,):
            raise SourceError(f"{name}: ZCA tensors must be zca_mean [{d}] and zca_whiten [{d}, {d}]"
                             f"; got {_shape(norm.zca_mean)} and {_shape(norm.zca_whiten)}")


def _shape(t: torch.Tensor | None) -> Any:
    return None if t is None else list(t.shape)


def channel_stats(pixels: torch.Tensor, chunk: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixels in [0, 1] (uint8 0-255 or float) [N, C, H, W]."""
    scale = 255.0 if pixels.dtype == torch.uint8 else 1.0
    total = torch.zeros(pixels.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, pixels.shape[0], chunk):
        block = pixels[start:start + chunk].to(torch.float64) / scale
        total += block.sum(dim=(0, 2, 3))
        squares += (block * block).sum(dim=(0, 2, 3))
    count = pixels.shape[0] * pixels.shape[2] * pixels.shape[3]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.tolist(), std.tolist()


def _real_data(pixels: torch.Tensor, labels: torch.Tensor, classes: Sequence[str] | None,
               name: str, split: str, preset: Preset | None = None) -> RealData:
    """RealData with the preset's statistics, or the split's own per-channel mean/std."""
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1 if labels.numel() else 1)]
    if preset is not None:
        norm = Normalization(mean=list(preset.mean), std=list(preset.std))
    else:
        mean, std = channel_stats(pixels)
        norm = Normalization(mean=mean, std=std)
    return RealData(pixels, labels, list(classes), name, split, norm)


def load_source(
    name_or_path: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = False,
    normalization: Normalization | None = None,
) -> RealData:
    """Load split `split` of a real source as `RealData` (see the module docstring for names).

    normalization=None uses the preset's standard mean/std, or for other sources the per-channel
    mean/std of the loaded split. `root`: for presets, a folder holding the MNIST-layout IDX files
    (else the torchvision root); for torchvision classes, the root they read (or, with
    download=True, download) into; default ~/.cache/compressdata/data.
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise SourceError(f"source must be a non-empty string; got {name_or_path!r}")
    key = name_or_path.strip()
    if key.lower() in PRESETS:
        data = _load_preset(key.lower(), split, root, download)
    elif key.startswith("idx:"):
        data = load_idx_folder(key[4:], split, name=key)
    elif key.startswith("torchvision:"):
        data = _load_torchvision(key[len("torchvision:"):], split, root, download, name=key)
    elif key.startswith("hf:"):
        data = _load_hf(key[3:], split, download)
    elif key.startswith("folder:"):
        data = load_image_folder(key[len("folder:"):], split, name=key)
    elif key.startswith("wds:") or ".tar" in key:
        data = load_webdataset(key[4:] if key.startswith("wds:") else key, split,
                               download=download, name=key)
    else:
        raise SourceError(f"unknown source {name_or_path!r}; expected a preset "
                         f"({', '.join(PRESETS)}) or a prefixed source ({', '.join(PREFIXES)}) "
                         f"or a webdataset .tar pattern")
    return data if normalization is None else data.with_normalization(normalization)


def _check_train_test(split: str, source: str) -> None:
    if split not in ("train", "test"):
        raise SourceError(f"{source}: split must be 'train' or 'test'; got {split!r}")


def _load_preset(name: str, split: str, root: str | os.PathLike | None, download: bool
                 ) -> RealData:
    preset = PRESETS[name]
    _check_train_test(split, name)
    folder = Path(root) if root is not None else (
        Path(preset.idx_folder) if preset.idx_folder else None)
    if folder is not None and find_idx_files(folder, split):
        return load_idx_folder(folder, split, name=name, classes=preset.classes, preset=preset)
    return _load_torchvision(preset.torchvision_class, split, root, download, name=name,
                             classes=preset.classes, preset=preset)


def find_idx_files(folder: str | os.PathLike, split: str) -> tuple[Path, Path] | None:
    """(images, labels) IDX files of `split` in an MNIST-layout folder, or None."""
    prefixes = {"train": ("train",), "test": ("t10k", "test")}.get(split, (split,))
    folder = Path(folder)

    def first(prefix: str, what: str, dims: str) -> Path | None:
        names = (f"{prefix}-{what}{sep}{dims}-ubyte{gz}" for sep in ("-", ".") for gz in (".gz", ""))
        return next((folder / n for n in names if (folder / n).is_file()), None)

    for prefix in prefixes:
        images, labels = first(prefix, "images", "idx3"), first(prefix, "labels", "idx1")
        if images is not None and labels is not None:
            return images, labels
    return None


def load_idx_folder(folder: str | os.PathLike, split: str = "train", name: str | None = None,
                    classes: Sequence[str] | None = None, preset: Preset | None = None
                    ) -> RealData:
    """An MNIST-layout folder: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]."""
    name = name or f"idx:{folder}"
    _check_train_test(split, name)
    found = find_idx_files(folder, split)
    if found is None:
        raise MissingFileError(f"{name}: no {split} IDX files in {folder} (expected e.g. "
                                f"{'train' if split == 'train' else 't10k'}-images-idx3-ubyte.gz "
                                f"and ...-labels-idx1-ubyte.gz)")
    images, labels = read_idx(found[0]), read_idx(found[1])
    if images.ndim != 3 or images.dtype != torch.uint8:
        raise SourceError(f"{found[0]}: expected uint8 images [N, H, W]; got {images.dtype} "
                         f"{tuple(images.shape)}")
    if labels.ndim != 1 or labels.is_floating_point():
        raise SourceError(f"{found[1]}: expected integer labels [N]; got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise SourceError(f"{name}: {images.shape[0]} images in {found[0].name} but "
                         f"{labels.shape[0]} labels in {found[1].name}")
    return _real_data(images.unsqueeze(1), labels.to(torch.int64), classes, name, split, preset)


def _load_torchvision(class_name: str, split: str, root: str | os.PathLike | None,
                      download: bool, name: str, classes: Sequence[str] | None = None,
                      preset: Preset | None = None) -> RealData:
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise MissingDependencyError(f"{name}: torchvision is needed for this source; "
                          f"pip install 'compressdata[vision]'") from None
    cls = getattr(tvd, class_name, None)
    if not isinstance(cls, type):
        raise SourceError(f"{name}: torchvision.datasets has no dataset class {class_name!r}")
    root = Path(root if root is not None else DEFAULT_DOWNLOAD_ROOT).expanduser()
    params = inspect.signature(cls).parameters
    if "train" in params:
        _check_train_test(split, name)
        kwargs: dict[str, Any] = {"train": split == "train"}
    elif "split" in params:
        kwargs = {"split": split}
    else:
        kwargs = {}
    try:
        ds = cls(str(root), download=download, **kwargs)
    except RuntimeError as exc:
        hint = "" if download else "; pass download=True to fetch it"
        raise MissingFileError(f"{name}: {class_name} not found under {root} ({exc}){hint}") \
            from None
    pixels, labels = _torchvision_arrays(ds, name)
    classes = classes if classes is not None else getattr(ds, "classes", None)
    return _real_data(pixels, labels, classes, name, split, preset)


def _torchvision_arrays(ds: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = getattr(ds, "data", None)
    targets = next((getattr(ds, a) for a in ("targets", "labels") if hasattr(ds, a)), None)
    if data is None or targets is None:
        items = [ds[i] for i in tqdm(range(len(ds)), desc=f"reading {name}", leave=False)]
        return _stack_images([img for img, _ in items], name), \
            torch.as_tensor([int(t) for _, t in items], dtype=torch.int64)
    pixels = _array_to_nchw(np.asarray(data), name, batched=True)
    return pixels, torch.as_tensor(np.asarray(targets), dtype=torch.int64)


def _array_to_nchw(array: np.ndarray, name: str, batched: bool) -> torch.Tensor:
    """[N,] H, W[, C] or [N,] C, H, W arrays (0-255 integers, or floats in [0, 1]) -> a [N,] C,
    H, W tensor (uint8 or float32)."""
    a = array if batched else array[None]
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    elif not (a.ndim == 4 and a.shape[1] in (1, 3)):
        raise SourceError(f"{name}: cannot read images of shape {array.shape}; expected [H, W], "
                         f"[H, W, C] or [C, H, W] per image with C in (1, 3)")
    if a.dtype.kind in "iu" and a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            raise SourceError(f"{name}: integer images must lie in [0, 255]; got "
                             f"[{a.min()}, {a.max()}]")
        a = a.astype(np.uint8)
    t = torch.from_numpy(np.ascontiguousarray(a))
    if t.dtype != torch.uint8:
        if not t.is_floating_point():
            raise SourceError(f"{name}: images must be integers or floats; got {t.dtype}")
        t = t.to(torch.float32)
    return t if batched else t[0]


def _stack_images(images: Iterable[Any], name: str) -> torch.Tensor:
    """PIL images (converted to the first one's gray/RGB mode) -> uint8 [N, C, H, W]."""
    arrays: list[np.ndarray] = []
    mode = None
    for i, img in enumerate(images):
        if mode is None:
            mode = "L" if img.mode in _GRAY_MODES else "RGB"
        array = np.asarray(img if img.mode == mode else img.convert(mode), dtype=np.uint8)
        if arrays and array.shape != arrays[0].shape:
            raise SourceError(f"{name}: image {i} has shape {array.shape}; image 0 has "
                             f"{arrays[0].shape} (all images must have the same size)")
        arrays.append(array)
    if not arrays:
        raise SourceError(f"{name}: no images found")
    return _array_to_nchw(np.stack(arrays), name, batched=True)


def _load_hf(spec: str, split: str, download: bool) -> RealData:
    import datasets

    name = f"hf:{spec}"
    path = Path(spec).expanduser()
    if path.is_dir():
        saved = any((path / f).is_file() for f in ("dataset_dict.json", "state.json"))
        ds = datasets.load_from_disk(str(path)) if saved else \
            datasets.load_dataset(str(path), split=split)
    elif download:
        ds = datasets.load_dataset(spec, split=split)
    else:
        raise MissingFileError(f"{name}: not a local dataset directory; pass download=True to "
                                f"load it from the Hugging Face Hub (HF_HUB_OFFLINE=1 then serves "
                                f"only the local cache)")
    return source_from_hf_dataset(ds, name=name, split=split)


def source_from_hf_dataset(
    ds: Any,
    name: str = "hf",
    split: str = "train",
    normalization: Normalization | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> RealData:
    """RealData from a `datasets.Dataset` (or `DatasetDict`, whose `split` is taken).

    The image column is the first `Image` / `Array2D` / `Array3D` feature (else one named image,
    img, pixels or pixel_values); the label column the first `ClassLabel` (whose names become the
    classes), else one named label, labels, fine_label, target, cls or class.
    """
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise SourceError(f"{name}: no split {split!r}; available: {sorted(ds)}")
        ds = ds[split]
    if not isinstance(ds, datasets.Dataset):
        raise SourceError(f"{name}: expected a datasets.Dataset; got {type(ds).__name__}")
    features = ds.features
    image_column = image_column or _find_column(
        features, (datasets.Image, datasets.Array2D, datasets.Array3D),
        ("image", "img", "pixels", "pixel_values"))
    label_column = label_column or _find_column(
        features, (datasets.ClassLabel,), ("label", "labels", "fine_label", "target", "cls",
                                           "class"))
    for role, col in (("image", image_column), ("label", label_column)):
        if col is None or col not in features:
            raise SourceError(f"{name}: no {role} column found (columns: {list(features)}); "
                             f"pass {role}_column=")
    labels = torch.as_tensor(ds[label_column], dtype=torch.int64)
    label_feature = features[label_column]
    classes = label_feature.names if isinstance(label_feature, datasets.ClassLabel) else None
    column = ds.select_columns([image_column])
    if isinstance(features[image_column], datasets.Image):
        rows = (img for batch in column.iter(batch_size=1024) for img in batch[image_column])
        pixels = _stack_images(tqdm(rows, total=len(ds), desc=f"decoding {name}", leave=False),
                               name)
    else:
        pixels = _array_to_nchw(np.asarray(column.with_format("numpy")[image_column]), name,
                                batched=True)
    data = _real_data(pixels, labels, classes, name, split)
    return data if normalization is None else data.with_normalization(normalization)


def _find_column(features: Any, types: tuple[type, ...], names: tuple[str, ...]) -> str | None:
    typed = [k for k, f in features.items() if isinstance(f, types)]
    if typed:
        return typed[0]
    return next((n for n in names if n in features), None)


def load_image_folder(path: str | os.PathLike, split: str = "train", name: str | None = None
                      ) -> RealData:
    """ImageFolder layout: PATH/<class>/<images> (or PATH/<split>/<class>/... when present).

    Classes are the sub-folder names in sorted order; images are read in sorted path order.
    """
    name = name or f"folder:{path}"
    base = Path(path).expanduser()
    if (base / split).is_dir():
        base = base / split
    if not base.is_dir():
        raise MissingFileError(f"{name}: folder {base} does not exist")
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise SourceError(f"{name}: {base} has no class sub-folders")
    files: list[Path] = []
    labels: list[int] = []
    for c, d in enumerate(class_dirs):
        found = sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise SourceError(f"{name}: class folder {d} holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
        files += found
        labels += [c] * len(found)
    from PIL import Image

    def read(f: Path) -> Any:
        with Image.open(f) as img:
            img.load()
            return img

    pixels = _stack_images((read(f) for f in tqdm(files, desc=f"reading {name}", leave=False)),
                           name)
    return _real_data(pixels, torch.tensor(labels, dtype=torch.int64),
                      [d.name for d in class_dirs], name, split)


def expand_shards(pattern: str) -> list[str]:
    """Shard paths from a brace pattern (a-{000..009}.tar), a glob (a-*.tar) or one path."""
    import braceexpand

    paths: list[str] = []
    for part in braceexpand.braceexpand(os.path.expanduser(pattern)):
        paths += sorted(glob.glob(part)) if glob.has_magic(part) else [part]
    return paths


def load_webdataset(pattern: str, split: str = "train", download: bool = False,
                    name: str | None = None) -> RealData:
    """webdataset shards: one sample per key with an image (.png/.jpg/... or .npy) and a .cls.

    Samples are read in shard order, then tar order; classes are named "0".."K-1".
    """
    import webdataset as wds
    from PIL import Image

    name = name or f"wds:{pattern}"
    remote = "://" in pattern or pattern.startswith("pipe:")
    if remote and not download:
        raise MissingFileError(f"{name}: remote shards are only read with download=True")
    urls = [pattern] if remote else expand_shards(pattern)
    missing = [u for u in urls if not remote and not os.path.isfile(u)]
    if not urls or missing:
        raise MissingFileError(f"{name}: no shard files match {pattern!r}"
                                + (f" (missing: {missing[:3]})" if missing else ""))
    image_exts = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    images: list[Any] = []
    labels: list[int] = []
    arrays: list[torch.Tensor] = []
    for sample in tqdm(wds.WebDataset(urls, shardshuffle=False), desc=f"reading {name}",
                       leave=False):
        key = f"{sample.get('__url__')}:{sample['__key__']}"
        if "cls" not in sample:
            raise SourceError(f"{name}: sample {key} has no .cls label")
        ext = next((e for e in image_exts if e in sample), None)
        if ext is not None:
            images.append(Image.open(io.BytesIO(sample[ext])))
        elif "npy" in sample:
            try:
                array = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
            except ValueError as e:  # object arrays (pickles) are refused, never unpickled
                raise SourceError(f"{name}: sample {key}: .npy member is not a plain numeric array ({e})") from None
            arrays.append(_array_to_nchw(array, name, batched=False))
        else:
            raise SourceError(f"{name}: sample {key} has no image member "
                             f"(.{', .'.join(image_exts)} or .npy); members: {sorted(sample)}")
        labels.append(int(sample["cls"].decode("ascii").strip()))
    if images and arrays:
        raise SourceError(f"{name}: shards mix encoded images and .npy arrays")
    pixels = _stack_images(images, name) if images else _stack_arrays(arrays, name)
    return _real_data(pixels, torch.tensor(labels, dtype=torch.int64), None, name, split)


def _stack_arrays(arrays: list[torch.Tensor], name: str) -> torch.Tensor:
    if not arrays:
        raise SourceError(f"{name}: no samples found")
    shapes = {tuple(a.shape) for a in arrays}
    dtypes = {a.dtype for a in arrays}
    if len(shapes) > 1 or len(dtypes) > 1:
        raise SourceError(f"{name}: .npy images differ in shape or dtype: {sorted(shapes)[:3]}, "
                         f"{sorted(map(str, dtypes))}")
    return torch.stack(arrays)
