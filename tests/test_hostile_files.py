"""Hostile bank files: each is generated here, and each must end in a typed error promptly (never an
untyped exception, a hang, an unbounded read or allocation) or, where the format allows it, load.

The wall-clock bounds below are hang guards, generous by orders of magnitude (the quadratic check
they guard against took 183 s on a 870 KB header); speed itself is measured by tools/fuzz_banks.py.
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from compressdata import (
    BankFormatError,
    EvaluationResult,
    MemoryBank,
    MemoryDataset,
    Normalization,
    TrainingRecipe,
    load_memory_bank,
    save_memory_bank,
)
from compressdata.bank.format import MAX_EXAMPLE_VALUES, MAX_JSON_DEPTH, MAX_TASKS, canonical_json
from compressdata.bank.metadata import accuracy_mean_std
from compressdata.cli import main
from compressdata.errors import DecodeMemoryError
from compressdata.params import memory as memory_params
from compressdata.summary import describe_bank

HANG_GUARD_SECONDS = 20.0


def frame(header: dict | str, payload: bytes = b"") -> bytes:
    text = (header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))).encode()
    return struct.pack("<Q", len(text)) + text + payload


def split(data: bytes) -> tuple[dict, dict, bytes]:
    """(tensor entries, bank metadata, payload) of a bank file."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header.pop("__metadata__")["compressdata"])
    return header, meta, data[8 + n :]


def small_bank(**kwargs) -> MemoryBank:
    g = torch.Generator().manual_seed(0)
    options = {"bases": torch.randn(3, 1, 4, 4, generator=g), "addresses": torch.randn(6, 3, generator=g),
               "labels": torch.arange(6) % 2, "classes": ["a", "b"], "image_size": (8, 8)}
    return MemoryBank(**{**options, **kwargs})


def rejected(path: Path, *fragments: str) -> BankFormatError:
    started = time.monotonic()
    with pytest.raises(BankFormatError) as info:
        load_memory_bank(path)
    assert time.monotonic() - started < HANG_GUARD_SECONDS
    assert info.value.path == str(path), str(info.value)
    for fragment in fragments:
        assert fragment in info.value.problem, info.value.problem
    return info.value


# ---- denial of service (issue items 1, 3, 5) ----------------------------------------------------


def test_a_repeated_key_among_many_is_found_in_linear_time(tmp_path):
    """Both places a header may hold many keys: `__metadata__` members and the metadata JSON."""
    valid = small_bank()
    valid.save(tmp_path / "valid.safetensors")
    entries, meta, payload = split((tmp_path / "valid.safetensors").read_bytes())
    many = {f"k{i}": "" for i in range(200_000)}
    text = json.dumps({"__metadata__": {"compressdata": json.dumps(meta), **many}, **entries},
                      separators=(",", ":"))
    path = tmp_path / "header.safetensors"
    path.write_bytes(frame(text[:-1] + ',"__metadata__":{}}', payload))  # the header's last key repeats
    rejected(path, "header is not JSON", "duplicate key(s) ['__metadata__']")

    meta["provenance"] = many
    metadata = json.dumps(meta, separators=(",", ":"))
    metadata = metadata[:-1] + ',"provenance":{}}'
    path.write_bytes(frame({"__metadata__": {"compressdata": metadata}, **entries}, payload))
    rejected(path, "is not valid JSON", "duplicate key(s) ['provenance']")


def test_a_header_listing_thirty_thousand_tensors_is_refused_at_the_tenth(tmp_path):
    entries = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(30_000)}
    path = tmp_path / "many.safetensors"
    path.write_bytes(frame({"__metadata__": {"compressdata": "{}"}, **entries}))
    rejected(path, "header lists more than 9 tensors", "unexpected tensor(s)")


def test_special_files_are_refused_before_any_read(tmp_path):
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    rejected(fifo, "not a regular file (a FIFO)")
    rejected(Path("/dev/zero"), "not a regular file (a character device)")
    (tmp_path / "folder").mkdir()
    rejected(tmp_path / "folder", "not a regular file (a folder)")


def test_a_gigabyte_of_junk_is_refused_after_reading_its_header(tmp_path):
    path = tmp_path / "junk.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 64) + b"x" * 64)
        f.truncate(2**30)  # sparse: a 1 GiB file on any filesystem that supports holes
    tracemalloc.start()
    try:
        rejected(path, "header is not JSON")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"read {peak} bytes of a junk file"


