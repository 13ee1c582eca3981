"""Every rule on which a reader must reject a bank file (spec/memory-bank.md section 10, R1-R60):
a `BankFormatError` (a ValueError) whose message names the file and the problem.

The bad files are made by editing valid files at the byte / JSON level with the small safetensors
packer below (independent of the library's writer), so each test breaks one rule and nothing else.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import random
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save as safetensors_save

from compressdata import (
    BankFormatError,
    EvaluationResult,
    MemoryBank,
    Normalization,
    load_memory_bank,
    save_memory_bank,
)
from compressdata.bank.format import MAX_HEADER_BYTES

N, K, CLASSES = 12, 4, ["tee", "trouser", "bag"]
NUMPY_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8"}
KIND_TENSORS = {"memory": ("bases", "addresses"), "pixels": ("pixels",), "lowrank": ("lowrank_u", "lowrank_v")}
ROW_TENSOR = {"memory": "addresses", "pixels": "pixels", "lowrank": "lowrank_u"}  # one row per example

# ---- a small safetensors packer: entries are {name: {"dtype", "shape", "raw"}} ------------------


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """A safetensors file -> (header JSON object, payload bytes)."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def frame(header: Any, payload: bytes = b"", pad: int = 0, text: bytes | None = None) -> bytes:
    """(header object or raw header text, payload) -> safetensors bytes; `pad` trailing spaces."""
    text = (json.dumps(header).encode() if text is None else text) + b" " * pad
    return struct.pack("<Q", len(text)) + text + payload


def unpack(data: bytes) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """A bank file -> (tensor entries with their raw bytes, bank metadata object)."""
    header, payload = split(data)
    meta = json.loads(header.pop("__metadata__")["compressdata"])
    entries = {
        name: {"dtype": e["dtype"], "shape": e["shape"], "raw": payload[e["data_offsets"][0] : e["data_offsets"][1]]}
        for name, e in header.items()
    }
    return entries, meta


def pack(entries: dict[str, dict[str, Any]], meta: Any, *, metadata_text: str | None = None,
         fix: bool = True) -> bytes:
    """Entries laid out contiguously in name order, plus metadata.

    fix: recompute the derived metadata (storage, checksum) from the entries, so that an edited
    tensor breaks only the rule under test.
    """
    if fix:
        meta = {**meta, "storage": spec_storage(entries, meta),
                "checksum": {"algorithm": "sha256-tensors-v1", "value": spec_checksum(entries)}}
    text = metadata_text if metadata_text is not None else json.dumps(meta, sort_keys=True)
    header: dict[str, Any] = {"__metadata__": {"compressdata": text}}
    payload = b""
    for name in sorted(entries):
        e = entries[name]
        header[name] = {"dtype": e["dtype"], "shape": e["shape"],
                        "data_offsets": [len(payload), len(payload) + len(e["raw"])]}
        payload += e["raw"]
    return frame(header, payload)


def spec_checksum(entries: dict[str, dict[str, Any]]) -> str:
    """sha256-tensors-v1 as the spec states it: per tensor in name order, name, dtype, shape, bytes."""
    h = hashlib.sha256()
    for name in sorted(entries):
        e = entries[name]
        h.update(f"{name}\n{e['dtype']}\n{','.join(str(d) for d in e['shape'])}\n".encode())
        h.update(e["raw"])
    return h.hexdigest()


