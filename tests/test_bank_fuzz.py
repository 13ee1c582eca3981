"""Corruption fuzzing: a damaged bank file either loads as a bank that decodes (the damage happened to
be harmless) or raises `BankFormatError` naming the file. Never any other exception, never a hang.
"""

from __future__ import annotations

import copy
import json
import struct
import tempfile
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from compressdata import (
    BankFormatError,
    EvaluationResult,
    MemoryBank,
    Normalization,
    load_memory_bank,
    save_memory_bank,
)
from compressdata.bank.quantize import quantize_bank
from compressdata.summary import describe_bank

FUZZ = settings(max_examples=200, deadline=timedelta(seconds=2), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CLASSES = ["tee", "trouser", "bag"]
PROVENANCE = {"source": {"dataset": "fashion-mnist", "split": "train"}, "method": {"name": "rtp", "K": 4}}


def small_banks() -> dict[str, MemoryBank]:
    """One small bank per kind / label space / dtype / normalisation the format allows."""
    g = torch.Generator().manual_seed(0)
    zca = Normalization([0.3], [0.4], zca_regularization=0.1, zca_mean=torch.randn(9, generator=g),
                        zca_whiten=torch.eye(9) + 0.1 * torch.randn(9, 9, generator=g))
    return {
        "memory-f16": MemoryBank(
            bases=torch.randn(4, 1, 6, 6, generator=g).half(), addresses=torch.randn(10, 4, generator=g),
            labels=torch.arange(10) % 3, classes=CLASSES, image_size=(12, 12),
            normalization=Normalization([0.286], [0.353]), provenance=PROVENANCE,
            evaluations=[EvaluationResult("convnet", [0.8, 0.82], "fashion-mnist/test", 300)]),
        "pixels-probabilities": MemoryBank(
            pixels=torch.randn(6, 1, 5, 5, generator=g).bfloat16(),
            labels=torch.randn(6, 3, generator=g).softmax(dim=1), classes=CLASSES, provenance=PROVENANCE),
        "lowrank-logits": MemoryBank(
            lowrank_u=torch.randn(6, 1, 5, 1, generator=g), lowrank_v=torch.randn(6, 1, 1, 5, generator=g),
            labels=torch.randn(6, 3, generator=g), label_space="logits", classes=CLASSES),
        "pixels-zca": MemoryBank(pixels=torch.randn(4, 1, 3, 3, generator=g), labels=torch.tensor([0, 1, 2, 0]),
                                 classes=CLASSES, normalization=zca),
        "memory-int8": quantize_bank(MemoryBank(
            bases=torch.randn(3, 1, 4, 4, generator=g), addresses=torch.randn(6, 3, generator=g),
            labels=torch.arange(6) % 3, classes=CLASSES, image_size=(8, 8)), "int8,addresses=int8-row"),
    }


def valid_files() -> dict[str, bytes]:
    """The bytes of each small bank as `save_memory_bank` writes them."""
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, bank in small_banks().items():
            path = Path(folder) / f"{name}.safetensors"
            save_memory_bank(bank, path)
            out[name] = path.read_bytes()
    return out


FILES = valid_files()


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "bank.safetensors"


def load_or_reject(path: Path, data: bytes) -> str:
    """The property: BankFormatError naming the file, or a bank whose every example decodes."""
    path.write_bytes(data)
    try:
        bank = load_memory_bank(path)
    except BankFormatError as e:
        assert e.path == str(path) and str(e).startswith(f"{path}: "), str(e)
        return "rejected"
    x = bank.decode()
    assert x.dtype == torch.float32 and x.shape == (len(bank), *bank.image_shape)
    assert bool(torch.isfinite(x).all())
    assert bank.hard_labels().shape == (len(bank),)
    describe_bank(bank).encode("utf-8")  # printable: no unpaired surrogate
    again = path.with_suffix(".again.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 1.0 file's opaque tasks are dropped with a warning
        save_memory_bank(bank, again)
    assert load_memory_bank(again).checksum() == bank.checksum()
    return "loaded"


def header_end(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


# ---- byte-level corruption -----------------------------------------------------------------------


@st.composite
def byte_corruption(draw, files: dict[str, bytes]) -> bytes:
    """1-3 of: flip a byte, truncate, insert or delete bytes; anywhere, or aimed at one region."""
    data = bytearray(files[draw(st.sampled_from(sorted(files)))])
    end = header_end(bytes(data))
    for _ in range(draw(st.integers(1, 3))):
        lo, hi = draw(st.sampled_from([(0, len(data)), (0, 8), (8, end), (end, len(data))]))
        hi = max(min(hi, len(data)), 1)
        lo = min(lo, hi - 1)
        pos = draw(st.integers(lo, hi - 1)) if data else 0
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


@given(data=st.data())
@FUZZ
def test_random_byte_corruption_is_rejected_or_harmless(target, data):
    event(load_or_reject(target, data.draw(byte_corruption(FILES))))


def test_every_truncation_point_is_rejected(target):
    valid = FILES["memory-f16"]
    for cut in range(len(valid)):
        assert load_or_reject(target, valid[:cut]) == "rejected", cut


@pytest.mark.parametrize("name", ["memory-f16", "pixels-probabilities"])
def test_every_flipped_data_byte_is_rejected(target, name):
    """Tensor bytes are covered by the checksum: no change to them can pass."""
    valid = FILES[name]
    for pos in range(header_end(valid), len(valid)):
        damaged = bytearray(valid)
        damaged[pos] ^= 0xFF
        assert load_or_reject(target, bytes(damaged)) == "rejected", pos


def test_trailing_or_missing_bytes_are_rejected(target):
    for valid in FILES.values():
        assert load_or_reject(target, valid + b"\x00") == "rejected"
        assert load_or_reject(target, valid[:-1]) == "rejected"


# ---- JSON-level corruption: the safetensors header and the bank metadata ------------------------

PLAUSIBLE = ["memory", "pixels", "lowrank", "index", "probabilities", "logits", "bilinear", "nearest", "1.0", "1.9",
             "2.0", "F32", "F16", "BF16", "I64", "sha256-tensors-v1", 0, 1, 2, 3, -1, 4, 6, 12, 2**31, 2**63,
             10**400, 0.5, 1e308, [1, 12, 12], [0, 0], []]
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70) | st.floats()
           | st.text(max_size=10) | st.sampled_from(PLAUSIBLE).map(copy.deepcopy))  # fresh lists: edits mutate
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside nested dicts / lists."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        out.append((*prefix, key))
        out.extend(paths(child, (*prefix, key)))
    return out


@st.composite
def json_corruption(draw, files: dict[str, bytes]) -> bytes:
    """1-3 edits (replace, delete, add a key) anywhere in the header entries or the bank metadata,
    then a well-formed re-framing, so the reader's checks beyond JSON syntax are exercised."""
    data = files[draw(st.sampled_from(sorted(files)))]
    end = header_end(data)
    header = json.loads(data[8:end])
    meta = json.loads(header.pop("__metadata__")["compressdata"])
    doc = {"header": header, "meta": meta}
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(doc)))
        *parent_path, key = path
        parent = doc
        for part in parent_path:
            parent = parent[part]
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if op == "replace" or path == ("header",):
            parent[key] = draw(JSON_VALUES)
        elif op == "delete":
            del parent[key]
        elif isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=8))] = draw(JSON_VALUES)
        elif isinstance(parent[key], list):
            parent[key].insert(draw(st.integers(0, len(parent[key]))), draw(JSON_VALUES))
        else:
            parent[key] = draw(JSON_VALUES)
    header = doc.get("header", {})
    if isinstance(header, dict) and "meta" in doc:
        header = {**header, "__metadata__": {"compressdata": json.dumps(doc["meta"])}}
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data[end:]


