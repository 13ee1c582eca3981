"""Generalised queries (spec section 12): examples for arbitrary label vectors through the addresses.

With A_c the address rows of class c (the rows whose hard label is c, in ascending row order), a
label vector y (one number per class) selects the examples x_j = decode(sum_c y_c * A_c[j]),
j = 0..n-1. The decode is linear in the addresses, so a query is the one `memory` decode applied to
mixed address rows; a one-hot y gives class c's own examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from compressdata.errors import QueryError
from compressdata.params import get_parameterization

LabelVectors = torch.Tensor | Sequence[float] | Sequence[Sequence[float]] | Mapping[str, float]


def label_vectors_tensor(label_vectors: LabelVectors, classes: Sequence[str]) -> torch.Tensor:
    """Check label vectors and return them as float32 [Q, num_classes] on the CPU.

    Accepts one vector [num_classes], a batch [Q, num_classes], or a mapping {class name: weight}
    (missing classes weigh 0). Entries must be finite and >= 0, and every vector must have a
    positive entry.
    """
    n = len(classes)
    if isinstance(label_vectors, Mapping):
        unknown = sorted(set(label_vectors) - set(classes))
        if unknown:
            raise QueryError(f"label vector names unknown classes {unknown}; the bank's classes are {list(classes)}")
        index = {name: i for i, name in enumerate(classes)}
        y = torch.zeros(1, n, dtype=torch.float64)
        for name, weight in label_vectors.items():
            y[0, index[name]] = float(weight)
    else:
        try:
            y = torch.as_tensor(label_vectors, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise QueryError(f"label vectors must be numbers shaped [num_classes] or [Q, num_classes]: {e}") from None
        if y.ndim == 1:
            y = y.unsqueeze(0)
    if y.ndim != 2 or y.shape[0] == 0:
        raise QueryError(f"label vectors must have shape [{n}] or [Q, {n}] with Q >= 1; got {list(y.shape)}")
    if y.shape[1] != n:
        raise QueryError(f"label vectors have {y.shape[1]} entries; expected {n}, one per class {list(classes)}")
    bad = ~torch.isfinite(y)
    if bad.any():
        q, c = (int(v) for v in bad.nonzero()[0])
        raise QueryError(f"label vector {q}, entry {c} ({classes[c]!r}) is {float(y[q, c])}; entries must be finite")
    if (y < 0).any():
        q, c = (int(v) for v in (y < 0).nonzero()[0])
        raise QueryError(f"label vector {q}, entry {c} ({classes[c]!r}) is {float(y[q, c])}; entries must be >= 0")
    empty = (y.sum(dim=1) <= 0).nonzero()
    if len(empty):
        raise QueryError(f"label vector {int(empty[0])} is all zeros; a query needs at least one positive entry")
    return y.to(device="cpu", dtype=torch.float32)


def parse_label_vector(text: str, classes: Sequence[str]) -> torch.Tensor:
    """A label vector from text: comma-separated numbers, one per class ("0,0.5,0.5"), or
    comma-separated `class=weight` pairs, the class by name or index ("Sandal=0.5,7=0.5")."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise QueryError(f"empty label vector {text!r}; expected {len(classes)} numbers or class=weight pairs")
    if not any("=" in item for item in items):
        try:
            return label_vectors_tensor([float(item) for item in items], classes)
        except ValueError as e:
            if isinstance(e, QueryError):
                raise
            raise QueryError(f"label vector {text!r}: {e}") from None
    weights: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep:
            raise QueryError(f"label vector {text!r}: item {item!r} is not class=weight (do not mix the two forms)")
        if name not in classes and name.isdigit() and int(name) < len(classes):
            name = classes[int(name)]
        try:
            weights[name] = weights.get(name, 0.0) + float(value)
        except ValueError:
            raise QueryError(f"label vector {text!r}: weight {value!r} of {name!r} is not a number") from None
    return label_vectors_tensor(weights, classes)


def class_rows(hard_labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """For each class c, the int64 indices of the rows whose hard label is c, ascending (A_c)."""
    labels = hard_labels.cpu()
    return [(labels == c).nonzero().flatten() for c in range(num_classes)]


def rows_available(y: torch.Tensor, rows: Sequence[torch.Tensor]) -> int:
    """r_y: the fewest rows among the classes a query vector y [num_classes] weighs (y_c > 0)."""
    return min(len(rows[c]) for c in y.nonzero().flatten().tolist())


def _gather_index(y: torch.Tensor, rows: Sequence[torch.Tensor], n: int, classes: Sequence[str]) -> torch.Tensor:
    """int64 [num_classes, n]: row j of class c at [c, j]; 0 for classes that no query weighs."""
    for q in range(y.shape[0]):
        r_y = rows_available(y[q], rows)
        if n > r_y:
            short = [classes[c] for c in y[q].nonzero().flatten().tolist() if len(rows[c]) < n]
            raise QueryError(f"query {q} asks for {n} examples per query, but classes {short} have only "
                             f"{r_y} address rows; n_per_query must be in 1..{r_y}")
    used = (y > 0).any(dim=0)
    index = torch.zeros(len(rows), n, dtype=torch.int64)
    for c, r in enumerate(rows):
        if used[c]:
            index[c] = r[:n]
    return index


def mix_rows(values: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """[Q * n, ...]: row (q, j) = sum_c y[q, c] * values[index[c, j]], in float32.

    Zero weights add exact zeros, so a one-hot y returns the selected rows bit for bit.
    """
    gathered = values.to(torch.float32)[index.to(values.device)]  # [num_classes, n, ...]
    weights = y.to(gathered.device).reshape(*y.shape, *([1] * (gathered.ndim - 1)))  # [Q, classes, 1, ...]
    mixed = (weights * gathered.unsqueeze(0)).sum(dim=1)  # [Q, n, ...]
    return mixed.reshape(-1, *gathered.shape[2:])


def query_bank(bank: Any, label_vectors: LabelVectors, n_per_query: int | None = None,
               device: torch.device | str | None = None,
               with_targets: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Examples [Q * n, C, H, W] (query q's n examples are rows q*n .. q*n+n-1) for label vectors,
    decoded by the bank's one `memory` decode; with `with_targets`, also their soft targets
    [Q * n, num_classes]: sum_c y_c * t(A_c[j]) / sum_c y_c with t the rows' target distributions.

    n_per_query: rows j = 0..n-1 of every weighed class (default: r_y, all available; the same n for
    every query, so the default is the smallest r_y over the queries).
    """
    if bank.kind != "memory":
        raise QueryError(f"queries need a bank of kind 'memory' (shared bases + address rows); this bank is "
                         f"{bank.kind!r}, whose examples are not linear in a per-class address matrix")
    y = label_vectors_tensor(label_vectors, bank.classes)
    rows = class_rows(bank.hard_labels(), bank.num_classes)
    if n_per_query is None:
        n_per_query = min(rows_available(y[q], rows) for q in range(y.shape[0]))
    if isinstance(n_per_query, bool) or not isinstance(n_per_query, int) or n_per_query < 1:
        raise QueryError(f"n_per_query must be an int >= 1; got {n_per_query!r}")
    index = _gather_index(y, rows, n_per_query, bank.classes)
    prepared = bank.prepared_on(device)
    mixed = mix_rows(prepared["addresses"], y, index)
    images = get_parameterization("memory").decode_prepared({**prepared, "addresses": mixed})
    if not with_targets:
        return images
    targets = mix_rows(bank.soft_targets(), y, index) / y.sum(dim=1).repeat_interleave(n_per_query)[:, None]
    return images, targets.to(images.device)