def spec_storage(entries: dict[str, dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Storage accounting (spec 3.10): the kind's floats, label values, examples, IPC equivalent, and
    (1.2) the budget bytes (per-row scales and zero points included), every tensor's bytes and the
    8-bit and float32 image equivalents."""
    names = [n for n in KIND_TENSORS[meta["kind"]] if n in entries]
    floats = sum(math.prod(entries[n]["shape"]) for n in names)
    c, h, w = meta["image_shape"]
    image = c * h * w * len(meta["classes"])
    parts = [p for n in names for p in (n, f"{n}.scale", f"{n}.zero_point") if p in entries]
    budget = sum(len(entries[p]["raw"]) for p in parts if p in names or math.prod(entries[p]["shape"]) > 1)
    return {"floats_stored": floats,
            "label_values": math.prod(entries["labels"]["shape"]) if "labels" in entries else 0,
            "examples": entries[ROW_TENSOR[meta["kind"]]]["shape"][0] if ROW_TENSOR[meta["kind"]] in entries else 0,
            "ipc_equivalent": round(floats / image, 6),
            "bytes_stored": budget,
            "tensor_bytes": {name: len(e["raw"]) for name, e in entries.items()},
            "ipc_equivalent_uint8": round(budget / image, 6),
            "ipc_equivalent_float32": round(budget / (4 * image), 6)}


def raw(values: Any, dtype: str) -> bytes:
    return np.ascontiguousarray(values, dtype=NUMPY_DTYPES[dtype]).tobytes()


def values(entry: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(entry["raw"], dtype=NUMPY_DTYPES[entry["dtype"]]).copy()


def entry(dtype: str, shape: list[int], fill: float = 0.5) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "raw": raw(np.full(shape, fill), dtype)}


def set_path(obj: Any, dotted: str, value: Any) -> None:
    """Set obj[a][b]... for a dotted path; numeric parts index lists."""
    *parents, last = dotted.split(".")
    for part in parents:
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    obj[int(last) if isinstance(obj, list) else last] = value


def edit_meta(data: bytes, dotted: str, value: Any) -> bytes:
    entries, meta = unpack(data)
    set_path(meta, dotted, value)
    return pack(entries, meta, fix=False)


def edit_tensors(data: bytes, **changes: dict[str, Any] | None) -> bytes:
    """Replace (or, with None, remove) tensor entries; storage and checksum are recomputed."""
    entries, meta = unpack(data)
    for name, new in changes.items():
        if new is None:
            del entries[name]
        else:
            entries[name] = new
    return pack(entries, meta)


# ---- fixtures and the assertion ----------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    """Valid files of each kind, as `save_memory_bank` writes them."""
    g = torch.Generator().manual_seed(0)
    zca = Normalization([0.3], [0.4], zca_regularization=0.1, zca_mean=torch.randn(9, generator=g),
                        zca_whiten=torch.eye(9) + 0.1 * torch.randn(9, 9, generator=g))
    banks = {
        # K=4 bases at 14x14 for 28x28 images, N=12, 3 classes
        "memory": MemoryBank(
            bases=torch.randn(K, 1, 14, 14, generator=g), addresses=torch.randn(N, K, generator=g),
            labels=torch.arange(N) % 3, classes=CLASSES, image_size=(28, 28),
            normalization=Normalization([0.286], [0.353]),
            provenance={"source": {"dataset": "fashion-mnist", "split": "train"}},
            evaluations=[EvaluationResult("convnet", [0.80, 0.82], "fashion-mnist/test", 300)]),
        "pixels-soft": MemoryBank(pixels=torch.randn(6, 1, 5, 5, generator=g),
                                  labels=torch.randn(6, 3, generator=g).softmax(dim=1), classes=CLASSES),
        "lowrank": MemoryBank(lowrank_u=torch.randn(6, 1, 5, 2, generator=g),
                              lowrank_v=torch.randn(6, 1, 2, 5, generator=g),
                              labels=torch.arange(6) % 3, classes=CLASSES),
        "zca": MemoryBank(pixels=torch.randn(4, 1, 3, 3, generator=g), labels=[0, 1, 2, 0], classes=CLASSES,
                          normalization=zca),
    }
    folder = tmp_path_factory.mktemp("valid")
    out = {}
    for name, bank in banks.items():
        save_memory_bank(bank, folder / f"{name}.safetensors")
        out[name] = (folder / f"{name}.safetensors").read_bytes()
    return out


@pytest.fixture(scope="module")
def valid(files) -> bytes:
    return files["memory"]


def rejected(tmp_path: Path, data: bytes, *fragments: str) -> str:
    """Write `data`, load it, and check the BankFormatError names the file and every fragment."""
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(BankFormatError) as info:
        load_memory_bank(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert info.value.path == str(path) and message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def loads(tmp_path: Path, data: bytes) -> MemoryBank:
    path = tmp_path / "ok.safetensors"
    path.write_bytes(data)
    bank = load_memory_bank(path)
    assert bank.decode().shape == (len(bank), *bank.image_shape)
    return bank


# ---- the packer, and the writer's canonical bytes (spec 2.4, 3.1) -------------------------------


@pytest.mark.parametrize("name", ["memory", "pixels-soft", "lowrank", "zca"])
def test_packer_reproduces_the_spec_checksum_and_storage(tmp_path, files, name):
    entries, meta = unpack(files[name])
    assert spec_checksum(entries) == meta["checksum"]["value"]
    assert spec_storage(entries, meta) == meta["storage"]
    assert loads(tmp_path, pack(entries, meta)).checksum() == meta["checksum"]["value"]


def test_writer_produces_the_canonical_bytes(tmp_path):
    g = torch.Generator().manual_seed(1)
    bank = MemoryBank(bases=torch.randn(3, 1, 4, 4, generator=g).half(),
                      addresses=torch.randn(5, 3, generator=g).bfloat16(),
                      labels=torch.randn(5, 3, generator=g).softmax(dim=1), classes=["é", "b", "c"],
                      image_size=(8, 8), provenance={"note": "naïve ☃"})
    path = tmp_path / "bank.safetensors"
    save_memory_bank(bank, path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    text = data[8 : 8 + n]
    assert n % 8 == 0 and text == text.rstrip(b" ") + b" " * (n - len(text.rstrip(b" ")))
    header = json.loads(text)
    meta_text = header["__metadata__"]["compressdata"]
    meta = json.loads(meta_text)
    assert meta_text == json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    rank = {"I64": 0, "F32": 1, "BF16": 2, "F16": 3}
    order = sorted((k for k in header if k != "__metadata__"), key=lambda k: (rank[header[k]["dtype"]], k))
    assert order == ["labels", "addresses", "bases"]
    canonical = {"__metadata__": {"compressdata": meta_text}}
    offset = 0
    for name in order:
        size = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
        canonical[name] = {"dtype": header[name]["dtype"], "shape": header[name]["shape"],
                           "data_offsets": [offset, offset + size]}
        offset += size
    assert text.rstrip(b" ") == json.dumps(canonical, separators=(",", ":")).encode()
    assert offset == len(data) - 8 - n


# ---- not a bank at all ---------------------------------------------------------------------------


def test_empty_file_r1(tmp_path):
    rejected(tmp_path, b"", "truncated: 0 bytes, a safetensors file needs at least 8")


@pytest.mark.parametrize("cut, fragments", [
    pytest.param(1, ("truncated: 1 bytes", "needs at least 8"), id="R1-1"),
    pytest.param(7, ("truncated: 7 bytes", "needs at least 8"), id="R1-7"),
    pytest.param(8, ("truncated: header says",), id="R3-8"),
    pytest.param(60, ("truncated: header says",), id="R3-60"),
    pytest.param(-1, ("data_offsets", "do not fit"), id="R14-last-byte"),
    pytest.param(-200, ("data_offsets", "do not fit"), id="R14-200"),
    pytest.param(-3000, ("data_offsets", "do not fit"), id="R14-3000"),
])
def test_truncated_file(tmp_path, valid, cut, fragments):
    rejected(tmp_path, valid[:cut], *fragments)


@pytest.mark.parametrize("seed, size", [(0, 7), (1, 100), (2, 4096)])
def test_random_bytes(tmp_path, seed, size):
    rejected(tmp_path, random.Random(seed).randbytes(size))


def test_plausible_length_then_random_bytes_r4(tmp_path):
    body = random.Random(3).randbytes(64)
    rejected(tmp_path, struct.pack("<Q", 64) + body, "header is not JSON")


@pytest.mark.parametrize("text", [
    pytest.param(b'{"a": \xff\xfe}', id="not-utf8"),
    pytest.param(b'{"a": 1', id="unterminated"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-too-deep"),
    pytest.param(b'{"a": ' + b"9" * 5000 + b"}", id="integer-too-long"),
    pytest.param(b'{"x": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, '
                 b'"x": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}', id="duplicate-key"),
])
def test_header_not_json_r4(tmp_path, text):
    rejected(tmp_path, frame(None, text=text), "header is not JSON")


def test_header_json_that_is_not_an_object_r5(tmp_path):
    rejected(tmp_path, frame([1, 2, 3]), "header is not a JSON object")


def test_png_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28), mode="L").save(buf, format="PNG")
    assert buf.getvalue()[:4] == b"\x89PNG"
    rejected(tmp_path, buf.getvalue(), "header")


def test_plain_safetensors_file_without_bank_metadata_r6(tmp_path):
    data = safetensors_save({"bases": torch.zeros(2, 1, 4, 4), "addresses": torch.zeros(3, 2)})
    rejected(tmp_path, data, "not a memory bank", "has no 'compressdata' entry")


class _Payload:
    """Creates its marker file when (and only when) it is unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "torch.save legacy", "pickle"])
