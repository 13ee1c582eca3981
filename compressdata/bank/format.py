"""Format v1 constants and the rules a bank must satisfy (see spec/memory-bank.md).

`check_bank(tensors, metadata)` is the single validator: the reader runs it on every file, `MemoryBank`
on construction and on save, so an invalid bank can be neither loaded nor written. It hashes the
tensors unless given their checksum, and with `values=False` (tensors without data, from a header)
it skips the rules on the tensors' values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from compressdata.bank.checksum import CHECKSUM_ALGORITHM, tensor_checksum
from compressdata.container import strict_json
from compressdata.container.framing import MAX_HEADER_BYTES as MAX_HEADER_BYTES
from compressdata.container.framing import MAX_JSON_DEPTH, canonical_json
from compressdata.errors import BankFormatError
from compressdata.params import PARAMETERIZATIONS
from compressdata.params.base import tensor_bytes
from compressdata.params.memory import UPSAMPLE_MODES
from compressdata.params.quant import MAX_SCALE, float_values, scale_name, zero_point_name

FORMAT_NAME = "compressdata.memory-bank"
FORMAT_VERSION = (1, 2)
TASKS_SINCE = (1, 1)  # `tasks` is opaque in 1.0 files and validated from 1.1 on
BYTES_SINCE = (1, 2)  # `storage` counts bytes in files of 1.2 on (the members are ignored in older files)
METADATA_KEY = "compressdata"

MAX_BASES = 65_536
MAX_EXAMPLES = 100_000_000
MAX_CLASSES = 100_000
MAX_CHANNELS = 64
MAX_SIDE = 8_192
MAX_EXAMPLE_VALUES = 2**24  # C*H*W: one decoded example is at most 64 MiB of float32 (spec 4.7)
# two kind tensors with a scale and a zero point each, labels, zca_mean, zca_whiten: more in a header is
# refused at once
MAX_TENSORS = 9
MAX_TASKS = 10_000

LABEL_SPACES = ("index", "probabilities", "logits")
IMAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int8)  # the kind's tensors (int8: spec 2.6)
OPTIONAL_TENSORS = ("labels", "zca_mean", "zca_whiten")
REQUIRED_KEYS = (
    "format", "format_version", "kind", "image_shape", "classes", "label_space",
    "normalization", "storage", "checksum",
)


def check_metadata_json(meta: Any) -> None:
    """The JSON rules of spec 3.1 for metadata built in memory (a file's are checked as it is read):
    JSON types only, finite numbers, no unpaired surrogate, at most MAX_JSON_DEPTH levels."""
    try:
        text = canonical_json(meta)
        strict_json.check(meta, text, MAX_JSON_DEPTH)
    except (TypeError, ValueError, RecursionError) as e:
        raise BankFormatError(f"metadata is not valid JSON for a bank file (spec 3.1): {e}") from None


def check_version(version: Any) -> None:
    """Accept any 1.x; refuse a newer major version with a message saying what to do."""
    if not isinstance(version, str) or not _is_version(version):
        raise BankFormatError(f"metadata field 'format_version': expected 'MAJOR.MINOR', got {version!r}")
    major = int(version.split(".")[0])
    if major > FORMAT_VERSION[0]:
        raise BankFormatError(
            f"format_version {version} is newer than this reader supports "
            f"({FORMAT_VERSION[0]}.x): upgrade compressdata (pip install -U compressdata)"
        )
    if major < 1:
        raise BankFormatError(f"format_version {version} is not a released version (expected 1.x)")


def version_tuple(version: str) -> tuple[int, int]:
    """(major, minor) of a checked "MAJOR.MINOR" string."""
    major, minor = version.split(".")
    return int(major), int(minor)


def _is_version(v: str) -> bool:
    parts = v.split(".")
    return len(parts) == 2 and all(p.isascii() and p.isdigit() and len(p) < 6 for p in parts)


def check_bank(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], checksum: str | None = None, *,
               values: bool = True) -> str | None:
    """Raise BankFormatError naming the first rule of the spec that (tensors, metadata) break; return
    the tensors' content checksum. `checksum`: that checksum when the caller has it (it is computed
    otherwise). `values=False`: the tensors are shapes and dtypes without data (a header's), and the
    rules on their values (R43, R53, R57, R67, R68) are skipped; None is returned."""
    if not isinstance(meta, Mapping):
        raise BankFormatError(f"metadata: expected a JSON object, got {type(meta).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise BankFormatError(f"metadata: missing required field(s) {missing}")
    if meta["format"] != FORMAT_NAME:
        raise BankFormatError(f"metadata field 'format': expected {FORMAT_NAME!r}, got {meta['format']!r}")
    check_version(meta["format_version"])
    kind = meta["kind"]
    if not isinstance(kind, str) or kind not in PARAMETERIZATIONS:
        raise BankFormatError(f"metadata field 'kind': expected one of {sorted(PARAMETERIZATIONS)}, got {kind!r}")
    c, h, w = _image_shape(meta["image_shape"])
    classes = _classes(meta["classes"])
    _check_tensor_names(kind, tensors, meta)
    n = _check_kind_tensors(kind, tensors, (c, h, w), meta, values)
    _check_labels(tensors.get("labels"), meta["label_space"], n, len(classes), values)
    _check_normalization(meta["normalization"], tensors, c, c * h * w)
    for name, t in tensors.items():
        if values and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise BankFormatError(f"tensor '{name}': contains NaN or Inf")
    _check_storage(meta["storage"], kind, tensors, (c, h, w), len(classes),
                   version_tuple(meta["format_version"]) >= BYTES_SINCE)
    checksum = _check_checksum(meta["checksum"], tensors, checksum, values)
    for key in ("recipe", "provenance"):
        if key in meta and not isinstance(meta[key], Mapping):
            raise BankFormatError(f"metadata field '{key}': expected an object, got {type(meta[key]).__name__}")
    _check_recipe(meta.get("recipe", {}))
    _check_evaluations(meta.get("evaluations", []))
    if "tasks" in meta and version_tuple(meta["format_version"]) >= TASKS_SINCE:
        check_tasks(meta["tasks"], kind, tensors, meta["label_space"], len(classes), values)
    return checksum


def _image_shape(shape: Any) -> tuple[int, int, int]:
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) for v in shape)):
        raise BankFormatError(f"metadata field 'image_shape': expected [C, H, W] integers, got {shape!r}")
    c, h, w = shape
    if not (1 <= c <= MAX_CHANNELS and 1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and c * h * w <= MAX_EXAMPLE_VALUES):
        raise BankFormatError(
            f"metadata field 'image_shape': {shape} outside limits C<={MAX_CHANNELS}, H,W<={MAX_SIDE}, "
            f"C*H*W<={MAX_EXAMPLE_VALUES} (values of one decoded example)"
        )
    return c, h, w


def _classes(classes: Any) -> list[str]:
    if not (isinstance(classes, list) and all(isinstance(v, str) and v for v in classes)):
        raise BankFormatError("metadata field 'classes': expected a list of non-empty strings")
    if not 1 <= len(classes) <= MAX_CLASSES:
        raise BankFormatError(f"metadata field 'classes': expected 1..{MAX_CLASSES} classes, got {len(classes)}")
    if len(set(classes)) != len(classes):
        raise BankFormatError("metadata field 'classes': class names must be unique")
    return classes


def _check_tensor_names(kind: str, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    required = PARAMETERIZATIONS[kind].tensor_names + ("labels",)
    missing = [n for n in required if n not in tensors]
    if missing:
        raise BankFormatError(f"kind '{kind}' requires tensor(s) {missing}; file has {sorted(tensors)}")
    names = PARAMETERIZATIONS[kind].tensor_names
    quantization = {f(n) for n in names for f in (scale_name, zero_point_name)}
    allowed = set(required) | quantization | ({"zca_mean", "zca_whiten"} if _zca(meta) else set())
    extra = sorted(set(tensors) - allowed)
    if extra:
        raise BankFormatError(f"unexpected tensor(s) {extra} for kind '{kind}'; allowed: {sorted(allowed)}")


def _zca(meta: Mapping[str, Any]) -> bool:
    norm = meta.get("normalization")
    return isinstance(norm, Mapping) and norm.get("zca") is not None


def _shape_error(name: str, expected: str, t: torch.Tensor) -> BankFormatError:
    return BankFormatError(f"tensor '{name}': expected shape {expected}, got {list(t.shape)}")


def _check_dtype(name: str, t: torch.Tensor, allowed: tuple[torch.dtype, ...]) -> None:
    if t.dtype not in allowed:
        names = [str(d).removeprefix("torch.") for d in allowed]
        raise BankFormatError(f"tensor '{name}': expected dtype in {names}, got {str(t.dtype).removeprefix('torch.')}")


def _check_kind_tensors(kind: str, t: Mapping[str, torch.Tensor], chw: tuple[int, int, int],
                        meta: Mapping[str, Any], values: bool) -> int:
    c, h, w = chw
    for name in PARAMETERIZATIONS[kind].tensor_names:
        _check_dtype(name, t[name], IMAGE_DTYPES)
    if kind == "memory":
        bases, addresses = t["bases"], t["addresses"]
        if bases.dim() != 4 or bases.shape[1] != c or not (1 <= bases.shape[2] <= h and 1 <= bases.shape[3] <= w):
            raise _shape_error("bases", f"[K, {c}, h<={h}, w<={w}]", bases)
        k = bases.shape[0]
        if not 1 <= k <= MAX_BASES:
            raise BankFormatError(f"tensor 'bases': K={k} outside 1..{MAX_BASES}")
        if addresses.dim() != 2 or addresses.shape[1] != k:
            raise BankFormatError(
                f"tensor 'addresses': expected shape [N, K={k}] (K from 'bases'), got {list(addresses.shape)}"
            )
        if meta.get("upsample") not in UPSAMPLE_MODES:
            raise BankFormatError(
                f"metadata field 'upsample': expected one of {list(UPSAMPLE_MODES)} for kind 'memory', "
                f"got {meta.get('upsample')!r}"
            )
        n = addresses.shape[0]
    elif kind == "pixels":
        pixels = t["pixels"]
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != chw:
            raise _shape_error("pixels", f"[N, {c}, {h}, {w}]", pixels)
        n = pixels.shape[0]
    else:
        u, v = t["lowrank_u"], t["lowrank_v"]
        if u.dim() != 4 or tuple(u.shape[1:3]) != (c, h) or u.shape[3] < 1:
            raise _shape_error("lowrank_u", f"[N, {c}, {h}, r]", u)
        n, r = u.shape[0], u.shape[3]
        if tuple(v.shape) != (n, c, r, w):
            raise _shape_error("lowrank_v", f"[{n}, {c}, {r}, {w}] (N, r from 'lowrank_u')", v)
    if not 1 <= n <= MAX_EXAMPLES:
        raise BankFormatError(f"number of examples N={n} outside 1..{MAX_EXAMPLES}")
    for name in PARAMETERIZATIONS[kind].tensor_names:
        _check_quantization(name, t, values)
    return n


def _check_quantization(name: str, t: Mapping[str, torch.Tensor], values: bool) -> None:
    """R69-R73 (spec 2.6): an I8 tensor comes with a consistent, finite, positive scale and a zero point
    (values=False: the scale's values are not checked)."""
    scale, zero_point = scale_name(name), zero_point_name(name)
    quantized = t[name].dtype == torch.int8
    if not quantized:
        present = [n for n in (scale, zero_point) if n in t]
        if present:
            raise BankFormatError(f"tensor '{present[0]}': only an I8 tensor has a scale and a zero point; "
                                  f"'{name}' is {_dtype_name(t[name])}")
        return
    missing = [n for n in (scale, zero_point) if n not in t]
    if missing:
        raise BankFormatError(f"tensor '{name}': stored as I8, so '{scale}' and '{zero_point}' are required "
                              f"(spec 2.6); missing {missing}")
    rows = int(t[name].shape[0]) if t[name].dim() else 0
    groups = (1, rows)
    s, z = t[scale], t[zero_point]
    if s.dtype != torch.float32 or s.dim() != 1 or s.shape[0] not in groups:
        raise BankFormatError(f"tensor '{scale}': expected float32 [1] (per tensor) or [{rows}] (per row of "
                              f"'{name}'), got {_dtype_name(s)}{list(s.shape)}")
    if z.dtype != torch.int8 or tuple(z.shape) != tuple(s.shape):
        raise BankFormatError(f"tensor '{zero_point}': expected int8{list(s.shape)} (the shape of '{scale}'), "
                              f"got {_dtype_name(z)}{list(z.shape)}")
    bad = ~(torch.isfinite(s) & (s > 0) & (s < MAX_SCALE)) if values else None
    if bad is not None and bool(bad.any()):
        value = float(s[bad][0])
        raise BankFormatError(f"tensor '{scale}': value {value!r} outside (0, 2^120) (a finite, positive scale "
                              "whose 255 steps stay finite in float32)")


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _check_labels(labels: torch.Tensor, space: Any, n: int, n_classes: int, values: bool) -> None:
    if space not in LABEL_SPACES:
        raise BankFormatError(f"metadata field 'label_space': expected one of {list(LABEL_SPACES)}, got {space!r}")
    if space == "index":
        _check_dtype("labels", labels, (torch.int64,))
        if tuple(labels.shape) != (n,):
            raise _shape_error("labels", f"[{n}] (N examples)", labels)
        if values and n and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
            bad = labels[(labels < 0) | (labels >= n_classes)][0]
            raise BankFormatError(f"tensor 'labels': value {int(bad)} outside [0, {n_classes}) (number of classes)")
    else:
        _check_dtype("labels", labels, (torch.float32,))
        if tuple(labels.shape) != (n, n_classes):
            raise _shape_error("labels", f"[{n}, {n_classes}] (N examples x classes) for label_space '{space}'", labels)


def _check_normalization(norm: Any, tensors: Mapping[str, torch.Tensor], c: int, d: int) -> None:
    if not isinstance(norm, Mapping):
        raise BankFormatError("metadata field 'normalization': expected an object with 'mean', 'std', 'zca'")
    for key in ("mean", "std"):
        values = norm.get(key)
        if not (isinstance(values, list) and values and all(_is_number(v) for v in values)):
            raise BankFormatError(f"metadata field 'normalization.{key}': expected a list of numbers, got {values!r}")
    if len(norm["mean"]) != c or len(norm["std"]) != c or any(s <= 0 for s in norm["std"]):
        raise BankFormatError(
            f"metadata field 'normalization': 'mean' and 'std' need one entry per channel ({c}) and std > 0, "
            f"got mean {norm['mean']}, std {norm['std']}"
        )
    zca = norm.get("zca")
    if zca is None:
        return
    if not (isinstance(zca, Mapping) and _is_number(zca.get("regularization"))):
        raise BankFormatError("metadata field 'normalization.zca': expected null or {'regularization': number}")
    for name, shape in (("zca_mean", (d,)), ("zca_whiten", (d, d))):
        if name not in tensors:
            raise BankFormatError(f"normalization declares ZCA but tensor '{name}' is missing")
        _check_dtype(name, tensors[name], (torch.float32,))
        if tuple(tensors[name].shape) != shape:
            raise _shape_error(name, str(list(shape)), tensors[name])


FLOAT_STORAGE_KEYS = ("floats_stored", "label_values", "examples", "ipc_equivalent")  # R55 (every version)
BYTES_STORAGE_KEYS = ("bytes_stored", "tensor_bytes", "ipc_equivalent_uint8", "ipc_equivalent_float32")  # R74 (1.2)
_NUMBER_KEYS = ("ipc_equivalent", "ipc_equivalent_uint8", "ipc_equivalent_float32")


def storage_accounting(kind: str, tensors: Mapping[str, torch.Tensor], chw: tuple[int, int, int],
                       n_classes: int) -> dict[str, Any]:
    """Storage (spec 3.10): the values and bytes that count against the budget, the images-per-class
    equivalents they buy (float32 images by values; 8-bit and float32 images by bytes), and the bytes
    of every tensor in the file."""
    param = PARAMETERIZATIONS[kind]
    floats = param.floats_stored(tensors)
    budget_bytes = param.bytes_stored(tensors)
    c, h, w = chw
    image = c * h * w * n_classes
    return {
        "floats_stored": floats,
        "label_values": int(tensors["labels"].numel()),
        "examples": param.num_examples(tensors),
        "ipc_equivalent": round(floats / image, 6),
        "bytes_stored": budget_bytes,
        "tensor_bytes": {name: tensor_bytes(t) for name, t in tensors.items()},
        "ipc_equivalent_uint8": round(budget_bytes / image, 6),
        "ipc_equivalent_float32": round(budget_bytes / (4 * image), 6),
    }


def _check_storage(storage: Any, kind: str, tensors: Mapping[str, torch.Tensor],
                   chw: tuple[int, int, int], n_classes: int, with_bytes: bool) -> None:
    """R55 (and R74 with_bytes, files of 1.2 on): every member equals its value recomputed from the tensors."""
    expected = storage_accounting(kind, tensors, chw, n_classes)
    if not isinstance(storage, Mapping):
        raise BankFormatError("metadata field 'storage': expected an object")
    for key in FLOAT_STORAGE_KEYS + (BYTES_STORAGE_KEYS if with_bytes else ()):
        value, got = expected[key], storage.get(key)
        if key == "tensor_bytes":
            typed = isinstance(got, Mapping) and all(_is_int(v) for v in got.values())
            what = "an object of JSON integers, one per tensor"
        elif key in _NUMBER_KEYS:
            typed, what = _is_number(got), "a number"
        else:
            typed, what = _is_int(got), "a JSON integer (no fraction or exponent, not a boolean)"
        if not typed:
            missing = " (required in files of version 1.2 or later)" if key not in storage else ""
            raise BankFormatError(f"metadata field 'storage.{key}': expected {what}{missing}, got {_short(got)}")
        if got != value:
            raise BankFormatError(
                f"metadata field 'storage.{key}': expected {_short(value)} (from the tensors), got {_short(got)}"
            )


def _check_checksum(checksum: Any, tensors: Mapping[str, torch.Tensor], actual: str | None, values: bool
                    ) -> str | None:
    if not (isinstance(checksum, Mapping) and checksum.get("algorithm") == CHECKSUM_ALGORITHM):
        raise BankFormatError(
            f"metadata field 'checksum': expected {{'algorithm': '{CHECKSUM_ALGORITHM}', 'value': hex}}"
        )
    if not values:
        return None
    actual = actual if actual is not None else tensor_checksum(tensors)
    if checksum.get("value") != actual:
        raise BankFormatError(
            f"content checksum mismatch: metadata says {checksum.get('value')!r}, tensors hash to {actual!r} "
            "(the file was modified or corrupted)"
        )
    return actual


RECIPE_FIELD_TYPES = {
    "architecture": str, "optimizer": str, "lr_schedule": str, "augmentation": str, "label_loss": str,
    "lr": float, "momentum": float, "weight_decay": float, "label_temperature": float,
    "epochs": int, "batch_size": int, "width": int, "depth": int, "norm": str,
}


def _check_recipe(recipe: Mapping[str, Any]) -> None:
    for key, kind in RECIPE_FIELD_TYPES.items():
        if key not in recipe:
            continue
        value = recipe[key]
        ok = {str: isinstance(value, str), float: _is_number(value), int: _is_int(value)}[kind]
        if not ok:
            raise BankFormatError(
                f"metadata field 'recipe.{key}': expected {kind.__name__}, got {_short(value)}"
            )
    temperature = recipe.get("label_temperature", 1.0)
    if temperature <= 0:
        raise BankFormatError(f"metadata field 'recipe.label_temperature': expected a number > 0 "
                              f"(targets are softmax(labels / T)), got {temperature!r}")


def _check_evaluations(evaluations: Any) -> None:
    if not isinstance(evaluations, list):
        raise BankFormatError(f"metadata field 'evaluations': expected a list, got {type(evaluations).__name__}")
    for i, e in enumerate(evaluations):
        ok = (
            isinstance(e, Mapping)
            and isinstance(e.get("architecture"), str)
            and isinstance(e.get("test"), str)
            and _is_int(e.get("epochs"))
            and isinstance(e.get("accuracies"), list)
            and all(_is_number(a) and 0 <= a <= 1 for a in e["accuracies"])
        )
        if not ok:
            raise BankFormatError(
                f"metadata field 'evaluations[{i}]': expected {{architecture: str, accuracies: [fractions in "
                f"[0, 1]], test: str, epochs: int}}, got {_short(e)}"
            )


def _short(value: Any, limit: int = 120) -> str:
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A JSON number (not a boolean) with a finite binary64 value: an int that rounds to one, or a finite float."""
    if _is_int(v):
        try:
            float(v)
        except OverflowError:
            return False
        return True
    return isinstance(v, float) and math.isfinite(v)


def check_tasks(tasks: Any, kind: str, tensors: Mapping[str, torch.Tensor], label_space: str,
                n_classes: int, values: bool = True) -> None:
    """Rules R62-R68 (spec 3.11): task boundaries of a bank grown task by task (values=False: R62-R66)."""
    memory = kind == "memory"
    shape = "{name: str, classes: [int], rows: [begin, end]" + (", bases: [begin, end]}" if memory else "}")
    if not (isinstance(tasks, list) and 1 <= len(tasks) <= MAX_TASKS):
        got = f"a list of {len(tasks)}" if isinstance(tasks, list) else _short(tasks)
        raise BankFormatError(f"metadata field 'tasks': expected a non-empty list of at most {MAX_TASKS} "
                              f"{shape}, got {got}")
    for i, task in enumerate(tasks):
        ok = (isinstance(task, Mapping) and isinstance(task.get("name"), str) and task["name"]
              and isinstance(task.get("classes"), list) and all(_is_int(c) for c in task["classes"])
              and _is_range(task.get("rows")) and (_is_range(task.get("bases")) if memory else "bases" not in task))
        if not ok:
            extra = "" if memory else f" ('bases' only for kind 'memory', this bank is '{kind}')"
            raise BankFormatError(f"metadata field 'tasks[{i}]': expected {shape}{extra}, got {_short(task)}")
    names = [t["name"] for t in tasks]
    if len(set(names)) != len(names):
        raise BankFormatError(f"metadata field 'tasks': task names must be unique, got {_short(names)}")
    for i, task in enumerate(tasks):
        classes = task["classes"]
        if not classes or len(set(classes)) != len(classes) or not all(0 <= c < n_classes for c in classes):
            raise BankFormatError(f"metadata field 'tasks[{i}].classes': expected distinct class indices in "
                                  f"[0, {n_classes}), at least one, got {_short(classes)}")
    n = PARAMETERIZATIONS[kind].num_examples(tensors)
    _check_tiling(tasks, "rows", n, "N examples", empty_ok=False)
    if memory:
        _check_tiling(tasks, "bases", int(tensors["bases"].shape[0]), "K bases", empty_ok=True)
    if values:
        _check_task_rows(tasks, tensors, label_space, n_classes, memory)


def _check_task_rows(tasks: list, tensors: Mapping[str, torch.Tensor], label_space: str, n_classes: int,
                     memory: bool) -> None:
    """R67 and R68 for all rows at once (the rows ranges are known to tile 0..N in order)."""
    labels = tensors["labels"]
    hard = (labels if label_space == "index" else labels.argmax(dim=1)).cpu()
    lengths = torch.tensor([t["rows"][1] - t["rows"][0] for t in tasks], dtype=torch.int64)
    task_of_row = torch.repeat_interleave(torch.arange(len(tasks)), lengths)
    allowed = torch.tensor([i * n_classes + c for i, t in enumerate(tasks) for c in t["classes"]], dtype=torch.int64)
    outside = ~torch.isin(task_of_row * n_classes + hard, allowed)
    if bool(outside.any()):
        row = int(torch.nonzero(outside)[0])
        i = int(task_of_row[row])
        raise BankFormatError(f"metadata field 'tasks[{i}]': example {row} has label {int(hard[row])}, "
                              f"not one of the task's classes {_short(tasks[i]['classes'])}")
    if not memory:
        return
    addresses = float_values(tensors, ("addresses",))["addresses"].cpu()  # I8: q = zero point decodes to 0
    bases_end = torch.tensor([t["bases"][1] for t in tasks], dtype=torch.int64)[task_of_row]
    later = torch.arange(addresses.shape[1]).unsqueeze(0) >= bases_end.unsqueeze(1)
    bad_rows = ((addresses != 0) & later).any(dim=1)
    if bool(bad_rows.any()):
        row = int(torch.nonzero(bad_rows)[0])
        i = int(task_of_row[row])
        begin, end = tasks[i]["rows"]
        raise BankFormatError(
            f"metadata field 'tasks[{i}]': its address rows {begin}..{end - 1} use bases at or after "
            f"{tasks[i]['bases'][1]}, added by a later task (they must be 0 there)")


def _is_range(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value)


def _check_tiling(tasks: list, key: str, total: int, what: str, empty_ok: bool) -> None:
    position = 0
    for i, task in enumerate(tasks):
        begin, end = task[key]
        if begin != position or end < begin or (end == begin and not empty_ok):
            raise BankFormatError(
                f"metadata field 'tasks[{i}].{key}': expected [{position}, end] with end "
                f"{'>=' if empty_ok else '>'} {position} (tasks' {key} ranges tile 0..{what} in order), "
                f"got {task[key]}")
        position = end
    if position != total:
        raise BankFormatError(f"metadata field 'tasks': the {key} ranges end at {position}, expected {total} ({what})")