def test_a_header_claiming_more_data_than_the_file_has_is_refused_unread(tmp_path):
    bank_path = tmp_path / "bank.safetensors"
    small_bank().save(bank_path)
    entries, meta, payload = split(bank_path.read_bytes())
    entries["labels"]["data_offsets"][1] += 2**40
    path = tmp_path / "claim.safetensors"
    path.write_bytes(frame({"__metadata__": {"compressdata": json.dumps(meta)}, **entries}, payload))
    rejected(path, "tensor 'labels'", "do not fit")


def test_ten_thousand_tasks_load_and_one_more_is_refused(tmp_path):
    n = MAX_TASKS
    tasks = [{"name": f"t{i}", "classes": [i % 2], "rows": [i, i + 1]} for i in range(n)]
    bank = MemoryBank(pixels=torch.zeros(n, 1, 1, 1), labels=torch.arange(n) % 2, classes=["a", "b"], tasks=tasks)
    path = tmp_path / "tasks.safetensors"
    bank.save(path)
    started = time.monotonic()
    assert len(load_memory_bank(path).tasks) == n
    assert time.monotonic() - started < HANG_GUARD_SECONDS
    entries, meta, payload = split(path.read_bytes())
    meta["tasks"] = tasks + [{"name": "one-more", "classes": [0], "rows": [n, n + 1]}]
    path.write_bytes(frame({"__metadata__": {"compressdata": json.dumps(meta)}, **entries}, payload))
    rejected(path, "metadata field 'tasks'", f"at most {MAX_TASKS}")


# ---- decode memory (item 2) -------------------------------------------------------------------------


def test_a_tiny_file_cannot_claim_examples_of_gigabytes(tmp_path):
    bank_path = tmp_path / "bank.safetensors"
    MemoryBank(bases=torch.ones(1, 1, 1, 1), addresses=torch.ones(2, 1), labels=[0, 1], classes=["a", "b"],
               image_size=(1, 1)).save(bank_path)
    entries, meta, payload = split(bank_path.read_bytes())
    for shape in ([64, 8192, 8192], [1, 8192, 4096]):
        meta["image_shape"] = shape
        path = tmp_path / "amplified.safetensors"
        path.write_bytes(frame({"__metadata__": {"compressdata": json.dumps(meta)}, **entries}, payload))
        assert math.prod(shape) > MAX_EXAMPLE_VALUES and len(path.read_bytes()) < 2048
        rejected(path, "metadata field 'image_shape'", "outside limits", f"C*H*W<={MAX_EXAMPLE_VALUES}")


def test_many_small_bases_decode_without_upsampling_them_all(tmp_path, monkeypatch):
    """65,536 bases of 1x1 for 1x256x256 examples: upsampling them first would take 16 GiB."""
    bank = MemoryBank(bases=torch.randn(65_536, 1, 1, 1), addresses=torch.randn(3, 65_536) * 1e-3,
                      labels=[0, 1, 0], classes=["a", "b"], image_size=(256, 256))
    path = tmp_path / "wide.safetensors"
    bank.save(path)
    loaded = load_memory_bank(path)
    memory = loaded.decode_memory()
    assert memory.prepared <= 2**20 and memory.per_example <= 2**21, memory
    image, label = MemoryDataset(loaded)[0]
    assert image.shape == (1, 256, 256) and label == 0
    expected = (loaded.tensors["addresses"][:1] @ loaded.tensors["bases"].reshape(65_536, 1)).reshape(1, 1, 1, 1)
    assert torch.allclose(image, expected.expand(1, 1, 256, 256)[0], atol=1e-5)
    monkeypatch.setenv("COMPRESSDATA_MAX_DECODE_BYTES", str(memory.for_examples(2)))
    assert loaded.decode([0, 1]).shape == (2, 1, 256, 256)
    with pytest.raises(DecodeMemoryError, match="decode at most 2 examples at a time") as info:
        loaded.decode()
    assert isinstance(info.value, BankFormatError)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_combining_first_decodes_the_same_examples(mode, monkeypatch):
    """The order used for huge bases (combine, then resample; spec 4.1) against the usual one."""
    bank = small_bank(upsample=mode, image_size=(13, 9))
    usual = bank.decode()
    monkeypatch.setattr(memory_params, "EXPAND_LIMIT_BYTES", 0)
    combined_first = small_bank(upsample=mode, image_size=(13, 9))
    assert "expanded" not in combined_first.prepared_on("cpu")
    assert torch.allclose(combined_first.decode(), usual, atol=1e-5)
    assert torch.allclose(combined_first.query([1.0, 0.0]), bank.query([1.0, 0.0]), atol=1e-5)


