"""Human-readable summaries of a bank, for `compressdata inspect` and logs.

`describe_bank` describes a bank in memory; `describe_bank_header` a file from its header alone
(what `compressdata inspect` prints without reading the tensors: no examples per class, and the
checksum as recorded, verified by `compressdata validate` and every load).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch

from compressdata.bank.format import OPTIONAL_TENSORS, TASKS_SINCE, check_tasks, storage_accounting, version_tuple
from compressdata.bank.io import BankHeader
from compressdata.bank.memory_bank import MemoryBank, decode_limit, decode_memory, format_bytes, storage_dtypes
from compressdata.bank.metadata import EvaluationResult, Normalization, TrainingRecipe
from compressdata.errors import BankFormatError
from compressdata.params import PARAMETERIZATIONS
from compressdata.params.base import DecodeMemory
from compressdata.params.quant import scale_name, zero_point_name
from compressdata.safe_text import terminal_text

PROVENANCE_INDENT = 2


def describe_decode_memory(bank: MemoryBank) -> str:
    """One line: the working memory a decode needs (spec 4.7) and the largest batch within the limit."""
    return _decode_memory_line(bank.decode_memory(pixels=True), len(bank))


def describe_bytes(bank: MemoryBank) -> str:
    """One line: the budget bytes and the images per class they equal, the dtypes, the file's data bytes."""
    return _bytes_line(bank.storage, bank.storage_dtypes())


def describe_bank(bank: MemoryBank) -> str:
    """A multi-line report: kind, shapes, classes with their examples, storage, recipe, provenance,
    checksum, tasks, evaluations. Text from the file is shown with control characters escaped
    (`compressdata.safe_text.terminal_text`)."""
    counts = bank.hard_labels().bincount(minlength=bank.num_classes).tolist()
    return _describe(bank.metadata(), bank.all_tensors(), counts, bank.checksum())


def describe_bank_header(header: BankHeader) -> str:
    """`describe_bank` of a file from its checked header alone: the classes without their examples, the
    checksum as recorded (not verified)."""
    recorded = f"{header.meta['checksum']['value']} (as recorded; compressdata validate verifies it)"
    return _describe(header.meta, header.tensors, None, recorded)


def _describe(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], class_counts: list[int] | None,
              checksum: str) -> str:
    kind, classes = meta["kind"], meta["classes"]
    c, h, w = meta["image_shape"]
    storage = storage_accounting(kind, tensors, (c, h, w), len(classes))  # as checked against the recorded
    stored_names = PARAMETERIZATIONS[kind].tensor_names
    order = [*stored_names, *(f(n) for n in stored_names for f in (scale_name, zero_point_name)), *OPTIONAL_TENSORS]
    normalization = Normalization.from_dict(meta["normalization"], dict(tensors))
    zca = meta["normalization"].get("zca") is not None
    recipe = TrainingRecipe.from_dict(meta.get("recipe", {}))
    stored = {name: t for name, t in tensors.items() if name not in OPTIONAL_TENSORS}
    memory = decode_memory(kind, stored, (c, h, w), zca, pixels=True)
    lines = [
        f"kind:          {kind}",
        f"examples:      {storage['examples']} of shape [{c}, {h}, {w}] ({meta['label_space']} labels)",
        "tensors:       " + ", ".join(f"{name} {list(tensors[name].shape)} "
                                      f"{str(tensors[name].dtype).removeprefix('torch.')}"
                                      for name in order if name in tensors),
    ]
    if kind == "memory":
        lines.append(f"upsample:      {meta['upsample']}")
    names = classes if class_counts is None else [f"{n} ({k})" for n, k in zip(classes, class_counts, strict=True)]
    lines += [
        f"classes ({len(classes)}): {', '.join(names)}",
        f"storage:       {storage['floats_stored']} floats = {storage['ipc_equivalent']:g} images per class "
        f"(+ {storage['label_values']} label values)",
        f"bytes:         {_bytes_line(storage, storage_dtypes(tensors, stored_names))}",
        f"normalization: mean {normalization.mean}, std {normalization.std}"
        + (f", ZCA (reg {normalization.zca_regularization})" if zca else ""),
        "recipe:        " + ", ".join(f"{k}={v}" for k, v in recipe.to_dict().items()),
        *_provenance_lines(meta.get("provenance", {})),
        f"decode memory: {_decode_memory_line(memory, storage['examples'])}",
        f"checksum:      {checksum}",
    ]
    for task in _tasks(meta, tensors):
        added = f", bases {task['bases'][0]}..{task['bases'][1] - 1}" if "bases" in task else ""
        if "bases" in task and task["bases"][0] == task["bases"][1]:
            added = ", no new bases"
        task_classes = ", ".join(classes[i] for i in task["classes"])
        lines.append(f"task {task['name']}: rows {task['rows'][0]}..{task['rows'][1] - 1}{added} ({task_classes})")
    evaluations = [EvaluationResult.from_dict(e) for e in meta.get("evaluations", [])]
    if evaluations:
        lines += ["evaluations:"] + [f"  {line}" for e in evaluations for line in e.summary().splitlines()]
    else:
        lines.append("evaluations:   (none recorded)")
    return "\n".join(terminal_text(line) for line in lines)