def test_pickle_file_is_rejected_and_never_unpickled(tmp_path, writer):
    marker = tmp_path / "unpickled.marker"
    obj = {"bases": torch.randn(4, 1, 14, 14), "addresses": torch.randn(N, K), "trap": _Payload(str(marker))}
    path = tmp_path / "bank.pt"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=writer == "torch.save")
    # The file really is a trap: unpickling it creates the marker.
    if writer == "pickle":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(BankFormatError) as info:
        load_memory_bank(path)
    assert str(info.value).startswith(f"{path}: ")
    assert not marker.exists()


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_memory_bank(tmp_path / "nope.safetensors")


# ---- container: __metadata__, header entries, offsets (R6-R17) ----------------------------------


def test_metadata_entry_missing_r6(tmp_path, valid):
    header, payload = split(valid)
    header["__metadata__"] = {"author": "someone"}
    rejected(tmp_path, frame(header, payload), "has no 'compressdata' entry")
    del header["__metadata__"]
    rejected(tmp_path, frame(header, payload), "has no 'compressdata' entry")


def test_metadata_entry_not_a_string_r7(tmp_path, valid):
    header, payload = split(valid)
    header["__metadata__"]["compressdata"] = json.loads(header["__metadata__"]["compressdata"])
    rejected(tmp_path, frame(header, payload), "expected a JSON string")


