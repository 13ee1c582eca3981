"""Regenerate the memory-bank test vectors in spec/vectors/ (spec/memory-bank.md, version 1.2).

Deterministic: fixed seeds, no clocks, so running it twice writes identical bytes. Independent of
the library on purpose: files, checksums, storage and expected decoded values are produced here
with numpy, struct, json and hashlib only, following the spec's text, so the test
(tests/test_spec_vectors.py) checks `compressdata` against the spec rather than against itself.

    python tools/make_spec_vectors.py [--out spec/vectors]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "compressdata.memory-bank"
METADATA_KEY = "compressdata"
CHECKSUM_ALGORITHM = "sha256-tensors-v1"
MAX_HEADER_BYTES = 16 * 1024 * 1024
CREATED = "2025-01-01T00:00:00+00:00"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "spec" / "vectors"
WRITER_VERSION = "1.2"  # the version this spec defines and a writer writes
BYTES_SINCE = (1, 2)  # storage counts bytes from this version on (spec 3.10)

# Canonical data order (spec section 2.4): by dtype in this order, then by name.
DTYPE_ORDER = {"I64": 0, "F32": 1, "I32": 2, "BF16": 3, "F16": 4, "I8": 5, "U8": 6}
NUMPY_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I8": "<i1", "U8": "<u1"}
DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I8": 1, "U8": 1}


# ---- tensors ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stored:
    """A tensor as the file stores it: dtype name, shape, raw little-endian bytes, and its values."""

    dtype: str
    shape: tuple[int, ...]
    raw: bytes
    values: np.ndarray  # float64 (or int64) values the raw bytes decode to


def store(values: np.ndarray, dtype: str) -> Stored:
    """Round `values` to `dtype` (F32, F16, BF16, I64, I32) and keep the exact stored values."""
    values = np.asarray(values)
    if dtype == "BF16":
        bits = bf16_bits(values.astype(np.float32))
        decoded = (bits.astype(np.uint32) << 16).view(np.float32)
        return Stored(dtype, values.shape, bits.astype("<u2").tobytes(), decoded.astype(np.float64))
    arr = values.astype(NUMPY_DTYPES[dtype])
    exact = arr.astype(np.int64 if dtype in ("I64", "I32", "I8", "U8") else np.float64)
    return Stored(dtype, values.shape, arr.tobytes(), exact)


def quantized(values: np.ndarray, per_row: bool, name: str) -> dict[str, Stored]:
    """8-bit storage of float values (spec 2.6): codes, scale and zero point per tensor or per row.
    The group's range [min(x, 0), max(x, 0)] over 255 steps; any valid choice decodes by the spec."""
    x = np.asarray(values, dtype=np.float64)
    groups = x.reshape(x.shape[0], -1) if per_row else x.reshape(1, -1)
    low, high = np.minimum(groups.min(1), 0.0), np.maximum(groups.max(1), 0.0)
    scale = ((high - low) / 255.0).astype(np.float32)
    scale[scale == 0] = 1.0
    zero_point = np.clip(-128 - np.round(low / scale), -128, 127)
    codes = np.clip(np.round(groups / scale[:, None]) + zero_point[:, None], -128, 127)
    return {name: store(codes.reshape(x.shape), "I8"), f"{name}.scale": store(scale, "F32"),
            f"{name}.zero_point": store(zero_point, "I8")}


def stored_as(values: np.ndarray, dtype: str, name: str) -> dict[str, Stored]:
    """Tensor `name` stored as F32, F16, BF16, I8 (one scale) or I8-row (a scale per row)."""
    if dtype.startswith("I8"):
        return quantized(values, dtype == "I8-row", name)
    return {name: store(values, dtype)}


def dequantize(tensors: dict[str, Stored], name: str) -> np.ndarray:
    """float64 copies of the float32 values an I8 tensor decodes to: scale[g] * (q - zero_point[g]),
    the product rounded once to binary32 (numpy's float32 multiply), g the row or 0."""
    q = tensors[name].values
    view = (-1,) + (1,) * (q.ndim - 1)
    scale = tensors[f"{name}.scale"].values.astype(np.float32).reshape(view)
    zero_point = tensors[f"{name}.zero_point"].values.reshape(view)
    return ((q - zero_point).astype(np.float32) * scale).astype(np.float64)


def value(tensors: dict[str, Stored], name: str) -> np.ndarray:
    """The float values of stored tensor `name` (I8 dequantised)."""
    return dequantize(tensors, name) if tensors[name].dtype == "I8" else tensors[name].values


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns of finite float32 values, rounded to nearest, ties to even."""
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def with_value(t: Stored, flat_index: int, value: float) -> Stored:
    """A copy of float tensor `t` with one element replaced (stored in t's dtype)."""
    values = t.values.copy().reshape(-1)
    values[flat_index] = value
    return store(values.reshape(t.shape), t.dtype)


# ---- container ---------------------------------------------------------------------------------
def safetensors_bytes(tensors: dict[str, Stored], metadata: str | None,
                      offsets: dict[str, tuple[int, int]] | None = None) -> bytes:
    """A safetensors file as spec section 2 describes it; `offsets` overrides data_offsets."""
    order = sorted(tensors, key=lambda n: (DTYPE_ORDER[tensors[n].dtype], n))
    entries, data, position = [], b"", 0
    for name in order:
        t = tensors[name]
        span = (position, position + len(t.raw))
        position = span[1]
        data += t.raw
        begin, end = (offsets or {}).get(name, span)
        shape = ",".join(str(d) for d in t.shape)
        entries.append(f'{json.dumps(name)}:{{"dtype":"{t.dtype}","shape":[{shape}],'
                       f'"data_offsets":[{begin},{end}]}}')
    if metadata is not None:
        entries.insert(0, f'"__metadata__":{{"{METADATA_KEY}":{json.dumps(metadata)}}}')
    header = ("{" + ",".join(entries) + "}").encode("ascii")
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def canonical_json(obj: Any) -> str:
    """Spec section 3.1: sorted keys, no whitespace, ASCII only, no NaN or Infinity."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def checksum(tensors: dict[str, Stored]) -> str:
    """sha256-tensors-v1 (spec section 3.12)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}\n{t.dtype}\n{','.join(str(d) for d in t.shape)}\n".encode("ascii"))
        h.update(t.raw)
    return h.hexdigest()


