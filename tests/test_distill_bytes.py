"""Distilling for a budget in bytes on real Fashion-MNIST: storage dtypes, post-training and
quantisation-aware 8-bit banks, and the quantisation error recorded with them."""

from __future__ import annotations

import pytest
import torch

from compressdata.cli import main
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.loop import distill
from compressdata.distiller.synthetic import SyntheticSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ONE_BYTE_IMAGE = 7840  # the bytes of one 8-bit Fashion-MNIST image per class
TINY = DistillConfig.from_flat(iterations=4, unroll_steps=3, width=8, inner_batch_per_class=4, real_batch_per_class=4,
                               seed=5, budget_bytes=ONE_BYTE_IMAGE, storage_dtype="int8")


def _quiet(_message: str) -> None:
    return None


def _run(config: DistillConfig, train) -> tuple:
    states = []
    bank = distill(config, train, progress=False, callback=lambda state, _: states.append(state), log=_quiet)
    return bank, states[-1] if states else None


def test_quantization_aware_distillation_trains_on_exactly_what_it_stores(fashion_mnist_train):
    bank, state = _run(TINY.replace(quant_aware=True), fashion_mnist_train)
    assert bank.storage_dtypes() == {"bases": "int8", "addresses": "int8"}
    per_class = len(bank) // 10
    synthetic = SyntheticSet("memory", 10, per_class, (28, 28), storage=TINY.storage)
    with torch.no_grad():
        seen = synthetic.decode({k: v.cpu() for k, v in state.theta.items()})
    assert torch.equal(seen, bank.decode()), "the outer step saw the stored values"
    record = bank.provenance["quantization"]
    assert record["method"] == "quantization-aware" and record["storage_dtype"] == "int8"
    assert 0 < record["decoded_error"]["relative_rmse"] < 0.05
    post_training, _ = _run(TINY, fashion_mnist_train)
    assert post_training.provenance["quantization"]["method"] == "post-training"
    assert post_training.checksum() != bank.checksum(), "the quantised forward changes the gradients"


def test_a_byte_budget_buys_four_times_the_values_in_8_bits(fashion_mnist_train):
    int8, _ = _run(TINY, fashion_mnist_train)
    f32, _ = _run(TINY.replace(storage_dtype="f32"), fashion_mnist_train)
    assert int8.storage["bytes_stored"] <= ONE_BYTE_IMAGE and f32.storage["bytes_stored"] <= ONE_BYTE_IMAGE
    assert int8.storage["floats_stored"] > 3 * f32.storage["floats_stored"]
    layout = int8.provenance["layout"]
    assert layout["bytes"] == int8.storage["bytes_stored"] and layout["storage"] == {"bases": "int8",
                                                                                     "addresses": "int8"}
    assert (int8.provenance["budget_bytes"], int8.provenance["budget_ipc"]) == (ONE_BYTE_IMAGE, 0.25)
    hyper = int8.provenance["method"]["hyperparameters"]
    assert hyper["budget_bytes"] == ONE_BYTE_IMAGE and "budget_ipc" not in hyper  # the budget given, only
    assert "quantization" not in f32.provenance and f32.storage_dtypes() == {"bases": "f32", "addresses": "f32"}


def test_random_real_in_8_bits_is_one_real_image_per_class(fashion_mnist_train):
    bank = distill(DistillConfig.from_flat(method="random-real", budget_bytes=ONE_BYTE_IMAGE, storage_dtype="int8"),
                   fashion_mnist_train, progress=False, log=_quiet)
    assert (len(bank), bank.storage["bytes_stored"], bank.storage["ipc_equivalent_uint8"]) == (10, 7840, 1.0)
    assert bank.provenance["quantization"]["decoded_error"]["relative_rmse"] < 1e-3


def test_distill_command_with_byte_budget_and_8bit_storage(tmp_path, capsys):
    out = tmp_path / "int8.safetensors"
    assert main(["distill", "--out", str(out), "--budget-bytes", str(ONE_BYTE_IMAGE), "--storage-dtype",
                 "bases=int8,addresses=int8-row", "--quantization-aware", "--iterations", "1", "--unroll-steps",
                 "2", "--width", "8", "--inner-batch", "2", "--real-batch", "2", "--no-checkpoints",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "budget 7840 bytes" in printed and "(quantization-aware)" in printed and "decoded error" in printed
    assert f"wrote {out}: memory bank" in printed and "8-bit images per class" in printed


@pytest.mark.parametrize("args, message", [
    (["--quantization-aware"], "quant_aware trains through the stored values"),
    (["--method", "random-real", "--storage-dtype", "int8", "--quantization-aware"], "an optimised method"),
    (["--storage-dtype", "int4"], "storage_dtype: unknown storage dtype 'int4'"),
    (["--storage-dtype", "pixels=int8"], "'pixels' is not a stored tensor here"),
    (["--budget-bytes", "0"], "budget_bytes must be a positive int"),
    (["--budget-bytes", "100"], "budget too small for memory"),
])
def test_bad_byte_options_give_clear_errors(tmp_path, capsys, args, message):
    out = tmp_path / "x.safetensors"
    assert main(["distill", "--out", str(out), "--iterations", "1", "--no-progress", *args]) == 1
    err = capsys.readouterr().err
    assert "compressdata distill: error:" in err and message in err, err
    assert not out.exists()