def test_metadata_not_json_r8(tmp_path, valid):
    entries, meta = unpack(valid)
    rejected(tmp_path, pack(entries, meta, metadata_text='{"format": ', fix=False), "is not valid JSON")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_metadata_with_non_finite_numbers_r8(tmp_path, valid, literal):
    entries, meta = unpack(valid)
    meta["recipe"]["lr"] = "__LR__"
    text = json.dumps(meta).replace('"__LR__"', literal)
    rejected(tmp_path, pack(entries, meta, metadata_text=text, fix=False), "is not valid JSON")


@pytest.mark.parametrize("text, got", [("[]", "list"), ('"bank"', "str"), ("3", "int"), ("null", "NoneType")])
def test_metadata_not_an_object_r9(tmp_path, valid, text, got):
    entries, meta = unpack(valid)
    rejected(tmp_path, pack(entries, meta, metadata_text=text, fix=False), "expected a JSON object, got", got)


@pytest.mark.parametrize("edit", ["no-dtype", "extra-only", "not-object"])
def test_header_entry_malformed_r10(tmp_path, valid, edit):
    header, payload = split(valid)
    if edit == "no-dtype":
        del header["labels"]["dtype"]
    elif edit == "extra-only":
        header["labels"] = {"kind": "I64"}
    else:
        header["labels"] = [0, 96]
    rejected(tmp_path, frame(header, payload), "tensor 'labels'", "header entry needs dtype, shape and data_offsets")


@pytest.mark.parametrize("dtype", ["F64", "I32", "U8", "BOOL", "float32", 7, None, [], {"F32": 4}])
def test_dtype_outside_the_format_r11(tmp_path, valid, dtype):
    header, payload = split(valid)
    header["bases"]["dtype"] = dtype
    rejected(tmp_path, frame(header, payload), "tensor 'bases'", f"dtype {dtype!r} not allowed")


@pytest.mark.parametrize("shape", [[N, -K], [N, "4"], "12x4", [N, K, 0.5], [N, 2**40], None])
def test_malformed_shape_r12(tmp_path, valid, shape):
    header, payload = split(valid)
    header["addresses"]["shape"] = shape
    rejected(tmp_path, frame(header, payload), "tensor 'addresses'", "invalid shape")


@pytest.mark.parametrize("offsets", [[0.0, 192.0], [0, 96, 192], [0], "0-192", None])
def test_malformed_data_offsets_r13(tmp_path, valid, offsets):
    header, payload = split(valid)
    header["addresses"]["data_offsets"] = offsets
    rejected(tmp_path, frame(header, payload), "tensor 'addresses'", "invalid data_offsets")


def ordered_tensors(data: bytes) -> list[str]:
    header, _ = split(data)
    return [n for _, n in sorted((e["data_offsets"][0], n) for n, e in header.items() if n != "__metadata__")]


def shifted(valid: bytes, name: str, begin: int, end: int) -> bytes:
    header, payload = split(valid)
    b, e = header[name]["data_offsets"]
    header[name]["data_offsets"] = [b + begin, e + end]
    return frame(header, payload)


def test_data_offsets_out_of_range_r14(tmp_path, valid):
    rejected(tmp_path, shifted(valid, ordered_tensors(valid)[-1], 8, 8), "data_offsets", "do not fit")


def test_data_offsets_negative_r14(tmp_path, valid):
    first = ordered_tensors(valid)[0]
    rejected(tmp_path, shifted(valid, first, -8, -8), f"tensor '{first}'", "do not fit")


def test_data_offsets_size_differs_from_dtype_and_shape_r14(tmp_path, valid):
    rejected(tmp_path, shifted(valid, "bases", 0, -4), "tensor 'bases'", "do not fit")


def test_data_offsets_overlap_r15(tmp_path, valid):
    rejected(tmp_path, shifted(valid, ordered_tensors(valid)[1], -4, -4), "tensor data ranges overlap or leave gaps")


def test_data_offsets_gap_r15(tmp_path, valid):
    header, payload = split(valid)
    last = ordered_tensors(valid)[-1]
    b, e = header[last]["data_offsets"]
    header[last]["data_offsets"] = [b + 8, e + 8]
    rejected(tmp_path, frame(header, payload[:b] + bytes(8) + payload[b:]), "tensor data ranges overlap or leave gaps")


def test_trailing_bytes_after_the_data_r16(tmp_path, valid):
    rejected(tmp_path, valid + bytes(16), "tensor data covers")


