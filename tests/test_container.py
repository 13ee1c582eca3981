"""The one container of every file compressdata writes, and banks hashed and checked once per load and save."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch

from compressdata import MemoryBank, Normalization, load_memory_bank
from compressdata.bank import format as bank_format
from compressdata.bank import io as bank_io
from compressdata.bank import memory_bank as memory_bank_module
from compressdata.bank.checksum import tensor_checksum
from compressdata.bank.io import BANK_FILE, read_bank_header
from compressdata.cli import main
from compressdata.container import FileKind, canonical_json, read_file, read_header, read_tensors, write_file
from compressdata.distiller.checkpoint import CHECKPOINT
from compressdata.distiller.experts import EXPERT
from compressdata.distiller.teacher import TEACHER
from compressdata.errors import BankFormatError, CheckpointError, FileFormatError, MissingFileError
from compressdata.evaluate.full_data import FULL_DATA_FILE
from compressdata.summary import describe_bank

RUN_KINDS = {"checkpoint": CHECKPOINT, "expert": EXPERT, "teacher": TEACHER, "reference": FULL_DATA_FILE}


def _meta(kind: FileKind) -> dict:
    return {"format": kind.format, "version": kind.version, "note": "caf\u00e9 \u2713", "values": [1, 2.5]}


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a": torch.randn(3, 4, generator=g), "b": torch.arange(6).view(2, 3),
            "rng": torch.zeros(5, dtype=torch.uint8)}


def _metadata_entries(path) -> dict[str, str]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n])["__metadata__"]


@pytest.mark.parametrize("name", sorted(RUN_KINDS))
def test_every_run_file_kind_round_trips_in_one_canonical_entry(name, tmp_path):
    kind, path = RUN_KINDS[name], tmp_path / "f.safetensors"
    write_file(path, kind, _tensors(), _meta(kind))
    (text,) = _metadata_entries(path).values()
    assert list(_metadata_entries(path)) == [kind.key] and text == canonical_json(_meta(kind))
    tensors, meta = read_file(path, kind)
    assert meta == _meta(kind) and tensors.keys() == _tensors().keys()
    assert all(torch.equal(tensors[k], v) for k, v in _tensors().items())
    assert torch.equal(read_tensors(path, kind, ["b"])["b"], _tensors()["b"])
    assert read_header(path, kind).shapes()["a"] == ("F32", (3, 4))
    assert [p.name for p in tmp_path.iterdir()] == ["f.safetensors"]  # no temporary left


@pytest.mark.parametrize("name", sorted(RUN_KINDS))
def test_every_run_file_kind_is_checked_on_read(name, tmp_path):
    """Another kind's file, the wrong format or version, a damaged or foreign file: a typed error of the
    kind naming the file, before any tensor is used."""
    kind, path = RUN_KINDS[name], tmp_path / "f.safetensors"
    error = kind.error
    other = CHECKPOINT if kind is not CHECKPOINT else TEACHER
    write_file(path, other, _tensors(), _meta(other))
    with pytest.raises(error, match=f"has no '{kind.key}' entry") as info:
        read_file(path, kind)
    assert info.value.path == str(path)
    for meta, fragment in (({**_meta(kind), "format": "something.else"}, "expected format"),
                           ({**_meta(kind), "version": 2}, f"version {kind.version}, got"),
                           ({**_meta(kind), "version": True}, "version True")):
        write_file(path, kind, _tensors(), meta)
        with pytest.raises(error, match=fragment):
            read_file(path, kind)
        with pytest.raises(error, match=fragment):
            read_tensors(path, kind, ["a"])
    write_file(path, kind, _tensors(), _meta(kind))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(error, match="do not fit"):
        read_file(path, kind)
    path.write_bytes(b"\x80\x04junk" * 10)
    with pytest.raises(error, match="torch.save/pickle"):
        read_file(path, kind)
    with pytest.raises(MissingFileError, match=f"no such {kind.what}"):
        read_file(tmp_path / "absent.safetensors", kind)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(error, match="not a regular file"):
        read_file(tmp_path / "fifo", kind)


def test_run_file_errors_are_checkpoint_errors():
    assert all(k.error is CheckpointError for k in (CHECKPOINT, EXPERT, TEACHER))
    assert FULL_DATA_FILE.error is FileFormatError and issubclass(BANK_FILE.error, FileFormatError)


def _bank() -> MemoryBank:
    g = torch.Generator().manual_seed(1)
    return MemoryBank(bases=torch.rand(4, 1, 7, 7, generator=g), addresses=torch.rand(12, 4, generator=g),
                      labels=torch.arange(12) % 3, classes=["a", "b", "c"], image_size=(14, 14),
                      normalization=Normalization([0.5], [0.25]))


class Calls:
    """Counts the calls of the hashing and the full format check, wherever they are called from."""

    def __init__(self, monkeypatch):
        self.hashes = self.checks = 0

        def hashing(tensors):
            self.hashes += 1
            return tensor_checksum(tensors)

        def checking(*args, **kwargs):
            self.checks += kwargs.get("values", True)
            return bank_format.check_bank(*args, **kwargs)

        for module in (bank_format, memory_bank_module):
            monkeypatch.setattr(module, "tensor_checksum", hashing)
        for module in (bank_io, memory_bank_module):
            monkeypatch.setattr(module, "check_bank", checking)

    def take(self) -> tuple[int, int]:
        counts = (self.hashes, self.checks)
        self.hashes = self.checks = 0
        return counts


def test_a_bank_is_hashed_and_checked_once_per_load_and_save(tmp_path, monkeypatch):
    path = tmp_path / "bank.safetensors"
    bank = _bank()
    calls = Calls(monkeypatch)
    bank.save(path)
    assert calls.take() == (1, 1)
    loaded = load_memory_bank(path)
    assert calls.take() == (1, 1)
    assert loaded.checksum() == bank.checksum() and loaded.metadata()["checksum"]["value"] == bank.checksum()
    assert calls.take() == (0, 0)  # the verified checksum is kept
    assert main(["validate", str(path)]) == 0
    assert calls.take() == (1, 1)
    assert main(["inspect", str(path)]) == 0
    assert calls.take() == (0, 0)  # the header alone


def test_the_kept_checksum_follows_changes_to_the_tensors(tmp_path):
    bank = _bank()
    before = bank.checksum()
    bank.tensors["addresses"].mul_(2.0)  # in place
    assert bank.checksum() != before and bank.checksum() == tensor_checksum(bank.all_tensors())
    bank.labels = torch.flip(bank.labels, [0])  # a new tensor
    assert bank.checksum() == tensor_checksum(bank.all_tensors())
    bank.save(tmp_path / "b.safetensors")
    assert load_memory_bank(tmp_path / "b.safetensors").checksum() == bank.checksum()
    with torch.inference_mode():  # tensors whose in-place changes torch does not count
        pixels = torch.rand(2, 1, 4, 4)
        made = MemoryBank(pixels=pixels, labels=[0, 1], classes=["a", "b"])
        before = made.checksum()
        pixels.add_(1.0)
        assert made.checksum() != before and made.checksum() == tensor_checksum(made.all_tensors())
        made.save(tmp_path / "inference.safetensors")
    assert load_memory_bank(tmp_path / "inference.safetensors").checksum() == made.checksum()


def test_a_bank_header_is_checked_without_the_tensor_values(tmp_path):
    path = tmp_path / "bank.safetensors"
    bank = _bank()
    bank.save(path)
    header = read_bank_header(path)
    assert {k: (t.device.type, tuple(t.shape)) for k, t in header.tensors.items()} == {
        "bases": ("meta", (4, 1, 7, 7)), "addresses": ("meta", (12, 4)), "labels": ("meta", (12,))}
    assert header.meta == bank.metadata()
    meta = bank.metadata()
    meta["storage"]["examples"] = 13  # a rule on the shapes: refused from the header
    write_file(path, BANK_FILE, bank.all_tensors(), meta)
    with pytest.raises(BankFormatError, match="storage.examples") as info:
        read_bank_header(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize("dtype", ["f16", "int8", "bases=int8-row,addresses=int8"])
def test_inspect_from_the_header_reports_what_the_loaded_bank_does(dtype, tmp_path, capsys):
    """The header-only report equals the loaded bank's, but for the examples per class and the checksum's
    verification, whatever the storage dtypes (8-bit scales and zero points included)."""
    path = tmp_path / "bank.safetensors"
    _bank().quantize(dtype).save(path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    bank = load_memory_bank(path)
    recorded = f"{bank.checksum()} (as recorded; compressdata validate verifies it)"
    counts = ", ".join(f"{name} (4)" for name in bank.classes)
    assert out == describe_bank(bank).replace(counts, ", ".join(bank.classes)).replace(bank.checksum(), recorded) + "\n"
    assert "8-bit" in out and (dtype == "f16") == ("int8" not in out)