KIND_TENSORS = {"memory": ("bases", "addresses"), "pixels": ("pixels",), "lowrank": ("lowrank_u", "lowrank_v")}
EXAMPLE_AXIS_TENSOR = {"memory": "addresses", "pixels": "pixels", "lowrank": "lowrank_u"}  # dim 0 is N


def nbytes(t: Stored) -> int:
    return int(np.prod(t.shape)) * DTYPE_BYTES[t.dtype]


def storage(kind: str, tensors: dict[str, Stored], chw: tuple[int, int, int], n_classes: int,
            version: str = WRITER_VERSION) -> dict[str, Any]:
    """Storage accounting (spec section 3.10), the byte members from 1.2 on; a missing tensor (an
    invalid vector) counts as empty."""
    floats = sum(int(np.prod(tensors[n].shape)) for n in KIND_TENSORS[kind] if n in tensors)
    examples = tensors[EXAMPLE_AXIS_TENSOR[kind]].shape[0] if EXAMPLE_AXIS_TENSOR[kind] in tensors else 0
    c, h, w = chw
    image = c * h * w * n_classes
    out = {
        "floats_stored": floats,
        "label_values": int(np.prod(tensors["labels"].shape)),
        "examples": int(examples),
        "ipc_equivalent": round(floats / image, 6),
    }
    if tuple(int(p) for p in version.split(".")) < BYTES_SINCE:
        return out
    budget = 0  # the kind's tensors and their per-row (more than one value) scales and zero points
    for name in KIND_TENSORS[kind]:
        for part in (name, f"{name}.scale", f"{name}.zero_point"):
            if part in tensors and (part == name or int(np.prod(tensors[part].shape)) > 1):
                budget += nbytes(tensors[part])
    out.update({
        "bytes_stored": budget,
        "tensor_bytes": {name: nbytes(t) for name, t in tensors.items()},
        "ipc_equivalent_uint8": round(budget / image, 6),
        "ipc_equivalent_float32": round(budget / (4 * image), 6),
    })
    return out


# ---- decoding (spec section 4), in float64 from the stored values ---------------------------------
def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights: src = max((dst + 0.5) * n_in / n_out - 0.5, 0), two clamped neighbours."""
    m = np.zeros((n_out, n_in))
    for dst in range(n_out):
        src = max((dst + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        m[dst, i0] += 1.0 - lam
        m[dst, i1] += lam
    return m


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """src = min(floor(float32(dst) * float32(n_in / n_out)), n_in - 1), all in IEEE binary32."""
    scale = np.float32(n_in) / np.float32(n_out)
    dst = np.arange(n_out).astype(np.float32)
    return np.minimum(np.floor(dst * scale).astype(np.int64), n_in - 1)


def upsample(x: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """[N, C, h, w] -> [N, C, H, W] by the spec's bilinear or nearest rule."""
    h, w = x.shape[-2:]
    if mode == "bilinear":
        return np.einsum("Yh,nchw,Xw->ncYX", bilinear_matrix(h, size[0]), x, bilinear_matrix(w, size[1]))
    rows, cols = nearest_index(h, size[0]), nearest_index(w, size[1])
    return x[:, :, rows][:, :, :, cols]


def decode(kind: str, t: dict[str, Stored], chw: tuple[int, int, int], mode: str) -> np.ndarray:
    """Every example, float64 [N, C, H, W], in the bank's (normalised) space."""
    if kind == "pixels":
        return value(t, "pixels")
    if kind == "lowrank":
        return value(t, "lowrank_u") @ value(t, "lowrank_v")
    bases, addresses = value(t, "bases"), value(t, "addresses")
    k, c, h, w = bases.shape
    x = (addresses @ bases.reshape(k, c * h * w)).reshape(-1, c, h, w)
    return upsample(x, chw[1:], mode)


def to_pixels(x: np.ndarray, norm: dict[str, Any], t: dict[str, Stored]) -> np.ndarray:
    """Spec section 5: undo ZCA (solve against zca_whiten), then p = x * std + mean; clamp to [0, 1]."""
    if norm["zca"] is not None:
        flat = x.reshape(x.shape[0], -1)
        unwhitened = np.linalg.solve(t["zca_whiten"].values.T, flat.T).T
        x = (unwhitened + t["zca_mean"].values).reshape(x.shape)
    mean = np.array(norm["mean"]).reshape(1, -1, 1, 1)
    std = np.array(norm["std"]).reshape(1, -1, 1, 1)
    return np.clip(x * std + mean, 0.0, 1.0)


def fit_zca(images: np.ndarray, regularization: float) -> tuple[np.ndarray, np.ndarray]:
    """ZCA as spec section 5 defines it: (zca_mean [D], zca_whiten [D, D]), float64."""
    flat = images.reshape(images.shape[0], -1)
    mean = flat.mean(0)
    centred = flat - mean
    s, u = np.linalg.eigh(centred.T @ centred / flat.shape[0])
    s = np.clip(s, 0.0, None)
    return mean, (u / np.sqrt(s + regularization * s.mean())) @ u.T


# ---- banks -------------------------------------------------------------------------------------
def default_recipe(label_space: str) -> dict[str, Any]:
    """TrainingRecipe defaults (spec section 3.7)."""
    return {
        "architecture": "convnet", "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005,
        "epochs": 300, "batch_size": 256, "lr_schedule": "step", "augmentation": "none",
        "label_loss": "cross_entropy" if label_space == "index" else "soft_cross_entropy",
        "label_temperature": 1.0,
    }


