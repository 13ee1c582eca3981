"""`MemoryBank`: a bank's tensors and metadata in memory, and the one decode that serves them."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from compressdata.bank.checksum import CHECKSUM_ALGORITHM, tensor_checksum
from compressdata.bank.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    REQUIRED_KEYS,
    TASKS_SINCE,
    check_bank,
    check_metadata_json,
    check_tasks,
    storage_accounting,
    version_tuple,
)
from compressdata.bank.grow import extend_bank, merge_banks
from compressdata.bank.io import load_bank_file, write_bank_file
from compressdata.bank.metadata import EvaluationResult, Normalization, TrainingRecipe
from compressdata.bank.query import LabelVectors, query_bank
from compressdata.errors import BankFormatError, DecodeMemoryError, UnknownNameError
from compressdata.params import PARAMETERIZATIONS, get_parameterization
from compressdata.params.base import DECODE_LIMIT_ENV, DecodeMemory, Prepared, decode_limit
from compressdata.params.quant import float_values, scale_name, zero_point_name

_KNOWN_KEYS = set(REQUIRED_KEYS) | {"upsample", "recipe", "provenance", "evaluations", "tasks"}
FLOAT64 = 8


class MemoryBank:
    """A distilled dataset: stored tensors of one kind (`memory`, `pixels`, `lowrank`), labels,
    class names, normalisation, training recipe, provenance and measured evaluations.

    The kind follows from the tensors given: `bases` + `addresses` (memory), `pixels`, or
    `lowrank_u` + `lowrank_v`, each float32, float16, bfloat16 or int8; an int8 tensor needs its
    `quantization` entry, name -> (scale float32 [1] or [rows], zero_point int8 of the same shape),
    decoded as scale * (q - zero_point) (spec 2.6; `compressdata.bank.quantize` makes such banks).
    Construction validates everything the file format requires; a bank read from a file
    (`from_file`) was validated once, on the file's own contents.
    """

    def __init__(
        self,
        *,
        labels: torch.Tensor | Sequence[int],
        classes: Sequence[str],
        bases: torch.Tensor | None = None,
        addresses: torch.Tensor | None = None,
        pixels: torch.Tensor | None = None,
        lowrank_u: torch.Tensor | None = None,
        lowrank_v: torch.Tensor | None = None,
        image_size: tuple[int, int] | None = None,
        upsample: str = "bilinear",
        normalization: Normalization | None = None,
        recipe: TrainingRecipe | None = None,
        provenance: dict[str, Any] | None = None,
        evaluations: Sequence[EvaluationResult] | None = None,
        label_space: str | None = None,
        tasks: list[dict[str, Any]] | None = None,
        extra_metadata: dict[str, Any] | None = None,
        quantization: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ):
        given = {"bases": bases, "addresses": addresses, "pixels": pixels,
                 "lowrank_u": lowrank_u, "lowrank_v": lowrank_v}
        self._assign({k: v for k, v in given.items() if v is not None}, labels=labels, classes=classes,
                     image_size=image_size, upsample=upsample, normalization=normalization, recipe=recipe,
                     provenance=provenance, evaluations=evaluations, label_space=label_space, tasks=tasks,
                     extra_metadata=extra_metadata, quantization=quantization)
        meta = self.metadata()
        check_metadata_json(meta)
        check_bank(self.all_tensors(), meta, meta["checksum"]["value"])

    def _assign(self, given: dict[str, torch.Tensor], *, labels: torch.Tensor | Sequence[int], classes: Sequence[str],
                image_size: tuple[int, int] | None = None, upsample: str = "bilinear",
                normalization: Normalization | None = None, recipe: TrainingRecipe | None = None,
                provenance: dict[str, Any] | None = None, evaluations: Sequence[EvaluationResult] | None = None,
                label_space: str | None = None, tasks: list[dict[str, Any]] | None = None,
                extra_metadata: dict[str, Any] | None = None,
                quantization: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Set the bank's fields from the constructor's arguments (`given`: the kind's tensors), unchecked."""
        given = {k: v.detach() for k, v in given.items()}
        self.kind = _infer_kind(given)
        companions = {}
        for name, (scale, zero_point) in (quantization or {}).items():
            companions[scale_name(name)] = torch.as_tensor(scale).detach()
            companions[zero_point_name(name)] = torch.as_tensor(zero_point).detach()
        # the kind's tensors as stored, with the scale and zero point of each int8 one (spec 2.6)
        self.tensors: dict[str, torch.Tensor] = {**given, **companions}
        labels = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)
        if label_space is None:
            label_space = "probabilities" if labels.is_floating_point() else "index"
        if label_space == "index" and labels.is_floating_point():
            got = str(labels.dtype).removeprefix("torch.")  # casting would silently truncate 2.9 to 2
            raise BankFormatError(f"labels: label_space 'index' needs integer class indices, got {got}")
        self.label_space = label_space
        self.labels = labels.detach().to(torch.int64 if label_space == "index" else torch.float32)
        self.classes = list(classes)
        first = next(iter(given.values()))
        channels = int(first.shape[1]) if first.dim() > 1 else 0
        self.image_size = tuple(image_size) if image_size is not None else self._stored_size()
        self.upsample = upsample
        self.normalization = normalization or Normalization.identity(channels)
        default_loss = "cross_entropy" if label_space == "index" else "soft_cross_entropy"
        self.recipe = recipe or TrainingRecipe(label_loss=default_loss)
        self.provenance = dict(provenance or {})
        self.evaluations = list(evaluations or [])
        self.tasks = tasks
        self.extra_metadata = dict(extra_metadata or {})
        self.dropped_tasks: str | None = None  # why a 1.0 file's opaque 'tasks' was not kept (warned on save)
        self._prepared: dict[torch.device, Prepared] = {}
        self._checksum: tuple[list[tuple[torch.Tensor, int]], str] | None = None

    def _stored_size(self) -> tuple[int, int]:
        if self.kind == "memory":
            return tuple(self.tensors["bases"].shape[-2:])
        if self.kind == "pixels":
            return tuple(self.tensors["pixels"].shape[-2:])
        return (int(self.tensors["lowrank_u"].shape[2]), int(self.tensors["lowrank_v"].shape[3]))

    # ---- shape and labels -------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of decoded examples."""
        first = next(iter(self.tensors.values()))
        return (int(first.shape[1]), *self.image_size)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return get_parameterization(self.kind).num_examples(self.tensors)

    def hard_labels(self) -> torch.Tensor:
        """int64 [N] class indices (argmax of soft labels)."""
        return self.labels if self.label_space == "index" else self.labels.argmax(dim=1)

    def soft_targets(self) -> torch.Tensor:
        """float32 [N, num_classes] target distributions, as the recipe's label loss uses them."""
        if self.label_space == "index":
            return torch.nn.functional.one_hot(self.labels, self.num_classes).float()
        if self.label_space == "probabilities":
            return self.labels
        return torch.softmax(self.labels / self.recipe.label_temperature, dim=1)

    # ---- decoding ---------------------------------------------------------------------------
    def decode(self, index: torch.Tensor | Sequence[int] | slice | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
        """Decode examples (all when `index` is None) to float32 [n, C, H, W] in the bank's space.

        Raises `DecodeMemoryError` when the batch needs more working memory than `decode_limit()`
        (see `decode_memory`); decode fewer examples at a time then."""
        self._check_decode_memory(self._batch_size(index), self.decode_memory())
        prepared = self.prepared_on(device)
        if index is not None and not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.int64, device=prepared[self.kind_tensor].device)
        return get_parameterization(self.kind).decode_prepared(prepared, index)

    def decode_pixels(self, index: torch.Tensor | Sequence[int] | slice | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
        """Decode and undo the recorded normalisation: float32 pixels clamped to [0, 1]."""
        self._check_decode_memory(self._batch_size(index), self.decode_memory(pixels=True))
        return self.to_pixels(self.decode(index, device))

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Map decoded examples from the bank's space to [0, 1] pixels (BankFormatError when the
        bank's `zca_whiten` is singular, so pixels cannot be recovered)."""
        try:
            return self.normalization.invert(x).clamp_(0.0, 1.0)
        except torch.linalg.LinAlgError as e:
            raise BankFormatError(f"tensor 'zca_whiten': singular, so decoded examples cannot be mapped back "
                                  f"to pixels (spec section 5 needs it invertible): {e}") from None

    def decode_memory(self, pixels: bool = False) -> DecodeMemory:
        """Working memory a decode allocates beyond the stored tensors (spec 4.7): `prepared` bytes
        once per device (int8 tensors dequantised included), `per_example` bytes for each example of
        a batch. pixels=True: for `decode_pixels` (with ZCA, the binary64 inversion of the whitening
        matrix)."""
        return decode_memory(self.kind, self.tensors, self.image_shape, self.normalization.uses_zca, pixels)

    def _batch_size(self, index: torch.Tensor | Sequence[int] | slice | None) -> int:
        if index is None:
            return len(self)
        if isinstance(index, slice):
            return len(range(*index.indices(len(self))))
        return int(torch.as_tensor(index).numel())

    def _check_decode_memory(self, n: int, memory: DecodeMemory) -> None:
        limit = decode_limit()
        needed = memory.for_examples(n)
        if needed > limit:
            batch = memory.max_batch(limit)
            advice = (f"decode at most {batch} examples at a time" if batch else
                      "this bank cannot be decoded within the limit")
            raise DecodeMemoryError(
                f"decoding {n} examples needs {format_bytes(needed)} of working memory ("
                f"{format_bytes(memory.prepared)} once + {format_bytes(memory.per_example)} per example), over the "
                f"limit of {format_bytes(limit)} (${DECODE_LIMIT_ENV}): {advice}")

    @property
    def quantized(self) -> bool:
        """Whether any stored tensor of the kind is 8-bit (spec 2.6)."""
        return any(self.tensors[name].dtype == torch.int8 for name in self.tensor_names)

    @property
    def tensor_names(self) -> tuple[str, ...]:
        """The kind's stored tensors (memory: bases, addresses), without scales and zero points."""
        return get_parameterization(self.kind).tensor_names

    def storage_dtypes(self) -> dict[str, str]:
        """The storage dtype of each of the kind's tensors: f32, f16, bf16, int8 (one scale) or
        int8-row (a scale per row), as `compressdata quantize` and `--storage-dtype` name them."""
        return storage_dtypes(self.tensors, self.tensor_names)

    def float_tensors(self) -> dict[str, torch.Tensor]:
        """The kind's tensors as float32 values: int8 ones dequantised (spec 2.6), others converted."""
        return {k: v.to(torch.float32) for k, v in float_values(self.tensors, self.tensor_names).items()}

    @property
    def kind_tensor(self) -> str:
        """The stored tensor whose rows are the examples (memory: `addresses`)."""
        return {"memory": "addresses", "pixels": "pixels", "lowrank": "lowrank_u"}[self.kind]

    def query(self, label_vectors: LabelVectors, n_per_query: int | None = None,
              device: torch.device | str | None = None) -> torch.Tensor:
        """Examples for arbitrary label vectors (spec section 12; kind `memory` only): query q's
        example j = decode(sum_c y_qc * A_c[j]), A_c the address rows of class c in row order.

        label_vectors: [num_classes], [Q, num_classes] or {class name: weight}, finite and >= 0;
        n_per_query: rows j = 0..n-1 (default: all that every weighed class has). Returns float32
        [Q * n, C, H, W], query-major. A one-hot vector returns the class's own examples exactly.
        Raises `QueryError` for bad vectors, n too large, or a `pixels` / `lowrank` bank.
        """
        return query_bank(self, label_vectors, n_per_query, device)

    def query_with_targets(self, label_vectors: LabelVectors, n_per_query: int | None = None,
                           device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`query` plus soft targets [Q * n, num_classes]: the rows' target distributions mixed by
        y and divided by sum(y) (for index labels: y / sum(y))."""
        return query_bank(self, label_vectors, n_per_query, device, with_targets=True)

    def prepared_on(self, device: torch.device | str | None) -> Prepared:
        """The kind's prepared tensors (e.g. upsampled bases) on `device`, computed once per device."""
        device = torch.device(device) if device is not None else next(iter(self.tensors.values())).device
        if device not in self._prepared:
            tensors = {k: v.to(device) for k, v in self.tensors.items()}
            self._prepared[device] = get_parameterization(self.kind).prepare(tensors, self.image_size, self.upsample)
        return self._prepared[device]

    # ---- metadata ---------------------------------------------------------------------------
    def all_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor the file stores: the kind's tensors, labels and ZCA tensors if any."""
        out = {**self.tensors, "labels": self.labels}
        if self.normalization.uses_zca:
            out["zca_mean"] = self.normalization.zca_mean.float()
            out["zca_whiten"] = self.normalization.zca_whiten.float()
        return out

    @property
    def storage(self) -> dict[str, Any]:
        """Storage accounting (spec 3.10): values and bytes stored (labels excluded), label values,
        examples, the images-per-class equivalents and the bytes of every tensor."""
        return storage_accounting(self.kind, self.all_tensors(), self.image_shape, self.num_classes)

    def checksum(self) -> str:
        """SHA-256 content checksum of the stored tensors (spec: sha256-tensors-v1). Computed once and
        kept while the tensors stay the same objects, unmodified (torch counts in-place changes; for
        inference-mode tensors, which it does not count, it is computed at every call)."""
        tensors = [t for _, t in sorted(self.all_tensors().items())]
        if self._checksum is not None:
            kept, value = self._checksum
            same = len(kept) == len(tensors) and all(a is b and v == b._version
                                                     for (a, v), b in zip(kept, tensors, strict=True))
            if same:
                return value
        return self._keep_checksum(tensor_checksum(self.all_tensors()))

    def _keep_checksum(self, value: str) -> str:
        tensors = [t for _, t in sorted(self.all_tensors().items())]
        self._checksum = None if any(t.is_inference() for t in tensors) else ([(t, t._version) for t in tensors], value)
        return value

    def metadata(self) -> dict[str, Any]:
        """The full metadata object written to the file's `__metadata__`."""
        meta: dict[str, Any] = {
            **self.extra_metadata,
            "format": FORMAT_NAME,
            "format_version": f"{FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}",
            "kind": self.kind,
            "image_shape": list(self.image_shape),
            "classes": self.classes,
            "label_space": self.label_space,
            "normalization": self.normalization.to_dict(),
            "recipe": self.recipe.to_dict(),
            "provenance": self.provenance,
            "evaluations": [e.to_dict() for e in self.evaluations],
            "storage": self.storage,
            "checksum": {"algorithm": CHECKSUM_ALGORITHM, "value": self.checksum()},
        }
        if self.kind == "memory":
            meta["upsample"] = self.upsample
        if self.tasks is not None:
            meta["tasks"] = self.tasks
        return meta

    # ---- growing: tasks, extend, merge (spec 3.11) ------------------------------------------
    def task_rows(self, name: str) -> slice:
        """The example rows task `name` added (KeyError naming the known tasks otherwise)."""
        for task in self.tasks or []:
            if task["name"] == name:
                return slice(*task["rows"])
        raise UnknownNameError(f"no task {name!r}; the bank has {[t['name'] for t in self.tasks or []]}")

    def extend(self, name: str, labels: torch.Tensor | Sequence[int], *, classes: Sequence[str] = (),
               **tensors: torch.Tensor) -> MemoryBank:
        """A new bank with task `name` appended: its examples (`tensors` of this bank's kind; for
        memory `addresses` [n, K + k] and optionally `bases` [k, C, h, w], k new bases) and labels;
        `classes` names classes the task adds. Stored values of this bank stay bit-identical; see
        `compressdata.bank.grow.extend_bank`."""
        return extend_bank(self, name, labels, classes=classes, **tensors)

    def quantize(self, dtype: str | dict[str, str]) -> MemoryBank:
        """A new bank storing these values in `dtype` (f32, f16, bf16, int8, int8-row, or per tensor:
        'bases=f16,addresses=int8'), with the decoded error in provenance["quantization"]; see
        `compressdata.bank.quantize.quantize_bank`."""
        from compressdata.bank.quantize import quantize_bank

        return quantize_bank(self, dtype)

    def merge(self, other: MemoryBank, names: tuple[str, str] = ("a", "b")) -> MemoryBank:
        """This bank's examples followed by `other`'s, as one bank; see `compressdata.bank.grow.merge_banks`."""
        return merge_banks(self, other, names=names)

    def add_evaluation(self, result: EvaluationResult) -> None:
        """Record a measured evaluation (kept in the file's metadata)."""
        self.evaluations.append(result)

    # ---- files ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Validate and write the bank atomically (temp file + rename); the tensors are hashed once."""
        if self.dropped_tasks is not None:
            warnings.warn(f"writing {path} without the 1.0 file's 'tasks' value, which is not valid task "
                          f"metadata of format 1.1: {self.dropped_tasks}", stacklevel=2)
        checksum = self._keep_checksum(tensor_checksum(self.all_tensors()))
        write_bank_file(self.all_tensors(), self.metadata(), path, checksum)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> MemoryBank:
        """Read a local bank file: read once, its tensors hashed once and the format checked once, on
        the file's own contents (the bank remembers the verified checksum)."""
        bank_file = load_bank_file(path)
        try:
            bank = cls._from_checked(bank_file.tensors, bank_file.meta)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, BankFormatError):
                raise BankFormatError(e.problem, str(path)) from None
            raise BankFormatError(f"metadata does not describe a valid bank: {e}", str(path)) from None
        bank._keep_checksum(bank_file.checksum)
        return bank

    @classmethod
    def from_parts(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> MemoryBank:
        """Build (and validate) a bank from a file's tensors and metadata object."""
        bank = cls._from_checked(tensors, meta)
        meta = bank.metadata()
        check_metadata_json(meta)
        check_bank(bank.all_tensors(), meta, meta["checksum"]["value"])
        return bank

    @classmethod
    def _from_checked(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> MemoryBank:
        """A bank from file contents `check_bank` accepted, without checking them again."""
        names = PARAMETERIZATIONS[meta["kind"]].tensor_names
        kind_tensors = {n: tensors[n] for n in names}
        quantization = {n: (tensors[scale_name(n)], tensors[zero_point_name(n)])
                        for n in names if scale_name(n) in tensors and zero_point_name(n) in tensors}
        _, h, w = meta["image_shape"]
        tasks, dropped = meta.get("tasks"), None
        if tasks is not None and version_tuple(meta["format_version"]) < TASKS_SINCE:
            try:  # opaque in 1.0 files: kept when it means what 1.1 defines, else dropped (spec 3.11)
                check_tasks(tasks, meta["kind"], tensors, meta["label_space"], len(meta["classes"]))
            except BankFormatError as e:
                tasks, dropped = None, e.problem
        bank = cls.__new__(cls)
        bank._assign(
            kind_tensors,
            labels=tensors["labels"],
            classes=meta["classes"],
            image_size=(h, w),
            upsample=meta.get("upsample", "bilinear"),
            normalization=Normalization.from_dict(meta["normalization"], tensors),
            recipe=TrainingRecipe.from_dict(meta.get("recipe", {})),
            provenance=meta.get("provenance", {}),
            evaluations=[EvaluationResult.from_dict(e) for e in meta.get("evaluations", [])],
            label_space=meta["label_space"],
            tasks=tasks,
            extra_metadata={k: v for k, v in meta.items() if k not in _KNOWN_KEYS},
            quantization=quantization,
        )
        bank.dropped_tasks = dropped
        return bank

    def __repr__(self) -> str:
        return (f"MemoryBank(kind={self.kind!r}, examples={len(self)}, image_shape={self.image_shape}, "
                f"classes={self.num_classes}, ipc_equivalent={self.storage['ipc_equivalent']})")


def decode_memory(kind: str, tensors: Mapping[str, torch.Tensor], image_shape: tuple[int, int, int], zca: bool,
                  pixels: bool = False) -> DecodeMemory:
    """`MemoryBank.decode_memory` of a bank of `kind` storing `tensors` (the kind's, with the scale and
    zero point of each int8 one; their shapes and dtypes are enough) and ZCA or not."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    quantized = [name for name, t in tensors.items() if t.dtype == torch.int8 and "." not in name]
    memory = get_parameterization(kind).decode_memory(shapes, tuple(image_shape[1:]), quantized)
    if not pixels:
        return memory
    d = math.prod(image_shape)
    return DecodeMemory(memory.prepared + (2 * FLOAT64 * d * d if zca else 0),
                        memory.per_example + 4 * d + (2 * FLOAT64 * d if zca else 0))


def storage_dtypes(tensors: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, str]:
    """`MemoryBank.storage_dtypes` of the stored tensors `names` (with their scales; shapes and dtypes
    are enough)."""
    floats = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
    out = {}
    for name in names:
        t = tensors[name]
        if t.dtype == torch.int8:
            out[name] = "int8-row" if tensors[scale_name(name)].numel() > 1 else "int8"
        else:
            out[name] = floats[t.dtype]
    return out


def format_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _infer_kind(given: dict[str, torch.Tensor]) -> str:
    for kind, p in PARAMETERIZATIONS.items():
        if set(given) == set(p.tensor_names):
            return kind
    raise BankFormatError(
        f"cannot tell the kind from tensors {sorted(given)}: give bases+addresses (memory), "
        "pixels (pixels) or lowrank_u+lowrank_v (lowrank)"
    )
