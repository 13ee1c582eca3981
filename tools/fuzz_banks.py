"""Fuzz the bank reader with hostile files, under a memory cap, and count what goes wrong.

Every file goes through the entry points a user reaches with a downloaded bank: `load_memory_bank`,
`compressdata validate` / `inspect` (every fifth file, but 16 MiB headers), and, when it loads, `decode`,
`decode_pixels`, `MemoryDataset(bank)[0]`, `describe_bank`, a query, and a save / reload round
trip. Outcomes per file:

- loaded / rejected: the bank works end to end, or a typed error (`BankFormatError` and its
  subclasses) names the file;
- untyped: any other exception (the bug this tool hunts), or a typed error that does not name the file;
- silent accept: a file made to break a rule of the spec loaded anyway;
- hang: no answer within --timeout seconds (the worker is killed and replaced);
- crash: the worker died (a signal, or the memory cap enforced by the kernel).

Kinds of files: byte- and JSON-level corruption of valid banks, targeted edits that each break one
rule (duplicate keys, deep nesting, huge integers, unpaired surrogates, booleans and 2.0 where
integers are due, extra entry members, non-string __metadata__ members, label_temperature <= 0, too
many tensors or tasks, examples too large to decode), valid banks built to amplify decoding (65,536
bases of 1x1 for 256x256 examples), random bytes, special files (a FIFO, /dev/zero, a folder, a
1 GiB sparse junk file), torch.save / pickle payloads (never unpickled: a marker file proves it),
16 MiB headers, and corrupted distillation checkpoints (through `load_checkpoint`).

    OMP_NUM_THREADS=1 python tools/fuzz_banks.py [--files 10000] [--workers 2] [--memory-gib 2]
        [--timeout 20] [--seed 0] [--report fuzz-report.json]

Exit status 1 when any file was untyped, a silent accept, a hang or a crash.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import random
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

KINDS = {  # kind -> share of the files
    "bytes": 0.25, "json": 0.25, "hostile": 0.25, "valid": 0.06, "random": 0.06, "data-bytes": 0.04,
    "pickle": 0.02, "special": 0.02, "checkpoint": 0.048, "big-header": 0.002,
}
MUST_REJECT = {"hostile", "random", "data-bytes", "pickle", "special", "big-header"}
MAX_HEADER = 16 * 2**20


# ---- valid banks ------------------------------------------------------------------------------------


def base_banks() -> dict[str, Any]:
    """Small valid banks of every kind, label space, dtype and normalisation, with tasks and unknown keys."""
    import torch

    from compressdata import EvaluationResult, MemoryBank, Normalization, TrainingRecipe
    from compressdata.bank.quantize import quantize_bank

    g = torch.Generator().manual_seed(0)
    classes = ["tee", "trouser", "bag"]
    zca = Normalization([0.3], [0.4], zca_regularization=0.1, zca_mean=torch.randn(9, generator=g),
                        zca_whiten=torch.eye(9) + 0.1 * torch.randn(9, 9, generator=g))
    provenance = {"source": {"dataset": "fashion-mnist", "split": "train"}, "method": {"name": "rtp", "K": 4}}
    addresses = torch.randn(6, 3, generator=g)
    addresses[:3, 2] = 0.0
    return {
        "memory": MemoryBank(
            bases=torch.randn(4, 1, 6, 6, generator=g).half(), addresses=torch.randn(10, 4, generator=g),
            labels=torch.arange(10) % 3, classes=classes, image_size=(12, 12),
            normalization=Normalization([0.286], [0.353]), provenance=provenance,
            evaluations=[EvaluationResult("convnet", [0.8, 0.82], "fashion-mnist/test", 300)]),
        "memory-tasks": MemoryBank(
            bases=torch.randn(3, 1, 2, 2, generator=g), addresses=addresses, labels=[0, 0, 0, 1, 1, 1],
            classes=["a", "b"], image_size=(4, 4), upsample="nearest",
            tasks=[{"name": "t0", "classes": [0], "rows": [0, 3], "bases": [0, 2]},
                   {"name": "t1", "classes": [1], "rows": [3, 6], "bases": [2, 3]}]),
        "pixels": MemoryBank(
            pixels=torch.randn(6, 1, 5, 5, generator=g).bfloat16(),
            labels=torch.randn(6, 3, generator=g).softmax(dim=1), classes=classes, provenance=provenance),
        "lowrank": MemoryBank(
            lowrank_u=torch.randn(6, 3, 5, 1, generator=g), lowrank_v=torch.randn(6, 3, 1, 4, generator=g),
            labels=torch.randn(6, 3, generator=g), label_space="logits", classes=classes,
            recipe=TrainingRecipe(label_loss="kl_divergence", label_temperature=2.0, extra={"x_note": [1, {"a": 2}]})),
        "zca": MemoryBank(pixels=torch.randn(4, 1, 3, 3, generator=g), labels=torch.tensor([0, 1, 2, 0]),
                          classes=classes, normalization=zca, extra_metadata={"x_future": {"k": [1.5, None]}}),
        "memory-int8": quantize_bank(MemoryBank(
            bases=torch.randn(3, 1, 4, 4, generator=g), addresses=torch.randn(6, 3, generator=g),
            labels=torch.arange(6) % 3, classes=classes, image_size=(8, 8)), "int8,addresses=int8-row"),
    }


def file_bytes(bank: Any) -> bytes:
    from compressdata.bank.io import bank_bytes

    return bank_bytes(bank.all_tensors(), bank.metadata())


def split(data: bytes) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header.pop("__metadata__")["compressdata"])
    return header, meta, data[8 + n :]


def frame(text: str | bytes, payload: bytes = b"") -> bytes:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw + payload


def pack(header: dict[str, Any], meta_text: str, payload: bytes) -> bytes:
    return frame(json.dumps({"__metadata__": {"compressdata": meta_text}, **header}), payload)


# ---- corruption -----------------------------------------------------------------------------------------


def byte_corruption(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    end = 8 + struct.unpack("<Q", data[:8])[0]
    for _ in range(rng.randint(1, 3)):
        lo, hi = rng.choice([(0, len(out)), (0, 8), (8, end), (end, len(out))])
        hi = max(min(hi, len(out)), 1)
        lo = min(lo, hi - 1)
        pos = rng.randint(lo, hi - 1) if out else 0
        op = rng.choice(["flip", "truncate", "insert", "delete"])
        if op == "flip" and out:
            out[pos] ^= rng.randint(1, 255)
        elif op == "truncate":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = rng.randbytes(rng.randint(1, 16))
        else:
            del out[pos : pos + rng.randint(1, 16)]
    return bytes(out)


PLAUSIBLE = ["memory", "pixels", "lowrank", "index", "probabilities", "logits", "bilinear", "nearest", "1.0", "1.9",
             "2.0", "01.1", "F32", "F16", "BF16", "I64", "I8", "U8", "sha256-tensors-v1", 0, 1, 2, 3, -1, 4, 6, 12,
             2**31, 2**63, 10**400, 0.5, 2.0, 1e308, True, False, None, [1, 12, 12], [0, 0], [], {}, "", "\x00",
             "\u202e"]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.15:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 3 and roll < 0.3:
        return {rng.choice(["a", "name", "rows", "classes", "bases", ""]): random_value(rng, depth + 1)
                for _ in range(rng.randint(0, 4))}
    if roll < 0.75:
        value = rng.choice(PLAUSIBLE)
        return json.loads(json.dumps(value)) if isinstance(value, (list, dict)) else value
    return rng.choice([rng.randint(-(2**70), 2**70), rng.uniform(-1e6, 1e6), "".join(
        chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 6)))])


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        out.append((*prefix, key))
        out.extend(paths(child, (*prefix, key)))
    return out


def json_corruption(rng: random.Random, data: bytes) -> bytes:
    header, meta, payload = split(data)
    doc = {"header": header, "meta": meta}
    for _ in range(rng.randint(1, 3)):
        *parent_path, key = rng.choice(paths(doc))
        parent = doc
        for part in parent_path:
            parent = parent[part]
        op = rng.choice(["replace", "replace", "delete", "add"])
        if op == "replace" or not parent_path:
            parent[key] = random_value(rng)
        elif op == "delete":
            del parent[key]
        elif isinstance(parent[key], dict):
            parent[key][rng.choice(["x", "dtype", "shape", "tasks", "zca"])] = random_value(rng)
        elif isinstance(parent[key], list):
            parent[key].insert(rng.randint(0, len(parent[key])), random_value(rng))
        else:
            parent[key] = random_value(rng)
    header = doc.get("header") if isinstance(doc.get("header"), dict) else {}
    return pack(header, json.dumps(doc.get("meta", {})), payload)


# ---- targeted edits: each breaks one rule, so the file MUST be refused ----------------------------------


def _nested_text(levels: int) -> str:
    return "[" * levels + "0" + "]" * levels


def _nested(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def _meta_text_edit(data: bytes, edit: Callable[[str], str]) -> bytes:
    header, meta, payload = split(data)
    return pack(header, edit(json.dumps(meta, separators=(",", ":"))), payload)


def _meta_edit(data: bytes, edit: Callable[[dict], None]) -> bytes:
    header, meta, payload = split(data)
    edit(meta)
    return pack(header, json.dumps(meta), payload)


def _header_edit(data: bytes, edit: Callable[[dict], None]) -> bytes:
    header, meta, payload = split(data)
    edit(header)
    return pack(header, json.dumps(meta), payload)


def _header_text_edit(data: bytes, edit: Callable[[str], str]) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    return frame(edit(data[8 : 8 + n].decode("utf-8")), data[8 + n :])


def _some_entry(header: dict, rng: random.Random) -> dict:
    return header[rng.choice(sorted(header))]


def _boolean_in_shape(entry: dict) -> None:
    entry["shape"] = [True if d == 1 else d for d in entry["shape"]] if 1 in entry["shape"] else [True, *entry["shape"]]


def _float_offset(entry: dict) -> None:
    entry["data_offsets"][1] = float(entry["data_offsets"][1])


def hostile(rng: random.Random, data: bytes, name: str) -> bytes:
    """One rule broken, chosen at random with random parameters."""
    header, meta, _ = split(data)
    edits: list[Callable[[], bytes]] = [
        lambda: _meta_text_edit(data, lambda t: t[:-1] + f',"{rng.choice(sorted(meta))}":1}}'),
        lambda: _meta_text_edit(data, lambda t: t.replace('"provenance":{', '"provenance":{"a":1,"a":2,', 1)
                                if '"provenance":{' in t else t[:-1] + ',"x":{"b":1,"b":1}}'),
        lambda: _header_text_edit(data, lambda t: t[:-1] + f',"{rng.choice(sorted(header))}":'
                                  f'{json.dumps(_some_entry(header, rng))}}}'),
        lambda: _meta_text_edit(data, lambda t: t[:-1] + ',"x_deep":' + _nested_text(rng.randint(64, 3000)) + "}"),
        lambda: _meta_text_edit(data, lambda t: t[:-1] + ',"x_big":' + rng.choice(["1" + "0" * 309, "-" + "9" * 400,
                                                                                   "7" * 5000]) + "}"),
        lambda: _meta_text_edit(data, lambda t: t[:-1] + ',"x":' + rng.choice(["1e309", "-1e400", "NaN", "Infinity"])
                                + "}"),
        lambda: _meta_text_edit(data, lambda t: t[:-1] + ',"x":"' + rng.choice(["\\ud800", "\\udc00", "a\\ud83d"])
                                + '"}'),
        lambda: _header_edit(data, lambda h: _some_entry(h, rng).__setitem__(rng.choice(["crc", "dtype ", "x"]), 0)),
        lambda: _header_edit(data, lambda h: _boolean_in_shape(_some_entry(h, rng))),
        lambda: _header_edit(data, lambda h: _float_offset(_some_entry(h, rng))),
        lambda: _header_edit(data, lambda h: h.update({f"x{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
                                                       for i in range(rng.randint(6, 5000))})),
        lambda: _header_text_edit(data, lambda t: t.replace('"__metadata__":{', '"__metadata__":{"n":'
                                                            + rng.choice(["1", "null", "[]", "{}", "true"]) + ",", 1)),
        lambda: _meta_edit(data, lambda m: m["storage"].__setitem__(
            rng.choice(["floats_stored", "label_values", "examples"]), rng.choice([True, 1.0, "1", None]))),
        lambda: _meta_edit(data, lambda m: m["storage"].__setitem__("floats_stored",
                                                                    float(m["storage"]["floats_stored"]))),
        lambda: _meta_edit(data, lambda m: m.setdefault("recipe", {}).__setitem__(
            "label_temperature", rng.choice([0, 0.0, -1.0, -1e-300]))),
        lambda: _meta_edit(data, lambda m: m.__setitem__("image_shape", rng.choice(
            [[64, 8192, 8192], [1, 8192, 4096], [3, 4096, 2048], [m["image_shape"][0], 1.0 * m["image_shape"][1],
                                                                    m["image_shape"][2]]]))),
        lambda: _meta_edit(data, lambda m: m.__setitem__("tasks", [0] * 10_001)),
        lambda: _meta_edit(data, lambda m: m.__setitem__("format_version", rng.choice(["1.1.0", "1", "2.0", "0.9"]))),
        lambda: _meta_edit(data, lambda m: m.__setitem__("classes", ["a"] * len(m["classes"]))),
        lambda: b"",
    ]
    if name == "memory-tasks":
        edits.append(lambda: _meta_edit(data, lambda m: m["tasks"][0].__setitem__("rows", [0, 2])))
    if meta["kind"] != "memory":
        edits.append(lambda: _meta_edit(data, lambda m: m.__setitem__(
            "tasks", [{"name": "t", "classes": [0], "rows": [0, 1], "bases": [0, 0]}])))
    return rng.choice(edits)()


# ---- other kinds ----------------------------------------------------------------------------------------


def valid_bank(rng: random.Random) -> Any:
    """A valid bank built to stress decoding: many bases, small bases for big images, or a plain one."""
    import torch

    from compressdata import MemoryBank

    g = torch.Generator().manual_seed(rng.randint(0, 2**31))
    choice = rng.randint(0, 3)
    if choice == 0:  # 65,536 bases of 1x1 resampled to 1 x 256 x 256: 16 GiB if upsampled first
        k, size = 65_536, (256, 256)
        bases, n = torch.randn(k, 1, 1, 1, generator=g), 2
    elif choice == 1:  # small bases, big images: 3 x 1024 x 1024 from 8x8
        k, size = rng.randint(1, 64), (1024, 1024)
        bases, n = torch.randn(k, 3, 8, 8, generator=g), 2
    elif choice == 2:  # lowrank of a random shape
        c, h, w, r = rng.randint(1, 4), rng.randint(1, 40), rng.randint(1, 40), rng.randint(1, 3)
        return MemoryBank(lowrank_u=torch.randn(3, c, h, r, generator=g),
                          lowrank_v=torch.randn(3, c, r, w, generator=g), labels=[0, 1, 0], classes=["a", "b"])
    else:
        k, size = rng.randint(1, 300), (rng.randint(1, 64), rng.randint(1, 64))
        bases, n = torch.randn(k, 1, rng.randint(1, size[0]), rng.randint(1, size[1]), generator=g), 5
    return MemoryBank(bases=bases, addresses=torch.randn(n, k, generator=g) / k, labels=torch.arange(n) % 2,
                      classes=["a", "b"], image_size=size, upsample=rng.choice(["bilinear", "nearest"]))


def random_file(rng: random.Random) -> bytes:
    size = rng.choice([0, 1, 7, 8, 9, 64, 1000, 70_000])
    data = rng.randbytes(size)
    if size >= 8 and rng.random() < 0.5:
        data = struct.pack("<Q", rng.choice([0, 1, 2, size - 8, size, MAX_HEADER, MAX_HEADER + 1, 2**63])) + data[8:]
    return data


class Payload:
    """Unpickling this touches the marker: proof that something unpickled a file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def pickle_file(rng: random.Random, marker: Path) -> bytes:
    import torch

    if rng.random() < 0.5:
        return pickle.dumps({"bases": Payload(str(marker))})
    buffer = io.BytesIO()
    torch.save({"bases": torch.zeros(2), "x": Payload(str(marker))}, buffer)
    return buffer.getvalue()