def test_boolean_in_a_shape_r12(tmp_path, valid):
    header, payload = split(valid)
    header["bases"]["shape"] = [K, True, 14, 14]  # numel is unchanged, but a boolean is not an integer
    rejected(tmp_path, frame(header, payload), "tensor 'bases'", "invalid shape")


def test_boolean_in_data_offsets_r13(tmp_path, valid):
    header, payload = split(valid)
    first = next(n for n, e in header.items() if n != "__metadata__" and e["data_offsets"][0] == 0)
    header[first]["data_offsets"][0] = False  # equals 0, but is not a JSON integer
    rejected(tmp_path, frame(header, payload), f"tensor '{first}'", "invalid data_offsets")


def test_non_string_member_of_metadata_r7(tmp_path, valid):
    header, payload = split(valid)
    header["__metadata__"]["note"] = 5
    rejected(tmp_path, frame(header, payload), "__metadata__['note']: expected a JSON string")


def test_metadata_not_an_object_r6(tmp_path, valid):
    header, payload = split(valid)
    header["__metadata__"] = [header["__metadata__"]["compressdata"]]
    rejected(tmp_path, frame(header, payload), "has no 'compressdata' entry")


@pytest.mark.parametrize("member", ["offset", "dtype "])
def test_header_entry_with_another_member_r10(tmp_path, valid, member):
    header, payload = split(valid)
    header["labels"][member] = 0
    rejected(tmp_path, frame(header, payload), "tensor 'labels'", "exactly these members")


def test_header_entry_repeating_a_member_r4(tmp_path, valid):
    header, payload = split(valid)
    text = json.dumps(header).replace('"dtype": "I64"', '"dtype": "I64", "dtype": "I64"', 1)
    rejected(tmp_path, frame(None, payload, text=text.encode()), "header is not JSON", "duplicate key(s) ['dtype']")


def test_header_length_field_over_the_limit_r2(tmp_path, valid):
    rejected(tmp_path, struct.pack("<Q", MAX_HEADER_BYTES + 1) + valid[8:], "exceeds the limit")


def test_real_oversized_header_r2(tmp_path, valid):
    header, payload = split(valid)
    size = len(json.dumps(header).encode())
    rejected(tmp_path, frame(header, payload, pad=MAX_HEADER_BYTES + 1 - size), "exceeds the limit")


def test_header_padded_to_exactly_the_limit_loads(tmp_path, valid):
    assert MAX_HEADER_BYTES == 16 * 1024 * 1024
    header, payload = split(valid)
    size = len(json.dumps(header).encode())
    loads(tmp_path, frame(header, payload, pad=MAX_HEADER_BYTES - size))


# ---- metadata fields (R18-R28, R35, R40, R46-R50, R54-R60) ----------------------------------------


@pytest.mark.parametrize("key", ["format", "format_version", "kind", "image_shape", "classes", "label_space",
                                 "normalization", "storage", "checksum"])
def test_missing_required_metadata_key_r18(tmp_path, valid, key):
    entries, meta = unpack(valid)
    del meta[key]
    rejected(tmp_path, pack(entries, meta, fix=False), "missing required field(s)", f"'{key}'")


