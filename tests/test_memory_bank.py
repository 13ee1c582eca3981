"""MemoryBank and save/load: the issue's API, exact round trips, decode, pixel space, atomic writes,
storage accounting. Pixel-space checks use real Fashion-MNIST images read from the local IDX files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from compressdata import (
    BankFormatError,
    EvaluationResult,
    MemoryBank,
    Normalization,
    TrainingRecipe,
    load_memory_bank,
    save_memory_bank,
)
from compressdata.bank.quantize import quantize_bank
from compressdata.params import layout_for_budget

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
MEAN, STD = [0.2860], [0.3530]


def extras() -> dict:
    return {
        "recipe": TrainingRecipe(epochs=50, augmentation="dsa", extra={"warmup_epochs": 2}),
        "provenance": {"source": {"dataset": "fashion-mnist", "split": "train"},
                       "method": {"name": "rtp", "hyper_parameters": {"K": 8, "inner_steps": 10}},
                       "library_version": "0.1.0", "date": "2026-11-24"},
        "evaluations": [EvaluationResult("convnet", [0.81, 0.83, 0.82], "fashion-mnist/test", 300)],
    }


def make_bank(case: str) -> MemoryBank:
    """Small banks covering every kind, stored dtype, label space and normalisation."""
    g = torch.Generator().manual_seed(0)
    n = 30
    labels = torch.arange(n) % 10
    soft = torch.randn(n, 10, generator=g)
    if case.startswith("memory"):
        dtype = {"memory-f16": torch.float16, "memory-bf16": torch.bfloat16}.get(case, torch.float32)
        return MemoryBank(
            bases=torch.randn(8, 1, 14, 14, generator=g).to(dtype),
            addresses=torch.randn(n, 8, generator=g).to(torch.bfloat16 if case == "memory-bf16" else torch.float32),
            labels=labels, classes=CLASSES, image_size=(28, 28),
            upsample="nearest" if case == "memory-nearest" else "bilinear",
            normalization=Normalization(MEAN, STD), **extras(),
        )
    if case == "pixels":
        return MemoryBank(pixels=torch.randn(n, 1, 28, 28, generator=g), labels=labels, classes=CLASSES, **extras())
    if case == "lowrank":
        return MemoryBank(lowrank_u=torch.randn(n, 1, 28, 2, generator=g),
                          lowrank_v=torch.randn(n, 1, 2, 28, generator=g), labels=labels, classes=CLASSES,
                          normalization=Normalization(MEAN, STD), **extras())
    if case == "probabilities":
        return MemoryBank(bases=torch.randn(8, 1, 14, 14, generator=g), addresses=torch.randn(n, 8, generator=g),
                          labels=soft.softmax(dim=1), classes=CLASSES, image_size=(28, 28), **extras())
    if case == "logits":
        return MemoryBank(pixels=torch.randn(n, 1, 28, 28, generator=g), labels=soft, label_space="logits",
                          classes=CLASSES, recipe=TrainingRecipe(label_loss="kl_divergence", label_temperature=4.0))
    if case == "rgb":
        return MemoryBank(bases=torch.randn(6, 3, 16, 16, generator=g), addresses=torch.randn(n, 6, generator=g),
                          labels=labels, classes=CLASSES, image_size=(32, 32),
                          normalization=Normalization([0.49, 0.48, 0.45], [0.25, 0.24, 0.26]), **extras())
    if case == "zca":
        d = 1 * 8 * 8
        whiten = torch.eye(d) + 0.05 * torch.randn(d, d, generator=g)
        norm = Normalization(MEAN, STD, zca_regularization=0.1, zca_mean=torch.randn(d, generator=g),
                             zca_whiten=whiten)
        return MemoryBank(pixels=torch.randn(n, 1, 8, 8, generator=g), labels=labels, classes=CLASSES,
                          normalization=norm, **extras())
    raise AssertionError(case)


CASES = ["memory", "memory-f16", "memory-bf16", "memory-nearest", "pixels", "lowrank", "probabilities", "logits",
         "rgb", "zca"]


def assert_same_bank(a: MemoryBank, b: MemoryBank) -> None:
    assert (a.kind, a.label_space, a.classes, a.image_shape, a.upsample) == \
           (b.kind, b.label_space, b.classes, b.image_shape, b.upsample)
    assert a.tensors.keys() == b.tensors.keys()
    for name in a.tensors:
        assert a.tensors[name].dtype == b.tensors[name].dtype, name
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    assert a.labels.dtype == b.labels.dtype and torch.equal(a.labels, b.labels)
    na, nb = a.normalization, b.normalization
    assert (na.mean, na.std, na.zca_regularization) == (nb.mean, nb.std, nb.zca_regularization)
    if na.uses_zca:
        assert torch.equal(na.zca_mean, nb.zca_mean) and torch.equal(na.zca_whiten, nb.zca_whiten)
    assert a.recipe == b.recipe and a.provenance == b.provenance and a.evaluations == b.evaluations
    assert a.metadata() == b.metadata() and a.checksum() == b.checksum()
    assert torch.equal(a.decode(), b.decode())


def file_metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert list(meta) == ["compressdata"]
    return json.loads(meta["compressdata"])


# ---- the API as written in the issue -------------------------------------------------------------


def test_issue_api_snippet_works_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import torch

    from compressdata import BankFormatError, MemoryBank, MemoryDataset, load_memory_bank, save_memory_bank
    bank = MemoryBank(bases=torch.randn(8, 1, 28, 28), addresses=torch.randn(20, 8),
                      labels=torch.arange(20) % 10, classes=[str(i) for i in range(10)])
    save_memory_bank(bank, "bank.safetensors")      # atomic: temp file + rename
    bank = load_memory_bank("bank.safetensors")      # validated; Hub ids come in a later issue
    x = bank.decode(torch.arange(5))                  # float32 [5, 1, 28, 28], batched
    ds = MemoryDataset(bank, transform=None)          # ds[i] -> (image, target)

    assert issubclass(BankFormatError, ValueError)
    assert x.dtype == torch.float32 and x.shape == (5, 1, 28, 28)
    image, target = ds[3]
    torch.testing.assert_close(image, x[3])
    assert target == 3 and len(ds) == 20 and ds.classes == [str(i) for i in range(10)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.safetensors"]


# ---- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_round_trip_is_exact(tmp_path, case):
    bank = make_bank(case)
    path = tmp_path / "bank.safetensors"
    save_memory_bank(bank, path)
    loaded = load_memory_bank(path)
    assert_same_bank(bank, loaded)
    assert file_metadata(path) == bank.metadata()


@pytest.mark.parametrize("case", CASES)
def test_saving_is_deterministic_and_load_save_is_a_fixpoint(tmp_path, case):
    a, b, c = (tmp_path / f"{name}.safetensors" for name in "abc")
    save_memory_bank(make_bank(case), a)
    save_memory_bank(make_bank(case), b)
    save_memory_bank(load_memory_bank(a), c)
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()


def test_reduced_precision_bases_stay_reduced_on_disk(tmp_path):
    half, full = tmp_path / "f16.safetensors", tmp_path / "f32.safetensors"
    save_memory_bank(make_bank("memory-f16"), half)
    save_memory_bank(make_bank("memory"), full)
    assert load_file(str(half))["bases"].dtype == torch.float16
    saved = full.stat().st_size - half.stat().st_size
    assert abs(saved - 8 * 14 * 14 * 2) < 16  # two bytes fewer per base value; headers differ by a few digits


def test_soft_labels(tmp_path):
    for case, space in (("probabilities", "probabilities"), ("logits", "logits")):
        bank = make_bank(case)
        assert bank.label_space == space and bank.labels.dtype == torch.float32 and bank.labels.shape == (30, 10)
        assert torch.equal(bank.hard_labels(), bank.labels.argmax(dim=1))
        save_memory_bank(bank, tmp_path / f"{case}.safetensors")
        loaded = load_memory_bank(tmp_path / f"{case}.safetensors")
        assert loaded.label_space == space and torch.equal(loaded.labels, bank.labels)
    assert load_memory_bank(tmp_path / "logits.safetensors").recipe.label_temperature == 4.0


def test_unknown_metadata_keys_survive_load_and_save(tmp_path):
    path = tmp_path / "bank.safetensors"
    save_memory_bank(make_bank("memory"), path)
    meta = file_metadata(path)
    meta["future_section"] = {"shards": [1, 2], "note": "written by a newer minor version"}
    meta["recipe"]["warmup_lr"] = 0.001
    meta["evaluations"][0]["seed_list"] = [0, 1, 2]
    meta["provenance"]["gpu_hours"] = 1.5
    save_file(load_file(str(path)), str(path), metadata={"compressdata": json.dumps(meta)})
    resaved = tmp_path / "resaved.safetensors"
    save_memory_bank(load_memory_bank(path), resaved)
    again = file_metadata(resaved)
    assert again["future_section"] == meta["future_section"]
    assert again["recipe"]["warmup_lr"] == 0.001 and again["recipe"]["warmup_epochs"] == 2
    assert again["evaluations"][0]["seed_list"] == [0, 1, 2]
    assert again["provenance"]["gpu_hours"] == 1.5


def test_add_evaluation_is_saved(tmp_path):
    bank = make_bank("pixels")
    bank.add_evaluation(EvaluationResult("resnet18", [0.70, 0.74], "fashion-mnist/test", 100))
    save_memory_bank(bank, tmp_path / "bank.safetensors")
    loaded = load_memory_bank(tmp_path / "bank.safetensors")
    assert [e.architecture for e in loaded.evaluations] == ["convnet", "resnet18"]
    last = loaded.evaluations[-1]
    assert last.accuracies == [0.70, 0.74] and last.networks == 2
    assert last.mean == pytest.approx(0.72) and last.std == pytest.approx(0.02)
    assert file_metadata(tmp_path / "bank.safetensors")["evaluations"][1]["networks"] == 2


# ---- decode --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["memory", "memory-f16", "memory-bf16", "memory-nearest", "pixels", "lowrank",
                                  "rgb"])
def test_decode_is_batched_and_float32(case):
    bank = make_bank(case)
    everything = bank.decode()
    assert everything.dtype == torch.float32 and everything.shape == (len(bank), *bank.image_shape)
    index = torch.tensor([5, 0, 29, 5, 17])
    torch.testing.assert_close(bank.decode(index), everything[index], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bank.decode([5, 0, 29, 5, 17]), everything[index], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bank.decode(slice(3, 9)), everything[3:9], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bank.decode(index, device="cpu"), everything[index], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["memory", "memory-f16", "memory-bf16", "memory-nearest", "rgb"])
def test_memory_decode_follows_the_formula(case):
    """example i = upsample(reshape(addresses[i] @ bases)), computed here in float64."""
    bank = make_bank(case)
    bases, addresses = bank.tensors["bases"].double(), bank.tensors["addresses"].double()
    k, c, h, w = bases.shape
    small = (addresses @ bases.reshape(k, -1)).reshape(-1, c, h, w)
    kwargs = {"align_corners": False} if bank.upsample == "bilinear" else {}
    expected = F.interpolate(small, size=bank.image_shape[1:], mode=bank.upsample, **kwargs)
    torch.testing.assert_close(bank.decode().double(), expected, rtol=1e-5, atol=1e-5)


def test_lowrank_and_pixels_decode_follow_the_formula():
    lowrank = make_bank("lowrank")
    torch.testing.assert_close(lowrank.decode(), lowrank.tensors["lowrank_u"] @ lowrank.tensors["lowrank_v"])
    pixels = make_bank("pixels")
    assert torch.equal(pixels.decode(), pixels.tensors["pixels"])


# ---- the pixel space, on real Fashion-MNIST ------------------------------------------------------


def test_decode_pixels_inverts_mean_std_on_real_images(tmp_path, fashion_mnist_test):
    images, labels = fashion_mnist_test.float_pixels[:64], fashion_mnist_test.labels[:64]
    normalised = (images - MEAN[0]) / STD[0]
    bank = MemoryBank(pixels=normalised, labels=labels, classes=CLASSES, normalization=Normalization(MEAN, STD))
    save_memory_bank(bank, tmp_path / "bank.safetensors")
    bank = load_memory_bank(tmp_path / "bank.safetensors")
    assert torch.equal(bank.decode(), normalised)
    torch.testing.assert_close(bank.decode_pixels(), images, rtol=0, atol=1e-6)
    torch.testing.assert_close(bank.decode_pixels([3, 7]), images[[3, 7]], rtol=0, atol=1e-6)
    assert float((bank.decode() - images).abs().max()) > 0.5  # the two spaces really differ


def test_decode_pixels_of_a_memory_bank_of_real_images(fashion_mnist_test):
    """Bases are normalised real images at full size, addresses pick one base each."""
    images = fashion_mnist_test.float_pixels[:10]
    bases = (images - MEAN[0]) / STD[0]
    bank = MemoryBank(bases=bases, addresses=torch.eye(10).repeat(2, 1), labels=torch.arange(20) % 10,
                      classes=CLASSES, normalization=Normalization(MEAN, STD))
    torch.testing.assert_close(bank.decode_pixels(), images.repeat(2, 1, 1, 1), rtol=0, atol=1e-6)


def test_decode_pixels_inverts_zca_on_real_images(tmp_path, fashion_mnist_test):
    """ZCA fitted on 500 real images (pooled to 14x14 to keep the whitening matrix small)."""
    images, labels = fashion_mnist_test.float_pixels[:500], fashion_mnist_test.labels[:500]
    images = F.avg_pool2d(images, 2)
    normalised = ((images - MEAN[0]) / STD[0]).reshape(500, -1).double()
    zca_mean = normalised.mean(dim=0)
    eigenvalues, vectors = torch.linalg.eigh(torch.cov(normalised.T))
    whiten = vectors @ torch.diag(1 / torch.sqrt(eigenvalues.clamp(min=0) + 0.1)) @ vectors.T
    norm = Normalization(MEAN, STD, zca_regularization=0.1, zca_mean=zca_mean.float(), zca_whiten=whiten.float())
    whitened = norm.apply(images[:40])
    expected = ((normalised[:40] - zca_mean) @ whiten).reshape(40, 1, 14, 14).float()
    torch.testing.assert_close(whitened, expected, rtol=1e-4, atol=1e-4)
    bank = MemoryBank(pixels=whitened, labels=labels[:40], classes=CLASSES, normalization=norm)
    save_memory_bank(bank, tmp_path / "bank.safetensors")
    bank = load_memory_bank(tmp_path / "bank.safetensors")
    assert bank.normalization.uses_zca and bank.normalization.zca_regularization == 0.1
    torch.testing.assert_close(bank.decode_pixels(), images[:40], rtol=0, atol=1e-4)


def test_decode_pixels_clamps_to_the_unit_range():
    bank = make_bank("pixels")
    pixels = bank.decode_pixels()
    assert float(pixels.min()) == 0.0 and float(pixels.max()) == 1.0
    inside = (bank.decode() >= 0) & (bank.decode() <= 1)
    assert torch.equal(pixels[inside], bank.decode()[inside])  # identity normalisation


# ---- atomic writes -------------------------------------------------------------------------------


def test_failed_write_when_the_parent_is_a_file_leaves_nothing(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_bytes(b"keep me")
    with pytest.raises(OSError):
        save_memory_bank(make_bank("memory"), blocker / "bank.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["not_a_dir"] and blocker.read_bytes() == b"keep me"


def test_failed_rename_leaves_no_partial_or_temp_file(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        save_memory_bank(make_bank("memory"), tmp_path / "bank.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "bank.safetensors"
    save_memory_bank(make_bank("pixels"), path)
    before = path.read_bytes()

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_memory_bank(make_bank("memory"), path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["bank.safetensors"] and path.read_bytes() == before
    assert load_memory_bank(path).kind == "pixels"


def test_save_creates_missing_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "bank.safetensors"
    save_memory_bank(make_bank("lowrank"), path)
    assert load_memory_bank(path).kind == "lowrank"


# ---- storage accounting --------------------------------------------------------------------------


@pytest.mark.parametrize("case, floats, budget_bytes, label_values", [
    ("memory", 8 * 1 * 14 * 14 + 30 * 8, 4 * (8 * 14 * 14 + 30 * 8), 30),
    ("memory-f16", 8 * 1 * 14 * 14 + 30 * 8, 2 * 8 * 14 * 14 + 4 * 30 * 8, 30),
    ("probabilities", 8 * 1 * 14 * 14 + 30 * 8, 4 * (8 * 14 * 14 + 30 * 8), 30 * 10),
    ("pixels", 30 * 28 * 28, 4 * 30 * 28 * 28, 30),
    ("lowrank", 30 * 1 * 28 * 2 + 30 * 1 * 2 * 28, 4 * 3360, 30),
    ("rgb", 6 * 3 * 16 * 16 + 30 * 6, 4 * 4788, 30),
    ("zca", 30 * 8 * 8, 4 * 30 * 8 * 8, 30),
    # 8-bit: per-tensor scale and zero point not counted, per-row ones 5 bytes a row
    ("memory:bases=int8,addresses=int8-row", 8 * 1 * 14 * 14 + 30 * 8, 8 * 14 * 14 + 30 * 8 + 30 * 5, 30),
])
def test_storage_accounting_is_exact(tmp_path, case, floats, budget_bytes, label_values):
    kind, _, dtype = case.partition(":")
    bank = make_bank(kind) if not dtype else quantize_bank(make_bank(kind), dtype)
    c, h, w = bank.image_shape
    image = c * h * w * 10
    expected = {"floats_stored": floats, "label_values": label_values, "examples": 30,
                "ipc_equivalent": round(floats / image, 6), "bytes_stored": budget_bytes,
                "tensor_bytes": {name: t.numel() * t.element_size() for name, t in bank.all_tensors().items()},
                "ipc_equivalent_uint8": round(budget_bytes / image, 6),
                "ipc_equivalent_float32": round(budget_bytes / (4 * image), 6)}
    assert bank.storage == expected
    save_memory_bank(bank, tmp_path / "bank.safetensors")
    assert file_metadata(tmp_path / "bank.safetensors")["storage"] == expected
    assert sum(expected["tensor_bytes"].values()) == len((tmp_path / "bank.safetensors").read_bytes()) - 8 - \
        int.from_bytes((tmp_path / "bank.safetensors").read_bytes()[:8], "little")


def test_storage_of_a_budgeted_memory_layout():
    layout = layout_for_budget("memory", 1, 10, (1, 28, 28), n_bases=16, downsample=2)
    n = layout.per_class * 10
    bank = MemoryBank(bases=torch.randn(16, 1, 14, 14), addresses=torch.randn(n, 16),
                      labels=torch.arange(n) % 10, classes=CLASSES, image_size=(28, 28))
    assert bank.storage["floats_stored"] == layout.floats <= 1 * 28 * 28 * 10
    assert 0.9 < bank.storage["ipc_equivalent"] <= 1.0 and len(bank) == n


# ---- construction validates ----------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, fragment", [
    ({"bases": torch.randn(8, 1, 14, 14), "addresses": torch.randn(20, 7)}, "K=8"),
    ({"bases": torch.randn(8, 1, 14, 14), "addresses": torch.randn(20, 8), "labels": torch.arange(20)},
     "outside [0, 10)"),
    ({"bases": torch.full((8, 1, 14, 14), float("nan")), "addresses": torch.randn(20, 8)}, "NaN or Inf"),
    ({"bases": torch.randn(8, 1, 14, 14)}, "cannot tell the kind"),
    ({"pixels": torch.randn(20, 1, 28, 28), "classes": ["a"] * 10}, "unique"),
    ({"pixels": torch.randn(20, 1, 28, 28), "labels": torch.randn(20, 3)}, "tensor 'labels'"),
    ({"pixels": torch.randn(20, 1, 28, 28), "labels": torch.arange(20) % 10 + 0.7, "label_space": "index"},
     "needs integer class indices"),
    ({"bases": torch.randn(8, 1, 14, 14), "addresses": torch.randn(20, 8), "upsample": "bicubic"}, "upsample"),
    ({"pixels": torch.randn(20, 1, 28, 28), "normalization": Normalization([0.5, 0.5], [0.2, 0.2])},
     "one entry per channel"),
])
def test_constructing_an_invalid_bank_raises(kwargs, fragment):
    kwargs = {"labels": torch.arange(20) % 10, "classes": CLASSES, **kwargs}
    with pytest.raises(BankFormatError) as info:
        MemoryBank(**kwargs)
    assert fragment in str(info.value)


def test_hard_labels_and_class_metadata():
    bank = make_bank("memory")
    assert bank.hard_labels().dtype == torch.int64 and torch.equal(bank.hard_labels(), torch.arange(30) % 10)
    assert bank.num_classes == 10 and len(bank) == 30 and bank.image_shape == (1, 28, 28)
    assert bank.class_to_idx["Bag"] == 8
    assert len(bank.checksum()) == 64 and bank.checksum() != make_bank("pixels").checksum()