@given(data=st.data())
@FUZZ
def test_random_json_corruption_is_rejected_or_harmless(target, data):
    event(load_or_reject(target, data.draw(json_corruption(FILES))))


@given(data=st.data())
@FUZZ
def test_json_then_byte_corruption_is_rejected_or_harmless(target, data):
    damaged = data.draw(json_corruption(FILES))
    event(load_or_reject(target, data.draw(byte_corruption({"damaged": damaged}))))


def test_harmless_metadata_edits_load(target):
    """The property can also be met by loading: edits outside checked fields keep a usable bank."""
    data = FILES["memory-f16"]
    end = header_end(data)
    header = json.loads(data[8:end])
    meta = json.loads(header["__metadata__"]["compressdata"])
    meta["provenance"]["method"]["K"] = 99
    meta["classes"] = ["shirt", "trouser", "bag"]
    meta["upsample"] = "nearest"
    header["__metadata__"]["compressdata"] = json.dumps(meta)
    text = json.dumps(header).encode()
    assert load_or_reject(target, struct.pack("<Q", len(text)) + text + data[end:]) == "loaded"
    bank = load_memory_bank(target)
    assert bank.classes[0] == "shirt" and bank.upsample == "nearest" and bank.provenance["method"]["K"] == 99


# ---- hostile edits: each breaks one rule of the spec, so the file must be refused ---------------------