def test_validate_and_inspect_report_the_decode_memory(tmp_path, capsys):
    path = tmp_path / "bank.safetensors"
    small_bank().save(path)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "decode memory:" in out and "per example" in out and "batches of up to 6 examples" in out
    assert main(["inspect", str(path)]) == 0
    assert "decode memory:" in capsys.readouterr().out


# ---- silent accepts and untyped errors (items 6-8, 10) ---------------------------------------------


def test_label_temperature_must_be_positive():
    with pytest.raises(BankFormatError, match="recipe.label_temperature': expected a number > 0"):
        small_bank(labels=torch.randn(6, 2), label_space="logits", recipe=TrainingRecipe(label_temperature=0.0))
    bank = small_bank(labels=torch.randn(6, 2), label_space="logits", recipe=TrainingRecipe(label_temperature=0.5))
    assert bool(torch.isfinite(bank.soft_targets()).all())


def test_deep_nesting_in_an_unknown_member_is_a_typed_error(tmp_path, capsys):
    bank_path = tmp_path / "bank.safetensors"
    small_bank().save(bank_path)
    entries, meta, payload = split(bank_path.read_bytes())
    nested: object = 1
    for _ in range(490):  # about 1 KB of JSON; made load raise RecursionError before
        nested = [nested]
    meta["recipe"]["x_nested"] = nested
    path = tmp_path / "deep.safetensors"
    path.write_bytes(frame({"__metadata__": {"compressdata": json.dumps(meta)}, **entries}, payload))
    rejected(path, "is not valid JSON", f"nesting deeper than {MAX_JSON_DEPTH} levels")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nesting deeper than" in err


def test_the_deepest_allowed_metadata_loads_and_saves(tmp_path):
    nested: object = 1
    for _ in range(MAX_JSON_DEPTH - 3):  # metadata (1) > recipe (2) > x_nested lists (3 .. 64)
        nested = [nested]
    bank = small_bank(recipe=TrainingRecipe(extra={"x_nested": nested}))
    save_memory_bank(bank, tmp_path / "deep.safetensors")
    again = load_memory_bank(tmp_path / "deep.safetensors")
    assert again.recipe.extra["x_nested"] == nested
    save_memory_bank(again, tmp_path / "again.safetensors")


def test_a_singular_whitening_matrix_is_a_typed_error():
    whiten = torch.eye(4)
    whiten[3] = 0.0  # singular: pixels cannot be recovered
    zca = Normalization([0.5], [0.25], zca_regularization=0.1, zca_mean=torch.zeros(4), zca_whiten=whiten)
    bank = MemoryBank(pixels=torch.randn(2, 1, 2, 2), labels=[0, 1], classes=["a", "b"], normalization=zca)
    assert bank.decode().shape == (2, 1, 2, 2)  # decoding needs no inversion
    with pytest.raises(BankFormatError, match="tensor 'zca_whiten': singular"):
        bank.decode_pixels()


def test_inspect_escapes_control_characters_and_lone_surrogates(tmp_path, capsys):
    names = ["\x1b[31mred\x1b[0m", "two\nlines", "\u202eevil", "bell\x07", "plain"]
    bank = MemoryBank(pixels=torch.zeros(5, 1, 2, 2), labels=torch.arange(5), classes=names,
                      provenance={"source": {"dataset": "\x1b]0;title\x07"}})
    plain = MemoryBank(pixels=torch.zeros(5, 1, 2, 2), labels=torch.arange(5), classes=list("abcde"),
                       provenance={"source": {"dataset": "x"}})
    path = tmp_path / "names.safetensors"
    bank.save(path)
    text = describe_bank(load_memory_bank(path))
    assert not any(c in text for c in "\x1b\x07\u202e") and "\\x1b[31mred" in text
    assert text.count("\n") == describe_bank(plain).count("\n")  # a name cannot add lines
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\u202eevil" in out