@pytest.mark.parametrize("dotted, value, fragment", [
    pytest.param("format", "safetensors", "metadata field 'format'", id="R19"),
    pytest.param("format", ["compressdata.memory-bank"], "metadata field 'format'", id="R19-list"),
    pytest.param("format_version", 1, "metadata field 'format_version'", id="R20-int"),
    pytest.param("format_version", "one.zero", "metadata field 'format_version'", id="R20-words"),
    pytest.param("format_version", "1", "metadata field 'format_version'", id="R20-no-minor"),
    pytest.param("format_version", "1.0.0", "metadata field 'format_version'", id="R20-three-parts"),
    pytest.param("format_version", "1.123456", "metadata field 'format_version'", id="R20-six-digits"),
    pytest.param("format_version", "1.\u0661", "metadata field 'format_version'", id="R20-non-ascii-digit"),
    pytest.param("format_version", "0.9", "is not a released version", id="R22"),
    pytest.param("kind", "wavelet", "metadata field 'kind'", id="R23"),
    pytest.param("kind", ["memory"], "metadata field 'kind'", id="R23-list"),
    pytest.param("image_shape", "1x28x28", "metadata field 'image_shape': expected", id="R24-str"),
    pytest.param("image_shape", [1, 28], "metadata field 'image_shape': expected", id="R24-two"),
    pytest.param("image_shape", [1, 28, 28.0], "metadata field 'image_shape': expected", id="R24-float"),
    pytest.param("image_shape", [True, 28, 28], "metadata field 'image_shape': expected", id="R24-bool"),
    pytest.param("image_shape", [1, 100_000, 28], "outside limits", id="R25-H"),
    pytest.param("image_shape", [65, 28, 28], "outside limits", id="R25-C"),
    pytest.param("classes", "tee,trouser,bag", "expected a list of non-empty strings", id="R26-str"),
    pytest.param("classes", [1, 2, 3], "expected a list of non-empty strings", id="R26-ints"),
    pytest.param("classes", ["tee", "trouser", ""], "expected a list of non-empty strings", id="R26-empty-name"),
    pytest.param("classes", [], "expected 1..100000 classes", id="R27"),
    pytest.param("classes", ["tee", "tee", "bag"], "class names must be unique", id="R28"),
    pytest.param("upsample", "bicubic", "metadata field 'upsample'", id="R35"),
    pytest.param("upsample", None, "metadata field 'upsample'", id="R35-null"),
    pytest.param("label_space", "onehot", "metadata field 'label_space'", id="R40"),
    pytest.param("normalization", [0.286, 0.353], "metadata field 'normalization': expected an object", id="R46"),
    pytest.param("normalization.mean", "0.286", "metadata field 'normalization.mean'", id="R47-str"),
    pytest.param("normalization.mean", [], "metadata field 'normalization.mean'", id="R47-empty"),
    pytest.param("normalization.mean", [True], "metadata field 'normalization.mean'", id="R47-bool"),
    pytest.param("normalization.std", [10**400], "is not valid JSON", id="R8-huge-int"),
    pytest.param("normalization.std", [0.0], "need one entry per channel", id="R48-zero-std"),
    pytest.param("normalization.std", [0.3, 0.3], "need one entry per channel", id="R48-two-channels"),
    pytest.param("normalization.zca", "yes", "metadata field 'normalization.zca'", id="R49"),
    pytest.param("normalization.zca", {"regularization": 10**400}, "is not valid JSON", id="R8-huge"),
    pytest.param("normalization.zca", {"regularization": 0.1}, "normalization declares ZCA but tensor",
                 id="R50"),
    pytest.param("storage", [], "metadata field 'storage': expected an object", id="R54"),
    pytest.param("checksum", "abc", "metadata field 'checksum'", id="R56"),
    pytest.param("checksum.algorithm", "md5", "metadata field 'checksum'", id="R56-md5"),
    pytest.param("recipe", [], "metadata field 'recipe'", id="R58-recipe"),
    pytest.param("provenance", "made by hand", "metadata field 'provenance'", id="R58-provenance"),
    pytest.param("recipe.lr", "fast", "metadata field 'recipe.lr'", id="R59-lr"),
    pytest.param("recipe.epochs", 300.5, "metadata field 'recipe.epochs'", id="R59-epochs"),
    pytest.param("recipe.label_loss", None, "metadata field 'recipe.label_loss'", id="R59-label-loss"),
    pytest.param("recipe.label_temperature", True, "metadata field 'recipe.label_temperature'", id="R59-bool"),
    pytest.param("recipe.width", 16.5, "metadata field 'recipe.width'", id="R59-width"),
    pytest.param("recipe.norm", 3, "metadata field 'recipe.norm'", id="R59-norm"),
    pytest.param("evaluations", {}, "metadata field 'evaluations'", id="R60-object"),
    pytest.param("evaluations.0", "good", "metadata field 'evaluations[0]'", id="R60-entry"),
    pytest.param("evaluations.0.accuracies", [80.0, 82.0], "metadata field 'evaluations[0]'", id="R60-percent"),
    pytest.param("evaluations.0.accuracies", {"a": 0.8}, "metadata field 'evaluations[0]'", id="R60-dict"),
    pytest.param("evaluations.0.accuracies", [10**400], "is not valid JSON", id="R8-huge-accuracy"),
    pytest.param("evaluations.0.epochs", "300", "metadata field 'evaluations[0]'", id="R60-epochs"),
])
def test_metadata_field_of_the_wrong_type_or_value(tmp_path, valid, dotted, value, fragment):
    rejected(tmp_path, edit_meta(valid, dotted, value), fragment)


@pytest.mark.parametrize("version", ["2.0", "10.3"])
def test_newer_major_version_says_to_upgrade_r21(tmp_path, valid, version):
    rejected(tmp_path, edit_meta(valid, "format_version", version), f"format_version {version}",
             "is newer than this reader supports", "upgrade compressdata")


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.37", "01.00"])
def test_any_minor_version_of_major_1_is_accepted(tmp_path, valid, version):
    loads(tmp_path, edit_meta(valid, "format_version", version))


