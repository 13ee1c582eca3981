"""Files of format 1.0 and 1.1 read by the 1.2 reader (spec section 8): the 1.1 test vectors as
published and banks written by compressdata at format 1.1 load, decode as before, keep their
checksum, and are written again as 1.2 with the byte members of storage."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from compressdata import load_memory_bank, save_memory_bank
from compressdata.bank.format import BYTES_STORAGE_KEYS

LEGACY = Path(__file__).resolve().parent.parent / "spec" / "vectors-1.1"
VECTORS = {p.stem: json.loads(p.read_text()) for p in sorted(LEGACY.glob("*.json"))}
WRITTEN = json.loads((LEGACY / "written" / "banks.json").read_text())


def _load(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_memory_bank(path)


def _resave(bank, tmp_path: Path):
    out = tmp_path / "again.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 1.0 file's opaque 'tasks' is dropped with a warning
        save_memory_bank(bank, out)
    return load_memory_bank(out), json.loads(_header(out)["__metadata__"]["compressdata"])


def _header(path: Path) -> dict:
    data = path.read_bytes()
    return json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])


def test_the_legacy_set_is_complete():
    assert len(VECTORS) >= 15 and {d["format_version"] for d in VECTORS.values()} == {"1.0", "1.1"}
    assert {b["kind"] for b in WRITTEN.values()} == {"memory", "pixels", "lowrank"}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_a_1_1_vector_reads_as_it_did(name: str, tmp_path: Path):
    doc = VECTORS[name]
    path = LEGACY / doc["file"]
    bank = _load(path)
    meta = json.loads(_header(path)["__metadata__"]["compressdata"])
    assert not set(BYTES_STORAGE_KEYS) & set(meta["storage"]), "a 1.1 file records no byte members"
    want = np.asarray(doc["decoded"]["values"], dtype=np.float32).reshape(doc["decoded"]["shape"])
    assert np.abs(bank.decode().numpy().astype(np.float64) - want).max() <= 1e-6
    assert bank.checksum() == doc["checksum"]["value"]
    storage = bank.storage
    assert {k: storage[k] for k in doc["storage"]} == doc["storage"]
    assert storage["bytes_stored"] == sum(storage["tensor_bytes"][n] for n in bank.tensor_names)
    again, written = _resave(bank, tmp_path)
    assert written["format_version"] == "1.2" and written["storage"] == storage
    assert again.checksum() == doc["checksum"]["value"] and torch.equal(again.decode(), bank.decode())


@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_a_bank_written_at_1_1_reads_as_it_did(name: str, tmp_path: Path):
    record = WRITTEN[name]
    bank = _load(LEGACY / "written" / record["file"])
    assert (bank.kind, len(bank), bank.checksum()) == (record["kind"], record["examples"], record["checksum"])
    assert {k: bank.storage[k] for k in record["storage"]} == record["storage"]
    x = bank.decode().double()
    assert float(x.sum()) == pytest.approx(record["decoded_sum"], rel=1e-6, abs=1e-6)
    assert float(x.square().sum()) == pytest.approx(record["decoded_sum_of_squares"], rel=1e-6)
    again, written = _resave(bank, tmp_path)
    assert written["format_version"] == "1.2" and set(BYTES_STORAGE_KEYS) <= set(written["storage"])
    assert again.checksum() == record["checksum"] and again.tasks == bank.tasks
    assert torch.equal(again.decode(), bank.decode())