def bank_json(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """A bank's metadata object and its tensors' dtypes and shapes as indented JSON (ASCII: text from the
    file is escaped), for `compressdata inspect --json`."""
    shapes = {name: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
              for name, t in sorted(tensors.items())}
    return json.dumps({"metadata": meta, "tensors": shapes}, indent=2, sort_keys=True, ensure_ascii=True)


def _provenance_lines(provenance: Any) -> list[str]:
    """The provenance as an indented tree, one value per line (lists of plain values on one line)."""
    if not provenance:
        return ["provenance:    (none)"]
    return ["provenance:", *_tree(provenance, PROVENANCE_INDENT)]


def _tree(value: Any, indent: int) -> list[str]:
    lines = []
    items = value.items() if isinstance(value, Mapping) else enumerate(value)
    for key, item in items:
        nested = bool(item) if isinstance(item, Mapping) else (
            isinstance(item, list) and any(isinstance(v, (Mapping, list)) for v in item))
        label = f"{' ' * indent}{key}:"
        lines += [label, *_tree(item, indent + 2)] if nested else [f"{label} {_plain(item)}"]
    return lines


def _plain(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{}"
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def _tasks(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
    """The tasks to show: a 1.1 bank's (checked), a 1.0 file's when they mean what 1.1 defines (as far as
    a header tells: its rows' labels are not read)."""
    tasks = meta.get("tasks")
    if tasks is None or version_tuple(meta["format_version"]) >= TASKS_SINCE:
        return tasks or []
    try:
        check_tasks(tasks, meta["kind"], tensors, meta["label_space"], len(meta["classes"]), values=False)
    except BankFormatError:
        return []
    return tasks


def _bytes_line(storage: Mapping[str, Any], dtypes: Mapping[str, str]) -> str:
    named = ", ".join(f"{name} {dtype}" for name, dtype in dtypes.items())
    return (f"{storage['bytes_stored']} stored ({named}) = {storage['ipc_equivalent_uint8']:g} 8-bit or "
            f"{storage['ipc_equivalent_float32']:g} float32 images per class; "
            f"{sum(storage['tensor_bytes'].values())} in all tensors (labels included)")


def _decode_memory_line(memory: DecodeMemory, examples: int) -> str:
    limit = decode_limit()
    batch = min(memory.max_batch(limit), examples)
    fits = f"batches of up to {batch} examples" if batch else "not even one example"
    return (f"{format_bytes(memory.prepared)} once + {format_bytes(memory.per_example)} per example "
            f"(decode_pixels); within the {format_bytes(limit)} limit: {fits}")
