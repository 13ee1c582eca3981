"""Regenerate spec/query-vectors/queries.json: generalised queries (spec section 12) with expected values.

Independent of the library on purpose: the expected examples come from the bank vectors' own
expected decoded values (spec/vectors/NAME.json, section 11) mixed by linearity (spec 12.3) in
binary64 with numpy, and rounded to float32; the targets from section 6 and 12.4. Deterministic.

    python tools/make_query_vectors.py [--out spec/query-vectors/queries.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BANK_VECTORS = ROOT / "spec" / "vectors"
DEFAULT_OUT = ROOT / "spec" / "query-vectors" / "queries.json"

# (bank vector, label vector, n_per_query): answered queries.
VALID = [
    ("memory_bilinear_ds2", [1.0, 0.0], 2),
    ("memory_bilinear_ds2", [0.0, 1.0], 1),
    ("memory_bilinear_ds2", [0.25, 0.75], 2),
    ("memory_bilinear_ds2", [2.0, 0.0], 2),
    ("memory_bilinear_ds4_bf16_probabilities", [1.0, 0.0, 0.0], 2),
    ("memory_bilinear_ds4_bf16_probabilities", [0.5, 0.5, 0.0], 2),
    ("memory_bilinear_ds4_bf16_probabilities", [0.2, 0.3, 0.5], 1),
    ("memory_bilinear_ds4_bf16_probabilities", [0.0, 0.0, 1.0], 1),
]
# (bank vector, label vector, n_per_query, error): queries a reader must refuse (spec 12.7).
INVALID = [
    ("memory_bilinear_ds4_bf16_probabilities", [1.0, 0.0, 0.0], 3, "n_exceeds_rows"),
    ("memory_bilinear_ds4_bf16_probabilities", [0.5, 0.0, 0.5], 2, "n_exceeds_rows"),
    ("memory_bilinear_ds2", [1.0], 1, "wrong_length"),
    ("memory_bilinear_ds2", ["NaN", 1.0], 1, "not_finite"),
    ("memory_bilinear_ds2", [1.0, "Infinity"], 1, "not_finite"),
    ("memory_bilinear_ds2", [-1.0, 2.0], 1, "negative"),
    ("memory_bilinear_ds2", [0.0, 0.0], 1, "no_positive_entry"),
    ("memory_bilinear_ds2", [1.0, 0.0], 0, "bad_n"),
    ("pixels_f32", [1.0, 0.0, 0.0], 1, "not_memory"),
]


def _f32_list(a: np.ndarray) -> list[float]:
    """float32 values as the shortest decimals that read back to the same float32."""
    return [float(str(v)) for v in a.astype(np.float32).ravel()]


def _targets(doc: dict[str, Any]) -> np.ndarray:
    """Target distributions of every row (spec section 6), binary64 [N, num_classes]."""
    n_classes = len(doc["classes"])
    labels = np.asarray(doc["labels"]["values"], dtype=np.float64).reshape(doc["labels"]["shape"])
    if doc["label_space"] == "index":
        return np.eye(n_classes)[labels.astype(np.int64)]
    if doc["label_space"] == "probabilities":
        return labels
    raise ValueError(f"no query vector uses {doc['label_space']} labels")


def answer(doc: dict[str, Any], y: list[float], n: int) -> dict[str, Any]:
    """The expected examples and targets of one query (spec 12.2-12.4)."""
    decoded = np.asarray(doc["decoded"]["values"], dtype=np.float64).reshape(doc["decoded"]["shape"])
    hard = np.asarray(doc["hard_labels"])
    rows = [np.flatnonzero(hard == c) for c in range(len(doc["classes"]))]
    support = [c for c, w in enumerate(y) if w > 0]
    if n > min(len(rows[c]) for c in support):
        raise ValueError(f"n={n} exceeds the rows of {support}")
    x = sum(y[c] * decoded[rows[c][:n]] for c in support)
    t = sum(y[c] * _targets(doc)[rows[c][:n]] for c in support) / math.fsum(y)
    return {"examples": {"shape": list(x.shape), "values": _f32_list(x)},
            "targets": {"shape": list(t.shape), "values": _f32_list(t)}}


def build() -> dict[str, Any]:
    """The whole queries.json document."""
    docs = {name: json.loads((BANK_VECTORS / f"{name}.json").read_text())
            for name in sorted({v[0] for v in VALID + INVALID})}
    return {
        "description": "generalised queries (spec/memory-bank.md section 12) on the bank vectors of "
                       "spec/vectors; compare examples and targets with absolute tolerance 1e-5",
        "queries": [{"bank": bank, "vector": y, "n_per_query": n, **answer(docs[bank], y, n)}
                    for bank, y, n in VALID],
        "invalid": [{"bank": bank, "vector": y, "n_per_query": n, "error": error}
                    for bank, y, n, error in INVALID],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