def test_an_unpaired_surrogate_can_be_neither_written_nor_read(tmp_path, capsys):
    with pytest.raises(BankFormatError, match="unpaired surrogate U\\+D800"):
        MemoryBank(pixels=torch.zeros(2, 1, 2, 2), labels=[0, 1], classes=["a", "bad\ud800name"])
    bank_path = tmp_path / "bank.safetensors"
    MemoryBank(pixels=torch.zeros(2, 1, 2, 2), labels=[0, 1], classes=["a", "bad-name"]).save(bank_path)
    entries, meta, payload = split(bank_path.read_bytes())
    text = json.dumps(meta).replace("bad-name", "bad\\ud800name")  # the escape a foreign writer could write
    path = tmp_path / "surrogate.safetensors"
    path.write_bytes(frame({"__metadata__": {"compressdata": text}, **entries}, payload))
    rejected(path, "is not valid JSON", "unpaired surrogate U+D800")
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    err.encode("utf-8")
    assert err.count("\n") == 1 and "unpaired surrogate" in err


# ---- the spec's open corners: canonical bytes another writer can reproduce -------------------------


def spec_number(x: float) -> str:
    """Spec 3.1's form of a binary64 value, from numpy's shortest digits (Dragon4, not Python's repr)."""
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    mantissa, exponent = np.format_float_scientific(x, unique=True, trim="-").split("e")
    exponent = int(exponent)
    sign = "-" if mantissa.startswith("-") else ""
    digits = mantissa.lstrip("-").replace(".", "")
    if -4 <= exponent < 16:
        if exponent >= 0:
            whole, frac = digits[: exponent + 1].ljust(exponent + 1, "0"), digits[exponent + 1 :]
        else:
            whole, frac = "0", "0" * (-exponent - 1) + digits
        return f"{sign}{whole}.{frac or '0'}"
    tail = f".{digits[1:]}" if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{tail}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"


def spec_string(text: str) -> str:
    """Spec 3.1's form of a string."""
    short = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    out = []
    for c in text:
        if c in short:
            out.append(short[c])
        elif 0x20 <= ord(c) <= 0x7E:
            out.append(c)
        elif ord(c) > 0xFFFF:
            high, low = divmod(ord(c) - 0x10000, 0x400)
            out.append(f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}")
        else:
            out.append(f"\\u{ord(c):04x}")
    return '"' + "".join(out) + '"'


def spec_canonical(value: object) -> str:
    """Spec 3.1's canonical text, written from the spec's description alone."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return spec_number(value)
    if isinstance(value, str):
        return spec_string(value)
    if isinstance(value, list):
        return "[" + ",".join(spec_canonical(v) for v in value) + "]"
    members = sorted(value.items())  # Python compares str by code point, as the spec says
    return "{" + ",".join(f"{spec_string(k)}:{spec_canonical(v)}" for k, v in members) + "}"


def test_the_spec_states_the_canonical_form_precisely():
    rng = np.random.default_rng(0)
    floats = [1.0, 0.0001, 1e-05, 1e16, 1.5e16, 1234567890123456.0, 1e22, 5e-324, -0.0, 0.1, 1 / 3, 2.5e-7,
              1.7976931348623157e308, 24.0, 0.0005]
    floats += [float(v) for v in rng.standard_normal(200) * 10.0 ** rng.integers(-30, 30, 200)]
    texts = ["plain", 'q"b\\s/', "\x00\x07\b\t\n\x0b\f\r\x1f\x7f", "é\u2028\uffff", "😀 \U0010ffff", "\ud800"]
    value = {"floats": floats, "ints": [0, -5, 2**70, -(2**60)], "texts": texts, "literals": [True, False, None],
             "\U0001f600": 1, "\uffff": 2, "a": {"z": [], "b": {}}, "B": 3}
    assert canonical_json(value) == spec_canonical(value)


def test_evaluation_mean_and_std_follow_the_spec_computation():
    """Left-to-right binary64 sums as spec 3.9 states, checked against numpy's sequential accumulate
    (torch's reductions differed in the last bit for about a quarter of such lists)."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        accuracies = [float(a) for a in rng.uniform(0.5, 0.95, rng.integers(1, 12))]
        values = np.array(accuracies)
        mean = np.add.accumulate(values)[-1] / len(values)
        deviations = values - mean
        std = math.sqrt(np.add.accumulate(deviations * deviations)[-1] / len(values)) if len(values) > 1 else 0.0
        assert accuracy_mean_std(accuracies) == (mean, std)
        result = EvaluationResult("convnet", accuracies, "fashion-mnist/test", 300)
        assert (result.mean, result.std) == (mean, std)
    assert accuracy_mean_std([]) == (0.0, 0.0)