@dataclass
class Bank:
    """One bank: stored tensors and the metadata fields the generator writes."""

    kind: str
    tensors: dict[str, Stored]
    image_shape: tuple[int, int, int]
    classes: list[str]
    label_space: str
    upsample: str = "bilinear"
    normalization: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: str = WRITER_VERSION

    def metadata(self) -> dict[str, Any]:
        """The full metadata object (spec section 3), storage and checksum computed from the tensors."""
        c = self.image_shape[0]
        meta = {
            **self.extra,
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "kind": self.kind,
            "image_shape": list(self.image_shape),
            "classes": self.classes,
            "label_space": self.label_space,
            "normalization": self.normalization or {"mean": [0.0] * c, "std": [1.0] * c, "zca": None},
            "recipe": self.recipe or default_recipe(self.label_space),
            "provenance": self.provenance,
            "evaluations": self.evaluations,
            "storage": storage(self.kind, self.tensors, self.image_shape, len(self.classes), self.format_version),
            "checksum": {"algorithm": CHECKSUM_ALGORITHM, "value": checksum(self.tensors)},
        }
        if self.kind == "memory":
            meta["upsample"] = self.upsample
        return meta

    def file_bytes(self, meta: dict[str, Any] | None = None) -> bytes:
        return safetensors_bytes(self.tensors, canonical_json(meta or self.metadata()))


def provenance(method: str, budget_ipc: float, **hyperparameters: Any) -> dict[str, Any]:
    """The recommended provenance keys (spec section 3.8), with a fixed date."""
    return {
        "source": {"dataset": "synthetic-test-vector", "split": "none"},
        "method": {"name": method, "hyperparameters": hyperparameters},
        "library": {"name": "make_spec_vectors", "version": "1.0"},
        "created": CREATED,
        "budget_ipc": budget_ipc,
    }


