"""Banks that grow: `extend_bank` appends a task's examples, `merge_banks` joins two banks.

Both keep every stored value of the banks they start from bit-identical and record task boundaries
in the `tasks` metadata (spec 3.11): per task its name, classes, example rows and, for kind memory,
the bases it added. For kind memory a task's addresses are 0 on bases added after it, so old
examples decode to the same values however many bases later tasks add. Storage is recomputed from
the tensors, so it stays exact (zero address entries that pad old rows count as stored floats).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import torch

from compressdata.errors import BankFormatError, UsageError
from compressdata.params import get_parameterization


class GrowableBank(Protocol):
    """What growing needs of a bank (`MemoryBank` has it; the result is built with the bank's own class)."""

    kind: str
    tensors: dict[str, torch.Tensor]
    labels: torch.Tensor
    label_space: str
    classes: list[str]
    tasks: list[dict[str, Any]] | None
    image_size: tuple[int, int]
    upsample: str
    normalization: Any
    recipe: Any
    provenance: dict[str, Any]
    extra_metadata: dict[str, Any]

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def quantized(self) -> bool: ...

    def hard_labels(self) -> torch.Tensor: ...


Bank = TypeVar("Bank", bound=GrowableBank)


def current_tasks(bank: Bank, name: str) -> list[dict[str, Any]]:
    """The bank's tasks, or one task `name` covering all of it when it records none."""
    if bank.tasks:
        return [dict(t) for t in bank.tasks]
    task: dict[str, Any] = {"name": name, "classes": sorted(set(bank.hard_labels().tolist())),
                            "rows": [0, len(bank)]}
    if bank.kind == "memory":
        task["bases"] = [0, int(bank.tensors["bases"].shape[0])]
    return [task]


def extend_bank(bank: Bank, name: str, labels: torch.Tensor | Sequence[int], *,
                classes: Sequence[str] = (), first_task: str = "task-0",
                **tensors: torch.Tensor) -> Bank:
    """A new bank: `bank` followed by task `name`'s examples.

    tensors: the new examples in `bank`'s kind: memory `addresses` [n, K + k] (columns K.. address
    the k new `bases` [k, C, h, w], optional); pixels `pixels`; lowrank `lowrank_u`, `lowrank_v`.
    New tensors are stored in the dtype of the bank's. labels: the new examples' labels in the
    bank's label space, over the old classes followed by `classes` (new class names; soft labels
    cannot add classes). `first_task` names the existing content when the bank has no tasks yet.
    Evaluations are dropped (they measured the old content).
    """
    _refuse_quantized("extend", bank)
    names = get_parameterization(bank.kind).tensor_names
    allowed = set(names) if bank.kind != "memory" else {"addresses", "bases"}
    required = set(names) - {"bases"}
    if not required <= set(tensors) <= allowed:
        raise UsageError(f"extend: a {bank.kind} bank needs tensors {sorted(required)} (optional "
                         f"{sorted(allowed - required)}), got {sorted(tensors)}")
    if classes and bank.label_space != "index":
        raise UsageError(f"extend: new classes need index labels; this bank has {bank.label_space!r} labels")
    if any(name == t["name"] for t in bank.tasks or []) or (not bank.tasks and name == first_task):
        raise UsageError(f"extend: the bank already has a task named {name!r}")
    old = bank.tensors
    new = {k: v.detach().to("cpu", old[k].dtype) for k, v in tensors.items()}
    if bank.kind == "memory":
        grown = _grow_memory(old, new)
    else:
        grown = {k: torch.cat([old[k], new[k]]) for k in names}
    new_labels = _labels(labels, bank.label_space)
    n_new = get_parameterization(bank.kind).num_examples(new)
    if new_labels.shape[0] != n_new:
        raise UsageError(f"extend: {n_new} new examples but {new_labels.shape[0]} labels")
    tasks = current_tasks(bank, first_task)
    hard = new_labels if bank.label_space == "index" else new_labels.argmax(dim=1)
    task: dict[str, Any] = {"name": name, "classes": sorted(set(hard.tolist())),
                            "rows": [len(bank), len(bank) + n_new]}
    if bank.kind == "memory":
        task["bases"] = [int(old["bases"].shape[0]), int(grown["bases"].shape[0])]
    return _rebuild(bank, grown, torch.cat([bank.labels, new_labels]), bank.classes + list(classes),
                    tasks + [task], bank.provenance)


def _grow_memory(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    bases, addresses = old["bases"], old["addresses"]
    added = new.get("bases", bases[:0])
    if added.dim() != 4 or tuple(added.shape[1:]) != tuple(bases.shape[1:]):
        raise UsageError(f"extend: new bases must be [k, {', '.join(map(str, bases.shape[1:]))}], "
                         f"got {list(added.shape)}")
    k_total = bases.shape[0] + added.shape[0]
    rows = new["addresses"]
    if rows.dim() != 2 or rows.shape[1] != k_total:
        raise UsageError(f"extend: new addresses must be [n, {k_total}] (K={bases.shape[0]} old + "
                         f"{added.shape[0]} new bases), got {list(rows.shape)}")
    padding = addresses.new_zeros(addresses.shape[0], added.shape[0])
    return {"bases": torch.cat([bases, added]), "addresses": torch.cat([torch.cat([addresses, padding], 1), rows])}


def merge_banks(a: Bank, b: Bank, names: tuple[str, str] = ("a", "b")) -> Bank:
    """One bank holding a's examples then b's, with the tasks of both (a bank without tasks becomes
    one task named by `names`).

    Defined when both have the same kind, image shape, normalisation (ZCA tensors included), label
    space, stored dtypes and, for memory, upsampling and base resolution; for lowrank the same rank.
    memory: bases concatenated, addresses block-diagonal (a's rows are 0 on b's bases and the other
    way round); pixels and lowrank: concatenated. Index labels: b's classes missing from a are
    appended and b's labels remapped; soft labels need identical class lists.
    """
    _refuse_quantized("merge", a, b)
    _check_mergeable(a, b)
    if a.label_space == "index":
        classes = a.classes + [c for c in b.classes if c not in a.classes]
        remap = torch.tensor([classes.index(c) for c in b.classes], dtype=torch.int64)
        labels = torch.cat([a.labels, remap[b.labels]])
    else:
        classes, remap = a.classes, torch.arange(b.num_classes)
        labels = torch.cat([a.labels, b.labels])
    if a.kind == "memory":
        ka, kb = a.tensors["bases"].shape[0], b.tensors["bases"].shape[0]
        aa, ab = a.tensors["addresses"], b.tensors["addresses"]
        tensors = {"bases": torch.cat([a.tensors["bases"], b.tensors["bases"]]),
                   "addresses": torch.cat([torch.cat([aa, aa.new_zeros(aa.shape[0], kb)], 1),
                                           torch.cat([ab.new_zeros(ab.shape[0], ka), ab], 1)])}
    else:
        tensors = {k: torch.cat([a.tensors[k], b.tensors[k]]) for k in a.tensors}
    tasks_a, tasks_b = current_tasks(a, names[0]), current_tasks(b, names[1])
    clash = sorted({t["name"] for t in tasks_a} & {t["name"] for t in tasks_b})
    if clash:
        raise UsageError(f"merge: both banks have task(s) {clash}; rename them (bank.tasks) or pass other names")
    for t in tasks_b:
        t["classes"] = sorted(int(remap[c]) for c in t["classes"])
        t["rows"] = [r + len(a) for r in t["rows"]]
        if a.kind == "memory":
            t["bases"] = [k + ka for k in t["bases"]]
    provenance = {"merged": [a.provenance, b.provenance]}
    return _rebuild(a, tensors, labels, classes, tasks_a + tasks_b, provenance)


def _refuse_quantized(what: str, *banks: GrowableBank) -> None:
    """Growing keeps stored values bit-identical, which an 8-bit tensor's shared scale cannot promise."""
    if any(bank.quantized for bank in banks):
        raise UsageError(f"{what}: the bank stores 8-bit tensors, whose shared scales new examples would change; "
                         "grow the float bank, then quantise the result (compressdata quantize)")


def _check_mergeable(a: Bank, b: Bank) -> None:
    if a.kind != b.kind:
        raise UsageError(f"merge: the banks differ in kind: {a.kind} vs {b.kind}")
    checks = [("image_shape", a.image_shape, b.image_shape),
              ("label_space", a.label_space, b.label_space),
              ("normalization", a.normalization.to_dict(), b.normalization.to_dict()),
              ("tensor dtypes", {k: v.dtype for k, v in a.tensors.items()},
               {k: v.dtype for k, v in b.tensors.items()})]
    if a.kind == "memory":
        checks += [("upsample", a.upsample, b.upsample),
                   ("base resolution", a.tensors["bases"].shape[1:], b.tensors["bases"].shape[1:])]
    if a.kind == "lowrank":
        checks.append(("rank", a.tensors["lowrank_u"].shape[3], b.tensors["lowrank_u"].shape[3]))
    if a.label_space != "index":
        checks.append(("classes (soft labels)", a.classes, b.classes))
    for what, x, y in checks:
        if x != y:
            raise UsageError(f"merge: the banks differ in {what}: {x} vs {y}")
    if a.normalization.uses_zca and not (torch.equal(a.normalization.zca_whiten, b.normalization.zca_whiten)
                                         and torch.equal(a.normalization.zca_mean, b.normalization.zca_mean)):
        raise UsageError("merge: the banks were whitened with different ZCA tensors")


def _labels(labels: torch.Tensor | Sequence[int], label_space: str) -> torch.Tensor:
    labels = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)
    if label_space == "index":
        if labels.is_floating_point() or labels.dim() != 1:
            raise UsageError(f"labels: expected integer class indices [n], got {labels.dtype} {list(labels.shape)}")
        return labels.to(torch.int64)
    if labels.dim() != 2:
        raise UsageError(f"labels: expected {label_space} [n, num_classes], got {list(labels.shape)}")
    return labels.to(torch.float32)


def _rebuild(bank: Bank, tensors: dict[str, torch.Tensor], labels: torch.Tensor, classes: list[str],
             tasks: list[dict[str, Any]], provenance: dict[str, Any]) -> Bank:
    try:
        return type(bank)(**tensors, labels=labels, classes=classes, image_size=bank.image_size,
                          upsample=bank.upsample, normalization=bank.normalization, recipe=bank.recipe,
                          provenance=provenance, label_space=bank.label_space, tasks=tasks,
                          extra_metadata=bank.extra_metadata)
    except BankFormatError as e:
        raise UsageError(f"the grown bank would be invalid: {e}") from None