def test_unknown_optional_keys_are_ignored(tmp_path, valid):
    entries, meta = unpack(valid)
    meta["future_field"] = {"nested": [1, 2, 3]}
    meta["recipe"]["warmup_epochs"] = 5
    meta["recipe"]["optimizer"] = "lion"  # unknown recipe values are not the reader's business
    meta["provenance"]["notes"] = "hand-made"
    meta["evaluations"][0]["networks"] = 99  # recomputed from accuracies
    meta["format_version"] = "1.0"  # `tasks` is opaque in 1.0 files (checked from 1.1 on, spec 3.11)
    meta["tasks"] = [{"classes": [0, 1]}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading is silent; only writing the file again drops `tasks`
        bank = loads(tmp_path, pack(entries, meta, fix=False))
    assert bank.metadata()["future_field"] == {"nested": [1, 2, 3]}
    assert bank.evaluations[0].networks == 2
    assert bank.tasks is None and "tasks" in bank.dropped_tasks
    with pytest.warns(UserWarning, match="without the 1.0 file's 'tasks' value"):
        save_memory_bank(bank, tmp_path / "again.safetensors")


# ---- tensors (R29-R45, R51-R53) ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bases", "addresses", "labels"])
def test_missing_tensor_r29(tmp_path, valid, name):
    rejected(tmp_path, edit_tensors(valid, **{name: None}), "requires tensor(s)", f"'{name}'")


@pytest.mark.parametrize("name", ["notes", "pixels", "zca_mean"])
def test_extra_tensor_r30(tmp_path, valid, name):
    rejected(tmp_path, edit_tensors(valid, **{name: entry("F32", [2])}), "unexpected tensor(s)", f"'{name}'")


@pytest.mark.parametrize("name, dtype, fragment", [
    pytest.param("bases", "I64",
                 "tensor 'bases': expected dtype in ['float32', 'float16', 'bfloat16', 'int8'], got int64",
                 id="R31-bases"),
    pytest.param("addresses", "I64", "tensor 'addresses': expected dtype in", id="R31-addresses"),
    pytest.param("labels", "F32", "tensor 'labels': expected dtype in ['int64'], got float32", id="R41"),
])
def test_wrong_dtype(tmp_path, valid, name, dtype, fragment):
    entries, _ = unpack(valid)
    rejected(tmp_path, edit_tensors(valid, **{name: {**entries[name], "dtype": dtype,
                                                     "raw": raw(values(entries[name]), dtype)}}), fragment)


@pytest.mark.parametrize("dotted, value", [pytest.param("image_shape", [1, 10, 10], id="bases-larger-than-image"),
                                           pytest.param("image_shape", [3, 28, 28], id="channels")])
def test_bases_do_not_fit_the_image_shape_r32(tmp_path, valid, dotted, value):
    rejected(tmp_path, edit_meta(valid, dotted, value), "tensor 'bases': expected shape")


def test_bases_not_4d_r32(tmp_path, valid):
    rejected(tmp_path, edit_tensors(valid, bases=entry("F32", [K, 196])), "tensor 'bases': expected shape")


def test_zero_bases_r33(tmp_path, valid):
    rejected(tmp_path, edit_tensors(valid, bases=entry("F32", [0, 1, 14, 14]), addresses=entry("F32", [N, 0])),
             "tensor 'bases': K=0")


def test_k_mismatch_between_bases_and_addresses_r34(tmp_path, valid):
    rejected(tmp_path, edit_tensors(valid, addresses=entry("F32", [N, K + 1])), "tensor 'addresses'",
             f"[N, K={K}] (K from 'bases')", f"got [{N}, {K + 1}]")


def test_pixels_do_not_match_the_image_shape_r36(tmp_path, files):
    rejected(tmp_path, edit_meta(files["pixels-soft"], "image_shape", [1, 5, 6]), "tensor 'pixels': expected shape")


def test_lowrank_u_does_not_match_the_image_shape_r37(tmp_path, files):
    rejected(tmp_path, edit_meta(files["lowrank"], "image_shape", [1, 6, 5]), "tensor 'lowrank_u': expected shape")


def test_lowrank_v_rank_differs_from_u_r38(tmp_path, files):
    rejected(tmp_path, edit_tensors(files["lowrank"], lowrank_v=entry("F32", [6, 1, 3, 5])),
             "tensor 'lowrank_v': expected shape")


def test_no_examples_r39(tmp_path, valid):
    rejected(tmp_path, edit_tensors(valid, addresses=entry("F32", [0, K]), labels=entry("I64", [0])),
             "number of examples N=0")


def test_labels_count_differs_from_examples_r42(tmp_path, valid):
    rejected(tmp_path, edit_tensors(valid, labels={"dtype": "I64", "shape": [N - 1], "raw": raw(np.arange(N - 1) % 3,
                                                                                              "I64")}),
             "tensor 'labels': expected shape", f"[{N}]")


@pytest.mark.parametrize("bad", [3, 99, -1])
def test_labels_out_of_range_r43(tmp_path, valid, bad):
    entries, _ = unpack(valid)
    labels = values(entries["labels"])
    labels[5] = bad
    rejected(tmp_path, edit_tensors(valid, labels={**entries["labels"], "raw": raw(labels, "I64")}),
             f"tensor 'labels': value {bad} outside [0, 3)")


def test_soft_label_space_with_integer_labels_r44(tmp_path, valid):
    rejected(tmp_path, edit_meta(valid, "label_space", "probabilities"),
             "tensor 'labels': expected dtype in ['float32']")


def test_soft_labels_of_the_wrong_shape_r45(tmp_path, files):
    rejected(tmp_path, edit_tensors(files["pixels-soft"], labels=entry("F32", [6, 2])),
             "tensor 'labels': expected shape")


def test_zca_tensor_of_the_wrong_dtype_r51(tmp_path, files):
    entries, _ = unpack(files["zca"])
    f16 = {**entries["zca_mean"], "dtype": "F16", "raw": raw(values(entries["zca_mean"]), "F16")}
    rejected(tmp_path, edit_tensors(files["zca"], zca_mean=f16), "tensor 'zca_mean': expected dtype in")


def test_zca_tensor_of_the_wrong_shape_r52(tmp_path, files):
    rejected(tmp_path, edit_tensors(files["zca"], zca_whiten=entry("F32", [9, 8])),
             "tensor 'zca_whiten': expected shape")


def test_zca_tensors_without_zca_declared_r30(tmp_path, files):
    rejected(tmp_path, edit_meta(files["zca"], "normalization.zca", None), "unexpected tensor(s)", "zca_mean")


@pytest.mark.parametrize("file, name, dtype, bad", [
    ("memory", "bases", "F32", math.nan), ("memory", "addresses", "F32", math.inf),
    ("memory", "addresses", "F32", -math.inf), ("memory", "bases", "F16", math.nan),
    ("memory", "bases", "F16", math.inf), ("pixels-soft", "labels", "F32", math.nan),
    ("zca", "zca_whiten", "F32", math.inf), ("lowrank", "lowrank_v", "F32", math.nan),
])
def test_nan_or_inf_r53(tmp_path, files, file, name, dtype, bad):
    entries, _ = unpack(files[file])
    x = values(entries[name]).astype(NUMPY_DTYPES[dtype])
    x[7] = bad
    rejected(tmp_path, edit_tensors(files[file], **{name: {**entries[name], "dtype": dtype, "raw": raw(x, dtype)}}),
             f"tensor '{name}'", "contains NaN or Inf")


def test_reduced_precision_and_mixed_dtypes_are_accepted(tmp_path, valid):
    """Control for the dtype and NaN tests: F16 bases next to F32 addresses load and decode."""
    entries, _ = unpack(valid)
    f16 = {**entries["bases"], "dtype": "F16", "raw": raw(values(entries["bases"]), "F16")}
    bank = loads(tmp_path, edit_tensors(valid, bases=f16))
    assert bank.tensors["bases"].dtype == torch.float16 and bank.tensors["addresses"].dtype == torch.float32


def test_tensors_in_any_order_are_accepted(tmp_path, valid):
    """Spec 2.4: readers accept any tensor order and JSON formatting (the packer uses name order)."""
    entries, meta = unpack(valid)
    data = pack(entries, meta)
    assert ordered_tensors(data) != ordered_tensors(valid)
    assert loads(tmp_path, data).checksum() == meta["checksum"]["value"]


# ---- derived metadata: storage and checksum (R55, R57) -------------------------------------------


@pytest.mark.parametrize("key", ["floats_stored", "label_values", "examples", "ipc_equivalent"])
def test_storage_mismatch_r55(tmp_path, valid, key):
    _, meta = unpack(valid)
    rejected(tmp_path, edit_meta(valid, f"storage.{key}", meta["storage"][key] * 2),
             f"metadata field 'storage.{key}'", f"expected {meta['storage'][key]}")


def test_checksum_mismatch_from_tampered_tensor_bytes_r57(tmp_path, valid):
    header, payload = split(valid)
    begin = header["addresses"]["data_offsets"][0]
    tampered = bytearray(payload)
    tampered[begin] ^= 0x01  # lowest mantissa bit of addresses[0, 0]: still a finite float
    _, meta = unpack(valid)
    rejected(tmp_path, frame(header, bytes(tampered)), "content checksum mismatch", meta["checksum"]["value"])


def test_checksum_value_edited_r57(tmp_path, valid):
    rejected(tmp_path, edit_meta(valid, "checksum.value", "0" * 64), "content checksum mismatch")