def _meta_text(data: bytes) -> tuple[dict, str, bytes]:
    end = header_end(data)
    header = json.loads(data[8:end])
    return header, header.pop("__metadata__")["compressdata"], data[end:]


def _reframe(header: dict, metadata: str, payload: bytes) -> bytes:
    text = json.dumps({"__metadata__": {"compressdata": metadata}, **header}).encode()
    return struct.pack("<Q", len(text)) + text + payload


@st.composite
def hostile_edit(draw, files: dict[str, bytes]) -> bytes:
    """A valid file with one rule broken: a repeated key, deep nesting, an out-of-range number, an unpaired
    surrogate, a boolean or 2.0 where an integer is due, a fourth entry member, a non-positive temperature."""
    header, metadata, payload = _meta_text(files[draw(st.sampled_from(sorted(files)))])
    meta = json.loads(metadata)
    name = draw(st.sampled_from(sorted(header)))
    rule = draw(st.sampled_from(["repeat", "deep", "number", "surrogate", "boolean", "float", "member",
                                 "temperature", "tensors"]))
    if rule == "repeat":
        key = draw(st.sampled_from(sorted(meta)))
        metadata = metadata[:-1] + f', "{key}": ' + json.dumps(meta[key]) + "}"
    elif rule == "deep":
        levels = draw(st.integers(64, 2000))
        metadata = metadata[:-1] + ', "x_deep": ' + "[" * levels + "]" * levels + "}"
    elif rule == "number":
        metadata = metadata[:-1] + ', "x": ' + draw(st.sampled_from(["1e309", "-2e400", "9" * 309, "NaN"])) + "}"
    elif rule == "surrogate":
        metadata = metadata[:-1] + ', "x": "' + draw(st.sampled_from(["\\ud800", "\\udfff", "a\\udbffb"])) + '"}'
    elif rule == "boolean":
        storage_key = draw(st.sampled_from(["floats_stored", "label_values", "examples"]))
        meta["storage"][storage_key] = True
        metadata = json.dumps(meta)
    elif rule == "float":
        header[name]["data_offsets"] = [float(o) for o in header[name]["data_offsets"]]
    elif rule == "member":
        header[name][draw(st.sampled_from(["crc32", "Dtype", "offsets"]))] = 0
    elif rule == "temperature":
        meta.setdefault("recipe", {})["label_temperature"] = draw(st.sampled_from([0, 0.0, -0.5]))
        metadata = json.dumps(meta)
    else:
        for i in range(draw(st.integers(6 - len(header), 50))):
            header[f"x{i}"] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    return _reframe(header, metadata, payload)


@given(data=st.data())
@settings(max_examples=100, deadline=timedelta(seconds=2), database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_a_file_breaking_one_json_or_type_rule_is_always_refused(target, data):
    assert load_or_reject(target, data.draw(hostile_edit(FILES))) == "rejected"
