"""Human-readable summaries of a bank, for `compressdata inspect` and logs."""

from __future__ import annotations

from compressdata.bank.memory_bank import MemoryBank, decode_limit, format_bytes
from compressdata.safe_text import terminal_text


def describe_decode_memory(bank: MemoryBank) -> str:
    """One line: the working memory a decode needs (spec 4.7) and the largest batch within the limit."""
    memory = bank.decode_memory(pixels=True)
    limit = decode_limit()
    batch = min(memory.max_batch(limit), len(bank))
    fits = f"batches of up to {batch} examples" if batch else "not even one example"
    return (f"{format_bytes(memory.prepared)} once + {format_bytes(memory.per_example)} per example "
            f"(decode_pixels); within the {format_bytes(limit)} limit: {fits}")


def describe_bytes(bank: MemoryBank) -> str:
    """One line: the budget bytes and the images per class they equal, the dtypes, the file's data bytes."""
    storage = bank.storage
    dtypes = ", ".join(f"{name} {dtype}" for name, dtype in bank.storage_dtypes().items())
    return (f"{storage['bytes_stored']} stored ({dtypes}) = {storage['ipc_equivalent_uint8']:g} 8-bit or "
            f"{storage['ipc_equivalent_float32']:g} float32 images per class; "
            f"{sum(storage['tensor_bytes'].values())} in all tensors (labels included)")


def describe_bank(bank: MemoryBank) -> str:
    """A multi-line report: kind, shapes, classes, storage, recipe, provenance, evaluations. Text from
    the file is shown with control characters escaped (`compressdata.safe_text.terminal_text`)."""
    storage = bank.storage
    c, h, w = bank.image_shape
    lines = [
        f"kind:          {bank.kind}",
        f"examples:      {len(bank)} of shape [{c}, {h}, {w}] ({bank.label_space} labels)",
        "tensors:       " + ", ".join(
            f"{name} {list(t.shape)} {str(t.dtype).removeprefix('torch.')}" for name, t in bank.all_tensors().items()
        ),
    ]
    if bank.kind == "memory":
        lines.append(f"upsample:      {bank.upsample}")
    per_class = bank.hard_labels().bincount(minlength=bank.num_classes).tolist()
    counts = ", ".join(f"{name} ({k})" for name, k in zip(bank.classes, per_class, strict=True))
    lines += [
        f"classes ({bank.num_classes}): {counts}",
        f"storage:       {storage['floats_stored']} floats = {storage['ipc_equivalent']:g} images per class "
        f"(+ {storage['label_values']} label values)",
        f"bytes:         {describe_bytes(bank)}",
        f"normalization: mean {bank.normalization.mean}, std {bank.normalization.std}"
        + (f", ZCA (reg {bank.normalization.zca_regularization})" if bank.normalization.uses_zca else ""),
        "recipe:        " + ", ".join(f"{k}={v}" for k, v in bank.recipe.to_dict().items()),
        "provenance:    " + (", ".join(f"{k}={v}" for k, v in sorted(bank.provenance.items())) or "(none)"),
        f"decode memory: {describe_decode_memory(bank)}",
        f"checksum:      {bank.checksum()}",
    ]
    for task in bank.tasks or []:
        added = f", bases {task['bases'][0]}..{task['bases'][1] - 1}" if "bases" in task else ""
        if "bases" in task and task["bases"][0] == task["bases"][1]:
            added = ", no new bases"
        names = ", ".join(bank.classes[c] for c in task["classes"])
        lines.append(f"task {task['name']}: rows {task['rows'][0]}..{task['rows'][1] - 1}{added} ({names})")
    if bank.evaluations:
        lines += ["evaluations:"] + [f"  {line}" for e in bank.evaluations for line in e.summary().splitlines()]
    else:
        lines.append("evaluations:   (none recorded)")
    return "\n".join(terminal_text(line) for line in lines)