def uniform(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return rng.uniform(-scale, scale, size=shape).astype(np.float32)


def hard_labels(n: int, n_classes: int) -> Stored:
    return store(np.arange(n) % n_classes, "I64")


def soft_labels(rng: np.random.Generator, n: int, n_classes: int, space: str) -> Stored:
    logits = rng.normal(0.0, 2.0, size=(n, n_classes))
    if space == "logits":
        return store(logits, "F32")
    p = np.exp(logits - logits.max(1, keepdims=True))
    return store(p / p.sum(1, keepdims=True), "F32")


def memory_bank(seed: int, k: int, c: int, hw: tuple[int, int], image_hw: tuple[int, int], n: int,
                n_classes: int, dtype: str = "F32", address_dtype: str = "F32", upsample_mode: str = "bilinear",
                label_space: str = "index", **kw: Any) -> Bank:
    rng = np.random.default_rng(seed)
    tensors = {
        **stored_as(uniform(rng, (k, c, *hw)), dtype, "bases"),
        **stored_as(uniform(rng, (n, k), 0.5), address_dtype, "addresses"),
        "labels": hard_labels(n, n_classes) if label_space == "index" else soft_labels(rng, n, n_classes, label_space),
    }
    ds = image_hw[0] // hw[0]
    return Bank("memory", tensors, (c, *image_hw), [f"class_{i}" for i in range(n_classes)], label_space,
                upsample=upsample_mode, provenance=provenance("rtp", 1.0, n_bases=k, downsample=ds), **kw)


def valid_banks() -> dict[str, tuple[Bank, str]]:
    """name -> (bank, description) for every valid vector."""
    banks: dict[str, tuple[Bank, str]] = {}
    fmnist = {"mean": [0.286], "std": [0.353], "zca": None}
    banks["memory_bilinear_ds2"] = (
        memory_bank(1, 3, 1, (3, 3), (6, 6), 4, 2, normalization=fmnist),
        "memory, F32 bases 3x3 upsampled x2 to 6x6 (bilinear), hard labels, per-channel normalisation")
    banks["memory_nearest_ds2_f16"] = (
        memory_bank(2, 2, 1, (2, 3), (4, 6), 3, 3, dtype="F16", upsample_mode="nearest"),
        "memory, F16 bases 2x3 upsampled x2 to 4x6 (nearest), F32 addresses, hard labels")
    banks["memory_bilinear_ds4_bf16_probabilities"] = (
        memory_bank(3, 4, 3, (2, 2), (8, 8), 5, 3, dtype="BF16", address_dtype="BF16",
                    label_space="probabilities",
                    normalization={"mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616], "zca": None}),
        "memory, BF16 bases and addresses, 3 channels, 2x2 upsampled x4 to 8x8 (bilinear), soft labels "
        "(probabilities)")
    logits_bank = memory_bank(
        4, 2, 2, (3, 4), (3, 4), 3, 2, label_space="logits",
        recipe={**default_recipe("logits"), "label_loss": "kl_divergence", "label_temperature": 2.0,
                "augmentation": "dsa", "epochs": 1000, "x_vendor_note": "unknown recipe keys are kept"},
        evaluations=[{"architecture": "convnet", "accuracies": [0.5, 0.75], "mean": 0.625, "std": 0.125,
                      "networks": 2, "test": "synthetic-test-vector/test", "epochs": 1000}],
        extra={"x_unknown_optional": {"kept": True}})
    banks["memory_ds1_logits"] = (
        logits_bank,
        "memory at full resolution (no upsampling), 2 channels, learned labels (logits) with a KL recipe, "
        "an evaluation, and unknown optional keys a writer must preserve")
    banks["memory_bilinear_nonint"] = (
        memory_bank(5, 3, 1, (3, 2), (7, 5), 2, 2),
        "memory, bilinear from 3x2 to 7x5 (scale factors not integers)")
    banks["memory_nearest_float32_index"] = (
        memory_bank(6, 2, 1, (14, 2), (46, 3), 2, 2, upsample_mode="nearest"),
        "memory, nearest from 14x2 to 46x3: output row 23 takes source row 6 (float32 rule), not 7 "
        "(exact 23*14/46)")
    banks["pixels_f32"] = (pixels_bank(7, "F32", 3, (4, 4), 4, 3, "index"),
                           "pixels, F32, 3 channels 4x4, hard labels, per-channel normalisation")
    banks["pixels_f16_probabilities"] = (pixels_bank(8, "F16", 1, (5, 5), 3, 3, "probabilities"),
                                         "pixels, F16, 1 channel 5x5, soft labels (probabilities)")
    banks["lowrank_f32_logits"] = (lowrank_bank(9, "F32", 2, (5, 4), 2, 3, 2, "logits"),
                                   "lowrank, F32, 2 channels 5x4, rank 2, learned labels (logits)")
    banks["lowrank_bf16"] = (lowrank_bank(10, "BF16", 1, (6, 6), 1, 2, 2, "index"),
                             "lowrank, BF16, 1 channel 6x6, rank 1, hard labels")
    banks["pixels_zca"] = (zca_bank(11), "pixels stored in ZCA-whitened space (regularization 0.1), "
                                         "with zca_mean and zca_whiten tensors")
    banks["pixels_whiten_nonsymmetric"] = (
        zca_bank(13, rotate=True),
        "pixels whitened by a non-symmetric matrix (ZCA times a rotation): pins the orientation "
        "x = (flat - zca_mean) @ zca_whiten")
    newer_minor = memory_bank(12, 2, 1, (2, 2), (4, 4), 2, 2, format_version="1.3",
                              extra={"x_from_1_3": [1, 2, 3]})
    banks["memory_minor_1_3"] = (newer_minor, "format_version 1.3 with an unknown key: a 1.2 reader must "
                                              "accept it (newer minor version)")
    before_bytes = memory_bank(17, 2, 1, (2, 2), (4, 4), 3, 3, format_version="1.1")
    banks["memory_1_1_without_bytes"] = (before_bytes, "format_version 1.1: storage without the byte members of "
                                                       "1.2, which a reader computes but does not require")
    banks["memory_tasks"] = (tasks_bank(), "memory grown by two tasks: the second adds a class and a basis; "
                                           "the first task's addresses are 0 on it (spec 3.11)")
    domain = pixels_bank(14, "F32", 1, (3, 3), 4, 2, "index")
    domain.extra = {"tasks": [{"name": "upright", "classes": [0, 1], "rows": [0, 2]},
                              {"name": "rotated", "classes": [0, 1], "rows": [2, 4], "x_angle": 90}]}
    banks["pixels_tasks_domains"] = (domain, "pixels grown by two domains with the same classes; a task's "
                                             "unknown member is kept")
    legacy = memory_bank(15, 2, 1, (2, 2), (4, 4), 2, 2, format_version="1.0",
                         extra={"tasks": "reserved in 1.0: any value"})
    banks["memory_1_0_opaque_tasks"] = (legacy, "format_version 1.0 with a 'tasks' value that is not 1.1 task "
                                                "metadata: must load (tasks is checked from 1.1 on)")
    banks["memory_int8"] = (
        memory_bank(18, 3, 1, (3, 3), (6, 6), 5, 2, dtype="I8", address_dtype="I8-row",
                    normalization={"mean": [0.286], "std": [0.353], "zca": None}),
        "memory, 8-bit bases with one scale and zero point (per tensor, not counted in bytes_stored) and 8-bit "
        "addresses with one per row (counted), bilinear x2 (spec 2.6)")
    banks["pixels_int8_row"] = (
        pixels_bank(19, "I8-row", 2, (3, 4), 4, 2, "index"),
        "pixels, 8-bit with a scale and zero point per example, 2 channels 3x4")
    banks["lowrank_int8_f16"] = (
        lowrank_bank(20, "I8", 1, (5, 6), 2, 3, 3, "probabilities", v_dtype="F16"),
        "lowrank, 8-bit lowrank_u (one scale) with F16 lowrank_v, soft labels")
    banks["memory_tasks_int8"] = (
        tasks_bank(address_dtype="I8-row"),
        "the memory_tasks bank with 8-bit addresses (a scale per row): the first task's rows are 0 on the "
        "second task's basis because their code equals their zero point (spec 3.11, 2.6)")
    return banks


def tasks_bank(address_dtype: str = "F32") -> Bank:
    """memory, K=3, N=4, classes [0, 0, 1, 1]: task t0 (class 0, rows 0-1, bases 0-1) and t1 (class 1,
    rows 2-3, adds basis 2); rows of t0 are 0 on basis 2."""
    rng = np.random.default_rng(16)
    addresses = uniform(rng, (4, 3), 0.5)
    addresses[:2, 2] = 0.0
    tensors = {"bases": store(uniform(rng, (3, 1, 2, 2)), "F32"), **stored_as(addresses, address_dtype, "addresses"),
               "labels": store(np.array([0, 0, 1, 1]), "I64")}
    tasks = [{"name": "t0", "classes": [0], "rows": [0, 2], "bases": [0, 2]},
             {"name": "t1", "classes": [1], "rows": [2, 4], "bases": [2, 3]}]
    return Bank("memory", tensors, (1, 4, 4), ["class_0", "class_1"], "index",
                provenance=provenance("rtp", 1.0, n_bases=3, downsample=2), extra={"tasks": tasks})


def pixels_bank(seed: int, dtype: str, c: int, hw: tuple[int, int], n: int, n_classes: int, space: str) -> Bank:
    rng = np.random.default_rng(seed)
    mean = [round(float(v), 4) for v in rng.uniform(0.3, 0.6, size=c)]
    std = [round(float(v), 4) for v in rng.uniform(0.2, 0.3, size=c)]
    images = rng.uniform(-0.1, 1.1, size=(n, c, *hw))  # a few values decode outside [0, 1] -> clamped
    x = (images - np.array(mean).reshape(1, -1, 1, 1)) / np.array(std).reshape(1, -1, 1, 1)
    labels = hard_labels(n, n_classes) if space == "index" else soft_labels(rng, n, n_classes, space)
    return Bank("pixels", {**stored_as(x, dtype, "pixels"), "labels": labels}, (c, *hw),
                [f"class_{i}" for i in range(n_classes)], space,
                normalization={"mean": mean, "std": std, "zca": None},
                provenance=provenance("dm", float(n) / n_classes))


def lowrank_bank(seed: int, dtype: str, c: int, hw: tuple[int, int], rank: int, n: int, n_classes: int,
                 space: str, v_dtype: str | None = None) -> Bank:
    rng = np.random.default_rng(seed)
    tensors = {
        **stored_as(uniform(rng, (n, c, hw[0], rank)), dtype, "lowrank_u"),
        **stored_as(uniform(rng, (n, c, rank, hw[1])), v_dtype or dtype, "lowrank_v"),
        "labels": hard_labels(n, n_classes) if space == "index" else soft_labels(rng, n, n_classes, space),
    }
    return Bank("lowrank", tensors, (c, *hw), [f"class_{i}" for i in range(n_classes)], space,
                provenance=provenance("dm+lowrank", 1.0, rank=rank))


def zca_bank(seed: int, rotate: bool = False) -> Bank:
    """A pixels bank in ZCA space; `rotate` right-multiplies the whitening by a random rotation
    (still a whitening, no longer symmetric)."""
    rng = np.random.default_rng(seed)
    mean, std, reg = [0.5], [0.25], 0.1
    real = (rng.uniform(0.0, 1.0, size=(32, 1, 4, 4)) - mean[0]) / std[0]
    zca_mean, zca_whiten = fit_zca(real, reg)
    if rotate:
        q, _ = np.linalg.qr(rng.normal(size=zca_whiten.shape))
        zca_whiten = zca_whiten @ q
    zm, zw = store(zca_mean, "F32"), store(zca_whiten, "F32")
    whitened = (real[:4].reshape(4, -1) - zm.values) @ zw.values
    tensors = {"pixels": store(whitened.reshape(4, 1, 4, 4), "F32"), "labels": hard_labels(4, 2),
               "zca_mean": zm, "zca_whiten": zw}
    return Bank("pixels", tensors, (1, 4, 4), ["class_0", "class_1"], "index",
                normalization={"mean": mean, "std": std, "zca": {"regularization": reg}},
                provenance=provenance("random-real", 2.0))


# ---- invalid vectors ---------------------------------------------------------------------------
Mutation = Callable[[Bank], bytes]


def _meta_edit(edit: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(bank: Bank) -> bytes:
        meta = copy.deepcopy(bank.metadata())  # edits must not reach the shared bank's provenance
        edit(meta)
        return bank.file_bytes(meta)
    return mutate


def _tensors_edit(edit: Callable[[dict[str, Stored]], None]) -> Mutation:
    def mutate(bank: Bank) -> bytes:
        tensors = dict(bank.tensors)
        edit(tensors)
        return replace(bank, tensors=tensors).file_bytes()
    return mutate


def _header_len(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


def _flip_data_bit(bank: Bank) -> bytes:
    data = bytearray(bank.file_bytes())
    data[8 + _header_len(data) + _spans(bank.tensors)["addresses"][0]] ^= 0x01  # lowest mantissa bit of
    return bytes(data)  # addresses[0, 0] (F32, little-endian): the value changes but stays finite


def _shifted_offsets(shift_name: str, by: int) -> Mutation:
    def mutate(bank: Bank) -> bytes:
        spans = _spans(bank.tensors)
        begin, end = spans[shift_name]
        return safetensors_bytes(bank.tensors, canonical_json(bank.metadata()), {shift_name: (begin + by, end + by)})
    return mutate


def _spans(tensors: dict[str, Stored]) -> dict[str, tuple[int, int]]:
    spans, position = {}, 0
    for name in sorted(tensors, key=lambda n: (DTYPE_ORDER[tensors[n].dtype], n)):
        spans[name] = (position, position + len(tensors[name].raw))
        position += len(tensors[name].raw)
    return spans


def _drop(name: str) -> Callable[[dict[str, Stored]], None]:
    return lambda t: t.pop(name)


INVALID: list[tuple[str, int, str, str, Mutation]] = [
    # (name, rule, message the reader must give (a substring), description, mutation of the base bank)
    ("invalid_empty", 1, "truncated", "an empty file (fewer than 8 bytes)", lambda b: b""),
    ("invalid_oversized_header", 2, "exceeds the limit", "header length 16 MiB + 1",
     lambda b: struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}      "),
    ("invalid_truncated_header", 3, "truncated", "cut in the middle of the JSON header",
     lambda b: b.file_bytes()[: 8 + _header_len(b.file_bytes()) // 2]),
    ("invalid_not_json", 4, "header is not JSON", "header bytes are not JSON",
     lambda b: struct.pack("<Q", 16) + b"not a JSON obj!!"),
    ("invalid_no_metadata", 6, "no 'compressdata' entry", "a plain safetensors file without __metadata__",
     lambda b: safetensors_bytes(b.tensors, None)),
    ("invalid_metadata_nan", 8, "not valid JSON", "metadata JSON uses the NaN literal",
     lambda b: safetensors_bytes(b.tensors, canonical_json(b.metadata()).replace('"mean":[0.0]', '"mean":[NaN]'))),
    ("invalid_dtype_i32_labels", 11, "dtype 'I32' not allowed", "labels stored as I32",
     _tensors_edit(lambda t: t.__setitem__("labels", store(t["labels"].values, "I32")))),
    ("invalid_offsets_out_of_range", 14, "do not fit", "the last tensor's data_offsets point past the data",
     _shifted_offsets("bases", 8)),
    ("invalid_offsets_gap", 15, "overlap or leave gaps", "the first tensor's data does not start at offset 0",
     _shifted_offsets("labels", 8)),
    ("invalid_truncated_data", 14, "do not fit", "a download cut short: the last 6 bytes are missing",
     lambda b: b.file_bytes()[:-6]),
    ("invalid_missing_field", 18, "missing required field(s) ['checksum']", "no 'checksum' field",
     _meta_edit(lambda m: m.pop("checksum"))),
    ("invalid_newer_major", 21, "newer than this reader supports", "format_version 2.0",
     _meta_edit(lambda m: m.__setitem__("format_version", "2.0"))),
    ("invalid_unknown_kind", 23, "metadata field 'kind'", "kind 'wavelet'",
     _meta_edit(lambda m: m.__setitem__("kind", "wavelet"))),
    ("invalid_missing_tensor", 29, "requires tensor(s) ['addresses']", "kind memory without 'addresses'",
     _tensors_edit(_drop("addresses"))),
    ("invalid_extra_tensor", 30, "unexpected tensor(s) ['notes']", "an extra tensor 'notes'",
     _tensors_edit(lambda t: t.__setitem__("notes", store(np.zeros(2), "F32")))),
    ("invalid_k_mismatch", 34, "(K from 'bases')", "addresses [N, K+1] for bases with K rows",
     _tensors_edit(lambda t: t.__setitem__("addresses", store(np.full((4, 4), 0.25), "F32")))),
    ("invalid_label_out_of_range", 43, "value 2 outside [0, 2)", "hard label 2 with two classes",
     _tensors_edit(lambda t: t.__setitem__("labels", store(np.array([0, 1, 2, 1]), "I64")))),
    ("invalid_nan_bases", 53, "contains NaN or Inf", "a NaN in bases",
     _tensors_edit(lambda t: t.__setitem__("bases", with_value(t["bases"], 5, float("nan"))))),
    ("invalid_storage_mismatch", 55, "storage.floats_stored", "storage.floats_stored off by one",
     _meta_edit(lambda m: m["storage"].__setitem__("floats_stored", m["storage"]["floats_stored"] + 1))),
    ("invalid_checksum_mismatch", 57, "checksum mismatch", "one data bit flipped after writing",
     _flip_data_bit),
]


def _tasks_edit(edit: Callable[[list[dict[str, Any]]], Any]) -> Mutation:
    """A mutation of the tasks bank's `tasks` (the result replaces them when not None)."""
    def mutate(_bank: Bank) -> bytes:
        bank = tasks_bank()
        meta = bank.metadata()
        result = edit(meta["tasks"])
        if result is not None:
            meta["tasks"] = result
        return bank.file_bytes(meta)
    return mutate


def _address_on_later_basis(_bank: Bank) -> bytes:
    bank = tasks_bank()
    bank.tensors["addresses"] = with_value(bank.tensors["addresses"], 2, 0.25)  # row 0 (t0) on basis 2 (t1's)
    return bank.file_bytes()


INVALID += [  # task metadata (spec 3.11), from the valid `memory_tasks` bank
    ("invalid_tasks_not_list", 62, "metadata field 'tasks'", "tasks is an object, not a list",
     _tasks_edit(lambda t: t[0])),
    ("invalid_tasks_no_bases", 62, "metadata field 'tasks[1]'", "a memory bank's task without 'bases'",
     _tasks_edit(lambda t: t[1].pop("bases") and None)),
    ("invalid_tasks_duplicate_name", 63, "task names must be unique", "two tasks named t0",
     _tasks_edit(lambda t: t[1].__setitem__("name", "t0"))),
    ("invalid_tasks_class_out_of_range", 64, "metadata field 'tasks[1].classes'", "class index 2 with two classes",
     _tasks_edit(lambda t: t[1].__setitem__("classes", [1, 2]))),
    ("invalid_tasks_rows_gap", 65, "metadata field 'tasks[1].rows'", "row 2 belongs to no task",
     _tasks_edit(lambda t: t[1].__setitem__("rows", [3, 4]))),
    ("invalid_tasks_bases_short", 66, "the bases ranges end at 2", "no task added basis 2",
     _tasks_edit(lambda t: t[1].__setitem__("bases", [2, 2]))),
    ("invalid_tasks_label_outside", 67, "not one of the task's classes", "task t1 lists class 0, its rows have 1",
     _tasks_edit(lambda t: t[1].__setitem__("classes", [0]))),
    ("invalid_tasks_uses_later_basis", 68, "added by a later task", "a row of t0 uses basis 2, added by t1",
     _address_on_later_basis),
]


def _header_text_edit(edit: Callable[[str], str]) -> Mutation:
    """A mutation of the base bank's raw header text (re-padded to a multiple of 8 bytes)."""
    def mutate(bank: Bank) -> bytes:
        data = bank.file_bytes()
        n = _header_len(data)
        text = edit(data[8 : 8 + n].decode("ascii").rstrip(" ")).encode("ascii")
        text += b" " * (-len(text) % 8)
        return struct.pack("<Q", len(text)) + text + data[8 + n :]
    return mutate


def _metadata_text_edit(edit: Callable[[str], str]) -> Mutation:
    """A mutation of the base bank's canonical metadata text (storage and checksum stay right)."""
    return lambda bank: safetensors_bytes(bank.tensors, edit(canonical_json(bank.metadata())))


def _nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def _too_large_image(_bank: Bank) -> bytes:
    """A valid-looking memory bank of 2x2 bases whose examples would be 1 x 8192 x 4096 (2^25 values)."""
    return memory_bank(101, 2, 1, (2, 2), (8192, 4096), 2, 2).file_bytes()


def _storage_boolean(_bank: Bank) -> bytes:
    bank = pixels_bank(102, "F32", 1, (2, 2), 1, 1, "index")  # N = 1, so `true` would equal storage.examples
    meta = bank.metadata()
    meta["storage"]["examples"] = True
    return bank.file_bytes(meta)


def _pixels_task_with_bases(_bank: Bank) -> bytes:
    bank = pixels_bank(14, "F32", 1, (3, 3), 4, 2, "index")
    bank.extra = {"tasks": [{"name": "upright", "classes": [0, 1], "rows": [0, 2], "bases": [0, 0]},
                            {"name": "rotated", "classes": [0, 1], "rows": [2, 4]}]}
    return bank.file_bytes()


INVALID += [  # JSON, limits and types the spec states since the hardening of 1.1 (sections 2.2, 3.1, 9)
    ("invalid_header_duplicate_key", 4, "duplicate key(s) ['labels']", "the header lists tensor 'labels' twice "
     "(same entry): a reader keeping the last or the first would agree, but the key repeats",
     _header_text_edit(lambda t: t.replace('"labels":', '"labels":{"dtype":"I64","shape":[4],'
                                                      '"data_offsets":[0,32]},"labels":', 1))),
    ("invalid_metadata_member_not_string", 7, "__metadata__['note']: expected a JSON string",
     "__metadata__ has a second member whose value is a number, not a string",
     _header_text_edit(lambda t: t.replace('"__metadata__":{', '"__metadata__":{"note":1,', 1))),
    ("invalid_metadata_duplicate_key", 8, "duplicate key(s) ['classes']", "the metadata object has 'classes' "
     "twice with different names: readers keeping the first or the last key would disagree",
     _metadata_text_edit(lambda t: t.replace('"classes":', '"classes":["cat","dog"],"classes":', 1))),
    ("invalid_metadata_too_deep", 8, "nesting deeper than 64 levels", "a provenance member nested 65 levels deep "
     "(the metadata object is level 1)", _meta_edit(lambda m: m["provenance"].__setitem__("x_deep", _nested(63)))),
    ("invalid_metadata_huge_integer", 8, "out of the float64 range", "a provenance integer of 310 digits (no "
     "binary64 value)", _meta_edit(lambda m: m["provenance"].__setitem__("x_big", 10**309))),
    ("invalid_metadata_lone_surrogate", 8, "unpaired surrogate", "a provenance string with the unpaired "
     "surrogate escape \\ud800", _meta_edit(lambda m: m["provenance"].__setitem__("x_note", "a\ud800b"))),
    ("invalid_entry_extra_member", 10, "exactly these members", "the 'labels' entry has a fourth member",
     _header_text_edit(lambda t: t.replace('"labels":{', '"labels":{"crc32":0,', 1))),
    ("invalid_shape_boolean", 12, "invalid shape", "a 'bases' shape holds true for 1 (same element count)",
     _header_text_edit(lambda t: t.replace('"shape":[3,1,2,2]', '"shape":[3,true,2,2]', 1))),
    ("invalid_offsets_float", 13, "invalid data_offsets", "'labels' data_offsets [0,32.0]: 32.0 is not a JSON "
     "integer", _header_text_edit(lambda t: t.replace('"data_offsets":[0,32]', '"data_offsets":[0,32.0]', 1))),
    ("invalid_image_shape_float", 24, "metadata field 'image_shape': expected", "image_shape [1,4.0,4]",
     _meta_edit(lambda m: m.__setitem__("image_shape", [1, 4.0, 4]))),
    ("invalid_image_too_large", 25, "outside limits", "examples of 1 x 8192 x 4096 = 2^25 values from 2x2 bases "
     "(over the 2^24 limit on one decoded example)", _too_large_image),
    ("invalid_too_many_tensors", 30, "unexpected tensor(s)", "ten tensors (a bank holds at most nine)",
     _tensors_edit(lambda t: t.update({f"x{i}": store(np.zeros(1), "F32") for i in range(7)}))),
    ("invalid_storage_float", 55, "storage.floats_stored", "storage.floats_stored written as 20.0, not the "
     "JSON integer 20", _meta_edit(lambda m: m["storage"].__setitem__("floats_stored",
                                                                     float(m["storage"]["floats_stored"])))),
    ("invalid_storage_boolean", 55, "storage.examples", "storage.examples is true in a bank of one example",
     _storage_boolean),
    ("invalid_label_temperature_zero", 59, "recipe.label_temperature", "recipe.label_temperature 0.0",
     _meta_edit(lambda m: m["recipe"].__setitem__("label_temperature", 0.0))),
    ("invalid_tasks_too_many", 62, "at most 10000", "10,001 tasks (checked before their content)",
     _tasks_edit(lambda t: [0] * 10_001)),
    ("invalid_tasks_bases_in_pixels", 62, "metadata field 'tasks[0]'", "a task of a pixels bank names 'bases'",
     _pixels_task_with_bases),
]


def quantized_base() -> Bank:
    """The valid 8-bit bank the quantisation vectors start from: memory, K=3, N=4, 2 classes, I8 bases
    with one scale and zero point, I8 addresses with one per row."""
    return memory_bank(103, 3, 1, (2, 2), (4, 4), 4, 2, dtype="I8", address_dtype="I8-row")


def _quantized_edit(edit: Callable[[dict[str, Stored]], None]) -> Mutation:
    """A mutation of the 8-bit bank's tensors (storage and checksum recomputed)."""
    def mutate(_bank: Bank) -> bytes:
        bank = quantized_base()
        edit(bank.tensors)
        return bank.file_bytes()
    return mutate


def _quantized_meta_edit(edit: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(_bank: Bank) -> bytes:
        bank = quantized_base()
        meta = bank.metadata()
        edit(meta)
        return bank.file_bytes(meta)
    return mutate


def _scale_value(value: float) -> Callable[[dict[str, Stored]], None]:
    return lambda t: t.__setitem__("addresses.scale", with_value(t["addresses.scale"], 1, value))


INVALID += [  # 8-bit tensors (spec 2.6, since 1.2) and the byte members of storage (3.10)
    ("invalid_dtype_u8", 11, "dtype 'U8' not allowed", "bases stored as unsigned 8-bit (U8): 8-bit tensors are I8",
     _quantized_edit(lambda t: t.__setitem__("bases", store(t["bases"].values + 128, "U8")))),
    ("invalid_int8_without_scale", 69, "stored as I8, so", "I8 bases without 'bases.scale'",
     _quantized_edit(lambda t: t.pop("bases.scale"))),
    ("invalid_scale_of_float_tensor", 70, "only an I8 tensor has a scale", "F32 bases with a scale and zero point",
     _quantized_edit(lambda t: t.__setitem__("bases", store(dequantize(t, "bases"), "F32")))),
    ("invalid_scale_rows", 71, "tensor 'addresses.scale': expected", "addresses.scale with 3 values for 4 rows",
     _quantized_edit(lambda t: t.update({"addresses.scale": store(t["addresses.scale"].values[:3], "F32"),
                                         "addresses.zero_point": store(t["addresses.zero_point"].values[:3], "I8")}))),
    ("invalid_scale_f16", 71, "tensor 'bases.scale': expected", "bases.scale stored as F16",
     _quantized_edit(lambda t: t.__setitem__("bases.scale", store(t["bases.scale"].values, "F16")))),
    ("invalid_zero_point_shape", 72, "tensor 'addresses.zero_point': expected",
     "one zero point for the whole tensor beside a scale per row (inconsistent shapes)",
     _quantized_edit(lambda t: t.__setitem__("addresses.zero_point",
                                             store(t["addresses.zero_point"].values[:1], "I8")))),
    ("invalid_zero_point_f32", 72, "tensor 'bases.zero_point': expected", "bases.zero_point stored as F32",
     _quantized_edit(lambda t: t.__setitem__("bases.zero_point", store(t["bases.zero_point"].values, "F32")))),
    ("invalid_scale_nan", 73, "outside (0, 2^120)", "a NaN scale (row 1 of addresses)",
     _quantized_edit(_scale_value(float("nan")))),
    ("invalid_scale_infinite", 73, "outside (0, 2^120)", "an infinite scale",
     _quantized_edit(_scale_value(float("inf")))),
    ("invalid_scale_zero", 73, "outside (0, 2^120)", "a scale of 0", _quantized_edit(_scale_value(0.0))),
    ("invalid_scale_negative", 73, "outside (0, 2^120)", "a negative scale", _quantized_edit(_scale_value(-0.01))),
    ("invalid_scale_too_large", 73, "outside (0, 2^120)", "a scale of 2^120 (255 steps of it overflow float32)",
     _quantized_edit(_scale_value(2.0**120))),
    ("invalid_storage_no_bytes", 74, "storage.bytes_stored", "a 1.2 file whose storage lacks bytes_stored",
     _quantized_meta_edit(lambda m: m["storage"].pop("bytes_stored"))),
    ("invalid_storage_bytes_counts_scale", 74, "storage.bytes_stored", "bytes_stored counting the per-tensor scale "
     "and zero point of bases (5 bytes too many)",
     _quantized_meta_edit(lambda m: m["storage"].__setitem__("bytes_stored", m["storage"]["bytes_stored"] + 5))),
    ("invalid_storage_tensor_bytes", 74, "storage.tensor_bytes", "tensor_bytes without the labels",
     _quantized_meta_edit(lambda m: m["storage"]["tensor_bytes"].pop("labels"))),
    ("invalid_storage_ipc_uint8", 74, "storage.ipc_equivalent_uint8", "ipc_equivalent_uint8 computed from the "
     "float count instead of the bytes",
     _quantized_meta_edit(lambda m: m["storage"].__setitem__("ipc_equivalent_uint8", m["storage"]["ipc_equivalent"]))),
]


def invalid_base() -> Bank:
    """The valid bank every invalid vector starts from (memory, K=3, N=4, 2 classes, F32)."""
    return memory_bank(100, 3, 1, (2, 2), (4, 4), 4, 2)


# ---- output ------------------------------------------------------------------------------------
def f32_list(values: np.ndarray) -> list[float]:
    """float32 values, row-major, each as the shortest decimal that rounds back to it."""
    return [float(np.format_float_positional(v, unique=True, trim="0"))
            for v in np.asarray(values, dtype=np.float32).reshape(-1)]


def expected_doc(name: str, bank: Bank, description: str, data: bytes) -> dict[str, Any]:
    meta = bank.metadata()
    x = decode(bank.kind, bank.tensors, bank.image_shape, bank.upsample)
    labels = bank.tensors["labels"]
    label_values = labels.values.reshape(-1).tolist() if bank.label_space == "index" else f32_list(labels.values)
    hard = labels.values if bank.label_space == "index" else labels.values.argmax(1)
    return {
        "valid": True,
        "file": f"{name}.safetensors",
        "description": description,
        "sha256_file": hashlib.sha256(data).hexdigest(),
        "kind": bank.kind,
        "format_version": bank.format_version,
        "image_shape": list(bank.image_shape),
        "num_examples": int(x.shape[0]),
        "classes": bank.classes,
        "label_space": bank.label_space,
        "upsample": bank.upsample if bank.kind == "memory" else None,
        "labels": {"shape": list(labels.shape), "values": label_values},
        "hard_labels": [int(v) for v in hard],
        "decoded": {"shape": list(x.shape), "values": f32_list(x)},
        "pixels": {"shape": list(x.shape), "values": f32_list(to_pixels(x, meta["normalization"], bank.tensors))},
        "checksum": meta["checksum"],
        "storage": storage(bank.kind, bank.tensors, bank.image_shape, len(bank.classes)),
        "resave_identical": bank.format_version == WRITER_VERSION,
    }


def dump(doc: dict[str, Any]) -> str:
    """One top-level key per line, sorted; values compact. Deterministic."""
    lines = [f"  {json.dumps(k)}: {json.dumps(doc[k], sort_keys=True, allow_nan=False)}" for k in sorted(doc)]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def build() -> dict[str, bytes]:
    """Every vector file: name -> bytes."""
    files: dict[str, bytes] = {}
    for name, (bank, description) in valid_banks().items():
        data = bank.file_bytes()
        files[f"{name}.safetensors"] = data
        files[f"{name}.json"] = dump(expected_doc(name, bank, description, data)).encode("ascii")
    base = invalid_base()
    for name, rule, message, description, mutate in INVALID:
        files[f"{name}.safetensors"] = mutate(base)
        doc = {"valid": False, "file": f"{name}.safetensors", "description": description, "rule": rule,
               "message_contains": message}
        files[f"{name}.json"] = dump(doc).encode("ascii")
    return files


def write(out: Path) -> list[Path]:
    """Write every vector under `out` (atomically per file); remove stale vector files."""
    out.mkdir(parents=True, exist_ok=True)
    files = build()
    for stale in set(p.name for p in out.glob("*.safetensors")) | set(p.name for p in out.glob("*.json")):
        if stale not in files:
            (out / stale).unlink()
    written = []
    for name, data in sorted(files.items()):
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out / name)
        written.append(out / name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the vectors (default: %(default)s)")
    args = parser.parse_args()
    written = write(args.out)
    print(f"wrote {len(written)} files to {args.out}")


if __name__ == "__main__":
    main()
