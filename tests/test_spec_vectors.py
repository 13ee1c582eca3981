"""The library against the spec's test vectors (spec/memory-bank.md section 11, spec/vectors/).

The expected values were computed by tools/make_spec_vectors.py with numpy from the spec's text,
not by the library; here every valid vector must load and decode to them, every invalid one must
be refused with the spec's rule, and the files on disk must equal a fresh regeneration.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch

from compressdata import BankFormatError, MemoryBank, load_memory_bank, save_memory_bank

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "spec" / "vectors"
SPEC = ROOT / "spec" / "memory-bank.md"
ATOL = 1e-6

DOCS = {p.stem: json.loads(p.read_text()) for p in sorted(VECTORS.glob("*.json"))}
VALID = sorted(name for name, doc in DOCS.items() if doc["valid"])
INVALID = sorted(name for name, doc in DOCS.items() if not doc["valid"])


def expected(block: dict) -> np.ndarray:
    return np.asarray(block["values"], dtype=np.float32).reshape(block["shape"])


def assert_close(actual: torch.Tensor, block: dict, what: str) -> None:
    want = expected(block)
    got = actual.detach().cpu().numpy()
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}, expected float32"
    assert list(got.shape) == block["shape"], f"{what}: shape {list(got.shape)}, expected {block['shape']}"
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    assert err <= ATOL, f"{what}: max abs error {err:.3g} > {ATOL}"


def test_vectors_cover_the_spec() -> None:
    """Each kind, both soft label spaces, F16, BF16 and I8 (per tensor and per row), ds > 1 in both
    modes, ZCA, earlier versions and a newer minor."""
    valid = [DOCS[n] for n in VALID]
    assert {d["kind"] for d in valid} == {"memory", "pixels", "lowrank"}
    assert {d["label_space"] for d in valid} == {"index", "probabilities", "logits"}
    headers = {n: _header(VECTORS / DOCS[n]["file"]) for n in VALID}
    dtypes = {e["dtype"] for h in headers.values() for k, e in h.items() if k != "__metadata__"}
    assert {"F32", "F16", "BF16", "I64", "I8"} <= dtypes
    scales = [e["shape"] for h in headers.values() for k, e in h.items() if k.endswith(".scale")]
    assert [1] in scales and any(s[0] > 1 for s in scales), "8-bit vectors per tensor and per row"
    assert {"1.0", "1.1"} <= {d["format_version"] for d in valid}, "files of earlier versions"
    upsampled = {DOCS[n]["upsample"] for n in VALID
                 if DOCS[n]["kind"] == "memory" and DOCS[n]["image_shape"][1:] != headers[n]["bases"]["shape"][2:]}
    assert upsampled == {"bilinear", "nearest"}
    assert any("zca_whiten" in h for h in headers.values())
    assert any(d["format_version"] != "1.0" for d in valid)
    assert len(INVALID) >= 7


def _load_vector(name: str, path: Path) -> MemoryBank:
    """Load a valid vector (silently: the 1.0 file's opaque 'tasks' only warn when written again)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_memory_bank(path)


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_decodes_as_specified(name: str) -> None:
    doc = DOCS[name]
    path = VECTORS / doc["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == doc["sha256_file"]
    bank = _load_vector(name, path)

    assert bank.kind == doc["kind"]
    assert list(bank.image_shape) == doc["image_shape"]
    assert len(bank) == doc["num_examples"]
    assert bank.classes == doc["classes"]
    assert bank.label_space == doc["label_space"]
    if doc["kind"] == "memory":
        assert bank.upsample == doc["upsample"]

    assert_close(bank.decode(), doc["decoded"], "decode()")
    assert_close(bank.decode_pixels(), doc["pixels"], "decode_pixels()")
    reverse = torch.arange(len(bank) - 1, -1, -1)  # a batch in another order decodes the same rows
    rows = {"shape": doc["decoded"]["shape"], "values": expected(doc["decoded"])[reverse.numpy()].ravel()}
    assert_close(bank.decode(reverse), rows, "decode(reversed index)")

    labels = bank.labels.numpy()
    assert list(labels.shape) == doc["labels"]["shape"]
    if doc["label_space"] == "index":
        assert labels.dtype == np.int64 and labels.ravel().tolist() == doc["labels"]["values"]
    else:
        assert labels.dtype == np.float32 and np.array_equal(labels, expected(doc["labels"]))
    assert bank.hard_labels().tolist() == doc["hard_labels"]

    assert bank.checksum() == doc["checksum"]["value"]
    assert bank.metadata()["checksum"] == doc["checksum"]
    assert bank.storage == doc["storage"]


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_round_trips(name: str, tmp_path: Path) -> None:
    """Writing a loaded vector gives the same bytes (canonical layout) or, for a newer minor
    version, the same tensors with the unknown keys preserved."""
    doc = DOCS[name]
    source = VECTORS / doc["file"]
    bank = _load_vector(name, source)
    out = tmp_path / doc["file"]
    legacy_tasks = name == "memory_1_0_opaque_tasks"
    with pytest.warns(UserWarning, match="without the 1.0 file's 'tasks'") if legacy_tasks else nullcontext():
        save_memory_bank(bank, out)
    if doc["resave_identical"]:
        assert out.read_bytes() == source.read_bytes()
    again = load_memory_bank(out)
    assert again.checksum() == doc["checksum"]["value"]
    original = _meta(_header(source))
    written = _meta(_header(out))
    unknown = set(original) - {"format", "format_version", "kind", "image_shape", "upsample", "classes",
                               "label_space", "normalization", "recipe", "provenance", "evaluations",
                               "storage", "checksum", "tasks"}
    assert {k: written.get(k) for k in unknown} == {k: original[k] for k in unknown}
    assert written["recipe"] == original["recipe"] and written["provenance"] == original["provenance"]


@pytest.mark.parametrize("name", INVALID)
def test_invalid_vector_is_refused_with_its_rule(name: str) -> None:
    doc = DOCS[name]
    path = VECTORS / doc["file"]
    with pytest.raises(BankFormatError) as info:
        load_memory_bank(path)
    assert info.value.path == str(path), "the error must name the file"
    assert doc["message_contains"] in info.value.problem, (
        f"rule R{doc['rule']} ({doc['description']}): expected a message containing "
        f"{doc['message_contains']!r}, got {info.value.problem!r}")
    assert f"**R{doc['rule']}.**" in SPEC.read_text()


def test_spec_rules_are_numbered_without_gaps() -> None:
    numbers = [int(n) for n in re.findall(r"^- \*\*R(\d+)\.\*\*", SPEC.read_text(), flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1))
    assert {DOCS[n]["rule"] for n in INVALID} <= set(numbers)


def test_vectors_equal_a_fresh_regeneration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("make_spec_vectors", ROOT / "tools" / "make_spec_vectors.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_spec_vectors", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    module.write(tmp_path)
    fresh = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    on_disk = {p.name: p.read_bytes() for p in VECTORS.iterdir() if p.name != "README.md"}
    assert sorted(fresh) == sorted(on_disk)
    changed = [name for name in fresh if fresh[name] != on_disk[name]]
    assert not changed, f"spec/vectors is stale; run python tools/make_spec_vectors.py ({changed})"


def _header(path: Path) -> dict:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n])


def _meta(header: dict) -> dict:
    return json.loads(header["__metadata__"]["compressdata"])
