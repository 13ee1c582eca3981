"""Generalised queries (spec section 12) on banks distilled from the real Fashion-MNIST."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from compressdata import MemoryBank, QueryError, load_memory_bank
from compressdata.bank.query import parse_label_vector
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.loop import distill

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Two outer iterations of a tiny rtp run from the real-data SVD init: real addresses and bases.
TINY = DistillConfig.from_flat(method="rtp", init="real", iterations=2, unroll_steps=2, width=4,
                               inner_batch_per_class=2, real_batch_per_class=2, outer_lr=30.0, seed=1)


def _quiet(_: str) -> None:
    return None


@pytest.fixture(scope="module")
def bank(fashion_mnist_train, tmp_path_factory) -> MemoryBank:
    """The distilled bank, saved and read back from a real file."""
    path = tmp_path_factory.mktemp("q") / "rtp.safetensors"
    distill(TINY, fashion_mnist_train, progress=False, log=_quiet).save(path)
    return load_memory_bank(path)


@pytest.fixture(scope="module")
def logits_bank(fashion_mnist_train) -> MemoryBank:

    return distill(TINY.replace(learn_labels=True), fashion_mnist_train, progress=False, log=_quiet)


def _rows(bank: MemoryBank, c: int) -> torch.Tensor:
    return (bank.hard_labels() == c).nonzero().flatten()


def test_one_hot_queries_reproduce_each_class_bit_for_bit(bank):
    r = len(bank) // bank.num_classes
    for c in range(bank.num_classes):
        y = torch.zeros(bank.num_classes)
        y[c] = 1.0
        x = bank.query(y)
        assert x.shape == (r, *bank.image_shape)
        assert torch.equal(x, bank.decode(_rows(bank, c)))  # exact: zero weights add exact zeros


def test_batched_one_hot_queries_are_query_major(bank):
    eye = torch.eye(bank.num_classes)
    x = bank.query(eye, n_per_query=3)
    rows = torch.cat([_rows(bank, c)[:3] for c in range(bank.num_classes)])
    assert x.shape == (3 * bank.num_classes, *bank.image_shape)
    assert torch.equal(x, bank.decode(rows))  # the same rows in one batch: bit for bit
    for c in range(bank.num_classes):  # a decode of another batch size may round differently
        torch.testing.assert_close(x[3 * c:3 * c + 3], bank.decode(_rows(bank, c)[:3]), rtol=0, atol=1e-6)


def test_a_mixture_is_the_mixture_of_the_class_decodes(bank):
    y = {"Sandal": 0.25, "Sneaker": 0.25, "Ankle boot": 0.5}
    x = bank.query(y)
    c = bank.class_to_idx
    expected = (0.25 * bank.decode(_rows(bank, c["Sandal"])) + 0.25 * bank.decode(_rows(bank, c["Sneaker"]))
                + 0.5 * bank.decode(_rows(bank, c["Ankle boot"])))
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(x, bank.decode(_rows(bank, c["Sandal"])), atol=1e-3)  # really a new example


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(0.0, 4.0), min_size=10, max_size=10).filter(lambda v: sum(v) > 1e-3))
def test_queries_are_linear_in_the_label_vector(bank, weights):
    y = torch.tensor(weights)
    decodes = torch.stack([bank.decode(_rows(bank, c)[:4]) for c in range(bank.num_classes)])
    expected = torch.einsum("c,cnhwk->nhwk", y, decodes.flatten(3).unflatten(3, bank.image_shape[1:]))
    torch.testing.assert_close(bank.query(y, 4), expected, rtol=1e-5, atol=1e-4)


def test_soft_targets_are_the_normalised_vector_for_index_labels(bank):
    y = torch.tensor([[0, 0, 0, 0, 0, 2.0, 0, 2.0, 0, 4.0], [1.0] + [0.0] * 9])
    x, t = bank.query_with_targets(y, n_per_query=5)
    assert x.shape[0] == t.shape[0] == 10
    torch.testing.assert_close(t[:5], (y[0] / 8).expand(5, -1))
    torch.testing.assert_close(t[5:], y[1].expand(5, -1))


def test_soft_targets_mix_learned_labels(logits_bank):
    b = logits_bank
    assert b.label_space == "logits"
    soft = b.soft_targets()
    _, t = b.query_with_targets({"Coat": 1.0}, 4)
    assert torch.equal(t, soft[_rows(b, 4)[:4]])
    _, t = b.query_with_targets({"Coat": 1.0, "Shirt": 3.0}, 4)
    torch.testing.assert_close(t, 0.25 * soft[_rows(b, 4)[:4]] + 0.75 * soft[_rows(b, 6)[:4]])


def test_classes_with_fewer_rows_limit_the_query(bank):
    labels = bank.hard_labels()
    keep = torch.cat([(labels != 3).nonzero().flatten(), _rows(bank, 3)[:2]]).sort().values
    small = MemoryBank(bases=bank.tensors["bases"], addresses=bank.tensors["addresses"][keep], labels=labels[keep],
                       classes=bank.classes, image_size=bank.image_size)
    assert len(small.query({"Dress": 1.0})) == 2
    assert len(small.query({"Coat": 1.0})) == len(_rows(bank, 4))  # unaffected by Dress
    assert len(small.query({"Coat": 0.5, "Dress": 0.5})) == 2
    message = r"classes \['Dress'\] have only 2 address rows; n_per_query must be in 1\.\.2"
    with pytest.raises(QueryError, match=message):
        small.query({"Coat": 0.5, "Dress": 0.5}, n_per_query=3)


@pytest.mark.parametrize(("vectors", "message"), [
    ([1.0] * 9, "have 9 entries; expected 10"),
    ([[1.0] * 11], "have 11 entries; expected 10"),
    ([float("nan")] + [0.0] * 9, r"entry 0 \('T-shirt/top'\) is nan; entries must be finite"),
    ([0.0] * 9 + [float("inf")], "is inf; entries must be finite"),
    ([0.0, -0.5] + [1.0] * 8, r"entry 1 \('Trouser'\) is -0.5; entries must be >= 0"),
    ([[1.0] + [0.0] * 9, [0.0] * 10], "label vector 1 is all zeros"),
    (torch.zeros(2, 2, 10), r"shape \[10\] or \[Q, 10\]"),
    (torch.zeros(0, 10), r"shape \[10\] or \[Q, 10\]"),
    ({"Boots": 1.0}, r"unknown classes \['Boots'\]"),
    ("sandal", "must be numbers"),
])
def test_bad_label_vectors_raise_a_clear_error(bank, vectors, message):
    with pytest.raises(QueryError, match=message):
        bank.query(vectors)


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_bad_n_per_query(bank, n):
    with pytest.raises(QueryError, match="n_per_query must be an int >= 1"):
        bank.query([1.0] + [0.0] * 9, n_per_query=n)


def test_more_rows_than_the_classes_have_is_an_error(bank):
    r = len(bank) // bank.num_classes
    with pytest.raises(QueryError, match=f"n_per_query must be in 1..{r}"):
        bank.query([1.0] + [0.0] * 9, n_per_query=r + 1)


def test_pixel_banks_have_no_queries(fashion_mnist_train):

    pixels = distill(TINY.replace(method="random-real"), fashion_mnist_train, progress=False, log=_quiet)
    with pytest.raises(QueryError, match="kind 'memory'.*this bank is 'pixels'"):
        pixels.query([1.0] + [0.0] * 9)


def test_parse_label_vector_forms(bank):
    by_name = parse_label_vector("Sandal=0.5, Sneaker=0.25,9=0.25", bank.classes)
    by_number = parse_label_vector("0,0,0,0,0,0.5,0,0.25,0,0.25", bank.classes)
    assert torch.equal(by_name, by_number)
    with pytest.raises(QueryError, match="not class=weight"):
        parse_label_vector("Sandal=0.5,0.5", bank.classes)
    with pytest.raises(QueryError, match="'x' of 'Sandal' is not a number"):
        parse_label_vector("Sandal=x", bank.classes)


def test_cli_writes_one_png_row_per_query(bank, tmp_path):
    path = tmp_path / "bank.safetensors"
    bank.save(path)
    out = tmp_path / "q.png"
    cmd = [sys.executable, "-m", "compressdata", "query", str(path), "--vector", "T-shirt/top=0.5,Shirt=0.5",
           "--vector", "Bag=1", "-n", "4", "-o", str(out), "--scale", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (4 * 29 + 1, 2 * 29 + 1)  # 4 columns, 2 rows of 28x28 cells + padding
    bad = subprocess.run([*cmd[:6], "Bag=-1", "-o", str(out)], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1])
    assert bad.returncode == 1 and "entries must be >= 0" in bad.stderr


# ---- spec/query-vectors (spec section 12.8) ---------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
QUERY_VECTORS = json.loads((ROOT / "spec" / "query-vectors" / "queries.json").read_text())


@pytest.mark.parametrize("case", QUERY_VECTORS["queries"], ids=lambda c: f"{c['bank']}-{c['vector']}")
def test_query_vectors(case):
    bank = load_memory_bank(ROOT / "spec" / "vectors" / f"{case['bank']}.safetensors")
    x, t = bank.query_with_targets(case["vector"], case["n_per_query"])
    for got, want in ((x, case["examples"]), (t, case["targets"])):
        expected = torch.tensor(want["values"], dtype=torch.float32).reshape(want["shape"])
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", QUERY_VECTORS["invalid"], ids=lambda c: c["error"])
def test_invalid_query_vectors_are_refused(case):
    bank = load_memory_bank(ROOT / "spec" / "vectors" / f"{case['bank']}.safetensors")
    vector = [float(v) for v in case["vector"]]  # "NaN" / "Infinity" are strings in JSON
    with pytest.raises(QueryError):
        bank.query(vector, case["n_per_query"])


def test_query_vectors_equal_a_fresh_regeneration(tmp_path):
    out = tmp_path / "queries.json"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_query_vectors.py"), "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_bytes() == (ROOT / "spec" / "query-vectors" / "queries.json").read_bytes()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_queries_on_cuda_match_the_cpu(bank):
    y = torch.rand(3, bank.num_classes, device="cuda")
    x, t = bank.query_with_targets(y, 4, device="cuda")
    assert x.device.type == "cuda" and t.device.type == "cuda"
    x_cpu, t_cpu = bank.query_with_targets(y.cpu(), 4)
    torch.testing.assert_close(x.cpu(), x_cpu, rtol=0, atol=1e-4)
    torch.testing.assert_close(t.cpu(), t_cpu)
