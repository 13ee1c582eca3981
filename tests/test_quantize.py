"""Post-training quantisation of finished banks (`quantize_bank`, `compressdata quantize`) on real
Fashion-MNIST images: fewer bytes, a small measured error, files that round-trip, and the
operations that cannot keep 8-bit values bit-identical refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compressdata import EvaluationResult, MemoryBank, load_memory_bank, save_memory_bank
from compressdata.bank.quantize import decoded_error, quantize_bank
from compressdata.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def real_bank(fashion_mnist_train) -> MemoryBank:
    """Ten real images per class, normalised: a pixels bank of 100 examples."""
    index = torch.cat([torch.nonzero(fashion_mnist_train.labels == c).flatten()[:10] for c in range(10)])
    bank = MemoryBank(pixels=fashion_mnist_train.images[index], labels=fashion_mnist_train.labels[index],
                      classes=fashion_mnist_train.classes, normalization=fashion_mnist_train.normalization,
                      provenance={"source": {"dataset": "fashion-mnist"}})
    bank.add_evaluation(EvaluationResult("convnet", [0.5], "fashion-mnist/test", 1))
    return bank


@pytest.fixture(scope="module")
def memory_bank(real_bank) -> MemoryBank:
    """A memory bank fitted to the real images: 12 bases at 14x14 (SVD), addresses per example."""
    small = torch.nn.functional.avg_pool2d(real_bank.decode(), 2).flatten(1).double()
    u, s, vh = torch.linalg.svd(small, full_matrices=False)
    return MemoryBank(bases=vh[:12].float().reshape(12, 1, 14, 14), addresses=(u[:, :12] * s[:12]).float(),
                      labels=real_bank.labels, classes=real_bank.classes, image_size=(28, 28),
                      normalization=real_bank.normalization)


@pytest.mark.parametrize("dtype, ratio, max_relative", [("f16", 0.5, 1e-3), ("bf16", 0.5, 1e-2),
                                                        ("int8", 0.25, 1e-2), ("int8-row", 0.25, 1e-2)])
def test_quantize_stores_fewer_bytes_at_a_small_decoded_error(real_bank, tmp_path, dtype, ratio, max_relative):
    quantized = quantize_bank(real_bank, dtype)
    before, after = real_bank.storage, quantized.storage
    per_row = 5 * len(real_bank) if dtype == "int8-row" else 0
    assert after["bytes_stored"] == before["bytes_stored"] * ratio + per_row
    assert after["floats_stored"] == before["floats_stored"]
    record = quantized.provenance["quantization"]
    assert record["method"] == "post-training" and record["dtypes"] == {"pixels": dtype}
    assert record["source_checksum"] == real_bank.checksum() and record["evaluations_dropped"] == 1
    assert 0 < record["decoded_error"]["relative_rmse"] < max_relative
    assert record["decoded_error"] == decoded_error(real_bank, quantized).to_dict()
    assert quantized.evaluations == [] and quantized.provenance["source"] == real_bank.provenance["source"]
    path = tmp_path / "q.safetensors"
    save_memory_bank(quantized, path)
    again = load_memory_bank(path)
    assert again.checksum() == quantized.checksum() and torch.equal(again.decode(), quantized.decode())
    assert again.storage_dtypes() == {"pixels": dtype}


def test_real_8bit_images_survive_8bit_storage_almost_exactly(real_bank):
    """Real pixels are 8-bit: the range of normalised pixels over 255 steps is nearly the original step,
    so the decoded pixels are within a fraction of 1/255 of the originals."""
    quantized = quantize_bank(real_bank, "int8")
    error = (quantized.decode_pixels() - real_bank.decode_pixels()).abs().max()
    assert float(error) < 0.5 / 255


def test_quantize_memory_bank_and_query_it(memory_bank):
    quantized = quantize_bank(memory_bank, {"bases": "int8", "addresses": "int8-row"})
    assert quantized.storage_dtypes() == {"bases": "int8", "addresses": "int8-row"}
    assert quantized.provenance["quantization"]["decoded_error"]["relative_rmse"] < 0.02
    one_hot = torch.zeros(10)
    one_hot[3] = 1.0
    assert torch.equal(quantized.query(one_hot), quantized.decode(torch.arange(30, 40)))
    dequantized = quantized.quantize("f32")  # an 8-bit bank can be stored again in float
    assert torch.equal(dequantized.decode(), quantized.decode())


def test_grown_banks_keep_their_exact_zeros_and_refuse_to_grow_in_8_bits(memory_bank):
    grown = memory_bank.extend("more", memory_bank.labels[:5], addresses=torch.randn(5, 14),
                               bases=torch.randn(2, 1, 14, 14))
    quantized = quantize_bank(grown, "int8-row")  # rule R68: the first task's rows are exactly 0 on new bases
    assert quantized.tasks == grown.tasks
    assert bool((quantized.float_tensors()["addresses"][:100, 12:] == 0).all())
    with pytest.raises(ValueError, match="extend: the bank stores 8-bit tensors.*quantise the result"):
        quantized.extend("again", [0], addresses=torch.zeros(1, 14))
    with pytest.raises(ValueError, match="merge: the bank stores 8-bit tensors"):
        memory_bank.merge(quantized)


def test_quantize_command(real_bank, tmp_path, capsys):
    source, out = tmp_path / "bank.safetensors", tmp_path / "int8.safetensors"
    save_memory_bank(real_bank, source)
    assert main(["quantize", str(source), "--dtype", "int8", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: pixels int8; 78400 bytes stored (was 313600, x0.250)" in printed
    assert "decoded error: RMSE" in printed and "evaluation(s) measured the unquantised values" in printed
    meta = json.loads(_header(out)["__metadata__"]["compressdata"])
    assert meta["format_version"] == "1.2" and meta["storage"]["ipc_equivalent_uint8"] == 10.0
    assert meta["provenance"]["quantization"]["method"] == "post-training"
    assert main(["quantize", str(source), "--dtype", "int8", "-o", str(out)]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["quantize", str(source), "--dtype", "int4", "-o", str(tmp_path / "x.safetensors")]) == 1
    assert "unknown storage dtype 'int4'" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def _header(path: Path) -> dict:
    data = path.read_bytes()
    return json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