def special_file(rng: random.Random, workdir: Path, i: int) -> Path:
    roll = rng.randint(0, 4)
    if roll == 0:
        path = workdir / f"fifo-{i}"
        os.mkfifo(path)
        return path
    if roll == 1:
        return Path("/dev/zero")
    if roll == 2:
        path = workdir / f"folder-{i}"
        path.mkdir()
        return path
    if roll == 3:
        path = workdir / f"link-{i}"
        path.symlink_to("/dev/zero")
        return path
    path = workdir / f"sparse-{i}"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", rng.choice([64, MAX_HEADER])) + b"x" * 64)
        f.truncate(2**30)
    return path


def big_header(rng: random.Random, data: bytes) -> bytes:
    header, meta, payload = split(data)
    roll = rng.randint(0, 3)
    if roll == 0:  # 15 MiB of __metadata__ members, the last key repeated
        many = {f"k{j}": "" for j in range(1_000_000)}
        text = json.dumps({"__metadata__": {"compressdata": json.dumps(meta), **many}, **header})
        return frame(text[:-1] + ',"__metadata__":{}}', payload)
    if roll == 1:  # 300,000 tensors of size 0
        many = {f"t{j}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for j in range(300_000)}
        return frame(json.dumps({"__metadata__": {"compressdata": json.dumps(meta)}, **many})[:MAX_HEADER - 1] + "}",
                     payload)
    if roll == 2:  # metadata of 15 MiB of small arrays, one key repeated at the end
        meta["provenance"] = {"x": [[] for _ in range(2_500_000)]}
        return pack(header, json.dumps(meta, separators=(",", ":"))[:-1] + ',"kind":"memory"}', payload)
    meta["provenance"] = {"x": _nested(900)}  # deep, but within what the parser itself can read
    return pack(header, json.dumps(meta), payload)


def checkpoint_bytes() -> bytes:
    import torch

    from compressdata.distiller.checkpoint import DistillState, save_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        state = DistillState(3, {"bases": torch.randn(2, 1, 2, 2), "addresses": torch.randn(4, 2)},
                             {"bases": torch.zeros(2, 1, 2, 2), "addresses": torch.zeros(4, 2)},
                             torch.Generator().get_state())
        path = save_checkpoint(folder, state, {"iterations": 5, "method": "rtp"})
        return path.read_bytes()


# ---- the worker: one file at a time -------------------------------------------------------------------------


def exercise(path: Path, run_cli: bool) -> str:
    """Load `path` through every entry point; 'loaded' or 'rejected' (typed, naming the file), or raise."""
    import torch

    from compressdata import BankFormatError, MemoryDataset, QueryError, load_memory_bank
    from compressdata.bank.memory_bank import decode_limit
    from compressdata.cli import main
    from compressdata.errors import DecodeMemoryError
    from compressdata.summary import describe_bank

    if run_cli:
        for command in ("validate", "inspect"):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = main([command, str(path)])
            if status not in (0, 1) or (status == 1 and err.getvalue().count("\n") != 1):
                raise AssertionError(f"{command} exit {status}, stderr {err.getvalue()[:300]!r}")
            err.getvalue().encode("utf-8")
            out.getvalue().encode("utf-8")
    try:
        bank = load_memory_bank(path)
    except BankFormatError as e:
        if e.path != str(path):
            raise AssertionError(f"typed error without the file: {e}") from None
        return "rejected"
    batch = bank.decode_memory(pixels=True).max_batch(decode_limit())
    if batch < 1:
        raise AssertionError(f"a valid bank cannot decode one example within {decode_limit()} bytes")
    chunks = []
    for start in range(0, len(bank), batch):
        chunks.append(bank.decode(slice(start, start + batch)))
        with contextlib.suppress(BankFormatError):  # e.g. a singular whitening matrix: typed
            bank.decode_pixels(slice(start, start + batch))
    x = torch.cat(chunks)
    if x.dtype != torch.float32 or tuple(x.shape) != (len(bank), *bank.image_shape) or not torch.isfinite(x).all():
        raise AssertionError(f"decode gave {x.dtype} {list(x.shape)}")
    with contextlib.suppress(DecodeMemoryError):  # all at once: within the limit, or refused with a typed error
        bank.decode()
    MemoryDataset(bank)[0]
    describe_bank(bank).encode("utf-8")
    if bank.kind == "memory":
        with contextlib.suppress(QueryError):
            bank.query([1.0] + [0.0] * (bank.num_classes - 1))
    with tempfile.TemporaryDirectory() as folder:
        again_path = Path(folder) / "again.safetensors"
        with contextlib.suppress(UserWarning):
            bank.save(again_path)
        again = load_memory_bank(again_path)
        if again.checksum() != bank.checksum() or not torch.equal(again.decode(), x):
            raise AssertionError("a saved and reloaded bank differs")
    return "loaded"


def run_one(index: int, seed: int, workdir: Path, banks: dict[str, bytes], checkpoint: bytes,
            marker: Path) -> dict[str, Any]:
    rng = random.Random(seed * 1_000_003 + index)
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    name = rng.choice(sorted(banks))
    path = workdir / f"f{index}.safetensors"
    if kind == "special":
        path = special_file(rng, workdir, index)
    elif kind != "checkpoint":
        data = {"bytes": lambda: byte_corruption(rng, banks[name]),
                "json": lambda: json_corruption(rng, banks[name]),
                "hostile": lambda: hostile(rng, banks[name], name),
                "valid": lambda: file_bytes(valid_bank(rng)),
                "random": lambda: random_file(rng),
                "data-bytes": lambda: _flip_data_byte(rng, banks[name]),
                "pickle": lambda: pickle_file(rng, marker),
                "big-header": lambda: big_header(rng, banks[name])}[kind]()
        path.write_bytes(data)
    started = time.perf_counter()
    try:
        if kind == "checkpoint":
            outcome = _checkpoint_outcome(rng, checkpoint, workdir / f"ckpt{index}")
        else:
            outcome = exercise(path, run_cli=index % 5 == 0 and kind != "big-header")
        detail = ""
    except Exception as e:  # noqa: BLE001 - the point: any exception that is not typed is a finding
        outcome, detail = "untyped", f"{type(e).__name__}: {e}"[:300] + " | " + _where(e)
    if outcome == "loaded" and kind in MUST_REJECT:
        outcome, detail = "silent accept", f"{kind} file loaded"
    if kind == "valid" and outcome != "loaded":
        outcome, detail = "untyped", f"a valid bank was {outcome}"
    _remove(path)
    return {"i": index, "kind": kind, "base": name, "outcome": outcome, "detail": detail,
            "seconds": round(time.perf_counter() - started, 4)}


def _flip_data_byte(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    end = 8 + struct.unpack("<Q", data[:8])[0]
    out[rng.randint(end, len(out) - 1)] ^= rng.randint(1, 255)
    return bytes(out)


def _checkpoint_outcome(rng: random.Random, checkpoint: bytes, folder: Path) -> str:
    from compressdata.distiller.checkpoint import CHECKPOINT_FILE, load_checkpoint
    from compressdata.errors import CheckpointError

    folder.mkdir()
    (folder / CHECKPOINT_FILE).write_bytes(byte_corruption(rng, checkpoint) if rng.random() < 0.5 else
                                           json_corruption_checkpoint(rng, checkpoint))
    try:
        load_checkpoint(folder)
        outcome = "loaded"
    except CheckpointError as e:
        if e.path != str(folder / CHECKPOINT_FILE):
            raise AssertionError(f"typed error without the file: {e}") from None
        outcome = "rejected"
    _remove(folder)
    return outcome


def json_corruption_checkpoint(rng: random.Random, data: bytes) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["compressdata.checkpoint"])
    doc = {"meta": meta, "header": {k: v for k, v in header.items() if k != "__metadata__"}}
    *parent_path, key = rng.choice(paths(doc))
    parent = doc
    for part in parent_path:
        parent = parent[part]
    parent[key] = random_value(rng)
    text = json.dumps({"__metadata__": {"compressdata.checkpoint": json.dumps(doc["meta"])},
                       **(doc["header"] if isinstance(doc["header"], dict) else {})})
    return frame(text, data[8 + n :])


def _where(e: BaseException) -> str:
    frames = traceback.extract_tb(e.__traceback__)
    return " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[-3:])


def _remove(path: Path) -> None:
    import shutil

    if path.is_symlink() or path.is_file() or path.is_fifo():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def worker(args: argparse.Namespace) -> None:
    """Process files args.worker, args.worker + workers, ... from position args.start, one JSON line each."""
    import torch

    import compressdata.cli  # noqa: F401 - imported before the clock starts: not the first file's time
    import compressdata.summary  # noqa: F401

    torch.set_num_threads(1)
    banks = {name: file_bytes(bank) for name, bank in base_banks().items()}
    checkpoint = checkpoint_bytes()
    workdir = Path(args.workdir)
    marker = workdir / "unpickled"
    vm = _vm_bytes()
    cap = vm + int(args.memory_gib * 2**30)
    os.environ["COMPRESSDATA_MAX_DECODE_BYTES"] = str(int(args.memory_gib * 2**30) // 2)  # the library's own bound
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    indices = list(range(args.worker, args.files, args.workers))[args.start:]
    heartbeat = Path(args.heartbeat)
    with open(args.results, "a", encoding="utf-8") as results:
        for index in indices:
            _beat(heartbeat, f"{index} {time.time()}")
            record = run_one(index, args.seed, workdir, banks, checkpoint, marker)
            results.write(json.dumps(record) + "\n")
            results.flush()
    _beat(heartbeat, f"done {time.time()}")


def _beat(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


# ---- the parent: workers, a watchdog, the report ------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-gib", type=float, default=2.0, help="address space each worker may add")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a file may take (a hang past it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, default=None, help="write every finding here (JSON)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    for hidden in ("--start", "--workdir", "--results", "--heartbeat"):
        parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        args.start = int(args.start)
        worker(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="fuzz-banks-") as folder:
        return supervise(args, Path(folder))


def supervise(args: argparse.Namespace, folder: Path) -> int:
    started = time.monotonic()
    records: list[dict[str, Any]] = []
    workers: dict[int, tuple[subprocess.Popen, int]] = {}  # worker -> (process, start position)
    positions = dict.fromkeys(range(args.workers), 0)
    workdir = folder / "files"
    workdir.mkdir()

    def spawn(w: int) -> None:
        _beat(folder / f"heartbeat-{w}", f"start {time.time()}")
        command = [sys.executable, __file__, "--worker", str(w), "--workers", str(args.workers),
                   "--files", str(args.files), "--start", str(positions[w]), "--seed", str(args.seed),
                   "--memory-gib", str(args.memory_gib), "--workdir", str(workdir),
                   "--results", str(folder / f"results-{w}.jsonl"), "--heartbeat", str(folder / f"heartbeat-{w}")]
        with open(folder / f"stderr-{w}.log", "a") as log:
            workers[w] = (subprocess.Popen(command, stderr=log), positions[w])

    def collect(w: int) -> None:
        path = folder / f"results-{w}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        done = [json.loads(line) for line in lines]
        positions[w] = len(done)

    for w in range(args.workers):
        spawn(w)
    shown = 0.0
    while workers:
        time.sleep(0.5)
        for w in list(workers):
            proc, _ = workers[w]
            beat = (folder / f"heartbeat-{w}").read_text().split()
            collect(w)
            if proc.poll() is not None:
                if beat[0] == "done":
                    del workers[w]
                    continue
                lost = int(beat[0]) if beat[0].isdigit() else None
                if lost is not None:
                    tail = (folder / f"stderr-{w}.log").read_text()[-300:].replace("\n", " | ")
                    _record_lost(folder, w, lost, "crash", f"worker exited with {proc.returncode}: {tail}")
                    positions[w] += 1
                spawn(w)
            elif beat[0].isdigit() and time.time() - float(beat[1]) > args.timeout:
                proc.kill()
                proc.wait()
                _record_lost(folder, w, int(beat[0]), "hang", f"no answer within {args.timeout} s")
                collect(w)
                spawn(w)
        if time.monotonic() - shown > 30:
            shown = time.monotonic()
            print(f"{sum(positions.values())}/{args.files} files, {shown - started:.0f} s", file=sys.stderr, flush=True)
    for w in range(args.workers):
        path = folder / f"results-{w}.jsonl"
        records += [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    marker_touched = (workdir / "unpickled").exists()
    return report(records, time.monotonic() - started, args, marker_touched)


def _record_lost(folder: Path, w: int, index: int, outcome: str, detail: str) -> None:
    with open(folder / f"results-{w}.jsonl", "a", encoding="utf-8") as results:
        results.write(json.dumps({"i": index, "kind": "?", "base": "?", "outcome": outcome, "detail": detail,
                                  "seconds": None}) + "\n")


def report(records: list[dict[str, Any]], seconds: float, args: argparse.Namespace, unpickled: bool) -> int:
    outcomes = Counter(r["outcome"] for r in records)
    by_kind: dict[str, Counter] = {}
    for r in records:
        by_kind.setdefault(r["kind"], Counter())[r["outcome"]] += 1
    timed = [r for r in records if r["seconds"] is not None]
    slowest = sorted(timed, key=lambda r: -r["seconds"])[:5]
    median = sorted(r["seconds"] for r in timed)[len(timed) // 2] if timed else 0.0
    print(f"{len(records)} files in {seconds:.0f} s ({args.workers} workers, memory cap +{args.memory_gib:g} GiB "
          f"address space each, {args.timeout:g} s per file)")
    columns = ["loaded", "rejected", "untyped", "silent accept", "hang", "crash"]
    seconds_by_kind = Counter()
    for r in timed:
        seconds_by_kind[r["kind"]] += r["seconds"]
    print(f"{'kind':<12}" + "".join(f"{c:>14}" for c in columns) + f"{'seconds':>10}")
    for kind in sorted(by_kind):
        print(f"{kind:<12}" + "".join(f"{by_kind[kind][c]:>14}" for c in columns)
              + f"{seconds_by_kind[kind]:>10.0f}")
    print(f"{'total':<12}" + "".join(f"{outcomes[c]:>14}" for c in columns) + f"{sum(seconds_by_kind.values()):>10.0f}")
    print(f"median {median * 1000:.0f} ms per file; slowest: "
          + ", ".join(f"file {r['i']} ({r['kind']} from {r['base']}) {r['seconds']:.2f} s" for r in slowest))
    print(f"pickles unpickled: {'YES' if unpickled else 'none'}")
    findings = [r for r in records if r["outcome"] in ("untyped", "silent accept", "hang", "crash")]
    for r in findings[:20]:
        print(f"  file {r['i']} ({r['kind']}, from {r['base']}): {r['outcome']}: {r['detail']}")
    if args.report is not None:
        args.report.write_text(json.dumps({"outcomes": outcomes, "findings": findings}, indent=1))
    return 1 if findings or unpickled or len(records) < args.files else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
