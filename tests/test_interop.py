"""Importing the field's release layouts into banks and exporting banks for the field's evaluators.

Every release is written here with torch.save from the structure its repository documents, holding
real Fashion-MNIST images (10 per class, normalised as the DC code does: (x - 0.2861) / 0.3530).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compressdata import InteropError, MemoryBank, import_bank
from compressdata.cli import main
from compressdata.evaluate import evaluate_bank
from compressdata.interop import export_release
from compressdata.interop.presets import CIFAR100_CLASSES, DATASETS
from compressdata.interop.zca import fit_kornia_zca
from compressdata.serving.export import export_png

MEAN, STD = 0.2861, 0.3530  # VICO-UoE/DatasetCondensation utils.get_dataset('FashionMNIST')
CHANCE = 0.1


@pytest.fixture(scope="module")
def release(fashion_mnist_train):
    """10 real images per class (class-ordered) in the DC code's normalised space, and labels."""
    real = fashion_mnist_train.balanced_subset(10, torch.Generator().manual_seed(0))
    return {"pixels": real.float_pixels, "images": (real.float_pixels - MEAN) / STD, "labels": real.labels.clone()}


@pytest.fixture(scope="module")
def test1000(fashion_mnist_test):
    return fashion_mnist_test.subset(torch.randperm(10000, generator=torch.Generator().manual_seed(1))[:1000])


def quick_accuracy(bank: MemoryBank, test, **overrides) -> float:
    """One width-16 network, 20 epochs, with everything else from the bank's recipe."""
    result = evaluate_bank(bank, test, networks=1, epochs=20, width=16, progress=False, **overrides)
    assert result.extra["lr"] == bank.recipe.lr and result.extra["augmentation"] == bank.recipe.augmentation
    return result.mean


def mtt_run(folder: Path, images, labels, lr: float | None = None, lr_name: str = "syn_lr_best.pt") -> Path:
    """MTT's distill.py output (images_best.pt, labels_best.pt) plus a learned lr as DATM saves it."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(images, folder / "images_best.pt")
    torch.save(labels, folder / "labels_best.pt")
    if lr is not None:
        torch.save(torch.tensor(lr), folder / lr_name)
    return folder


# ---- mtt / ftd / datm ---------------------------------------------------------------------------

def test_mtt_run_becomes_a_bank_with_the_learned_lr_and_mtt_protocol(release, test1000, tmp_path, one_torch_thread):
    run = mtt_run(tmp_path / "run", release["images"], release["labels"], lr=0.02)
    bank = import_bank(run, "mtt", dataset="fashion-mnist", method="mtt")
    assert bank.kind == "pixels" and torch.equal(bank.decode(), release["images"])
    assert torch.equal(bank.labels, release["labels"]) and bank.label_space == "index"
    assert bank.classes == list(DATASETS["fashion-mnist"].classes)
    assert bank.normalization.mean == [MEAN] and bank.normalization.std == [STD]
    assert not bank.normalization.uses_zca
    r = bank.recipe
    assert r.lr == pytest.approx(0.02) and r.epochs == 1000 and r.augmentation == "dsa"
    assert r.extra["dsa_strategy"] == "color_crop_cutout_flip_scale_rotate"
    assert (r.architecture, r.width, r.depth, r.norm, r.batch_size) == ("convnet", 128, 3, "instancenorm", 256)
    assert (r.optimizer, r.momentum, r.weight_decay, r.lr_schedule) == ("sgd", 0.9, 5e-4, "step")
    method = bank.provenance["method"]
    assert method["name"] == "mtt" and "CVPR 2022" in method["paper"] and "mtt-distillation" in method["code"]
    files = {f["name"]: f["sha256"] for f in bank.provenance["imported"]["files"]}
    assert files == {name: hashlib.sha256((run / name).read_bytes()).hexdigest()
                     for name in ("images_best.pt", "labels_best.pt", "syn_lr_best.pt")}
    assert bank.storage["floats_stored"] == 100 * 28 * 28 and bank.storage["ipc_equivalent"] == 10
    loaded = MemoryBank.from_file(_saved(bank, tmp_path / "mtt.safetensors"))
    assert loaded.recipe == bank.recipe and loaded.checksum() == bank.checksum()
    assert quick_accuracy(loaded, test1000) > CHANCE + 0.3


def test_datm_soft_labels_are_logits_trained_with_soft_cross_entropy(release, test1000, tmp_path, one_torch_thread):
    logits = 4.0 * torch.nn.functional.one_hot(release["labels"], 10).float() + 0.1 * torch.randn(
        100, 10, generator=torch.Generator().manual_seed(0))
    run = mtt_run(tmp_path / "Normal", release["images"], logits, lr=0.01, lr_name="lr_best.pt")
    bank = import_bank(run, "mtt", dataset="fashion-mnist", method="datm")
    assert bank.label_space == "logits" and torch.equal(bank.labels, logits)
    assert bank.recipe.label_loss == "soft_cross_entropy" and bank.recipe.label_temperature == 1.0
    assert bank.recipe.batch_size == 128 and bank.recipe.lr == pytest.approx(0.01)
    assert "ICLR 2024" in bank.provenance["method"]["paper"]
    assert quick_accuracy(bank, test1000) > CHANCE + 0.3


def test_mtt_layout_asks_for_what_the_files_cannot_say(release, tmp_path):
    run = mtt_run(tmp_path / "run", release["images"], release["labels"])  # MTT saves no lr
    with pytest.raises(InteropError, match="--method mtt, ftd or datm"):
        import_bank(run, "mtt", dataset="fashion-mnist")
    with pytest.raises(InteropError, match="--lr"):
        import_bank(run, "mtt", dataset="fashion-mnist", method="ftd")
    with pytest.raises(InteropError, match="--dataset"):
        import_bank(run, "mtt", method="mtt", lr=0.01)
    bank = import_bank([run / "images_best.pt", run / "labels_best.pt"], "mtt", dataset="fashion-mnist",
                       method="ftd", lr=0.005)
    assert bank.recipe.lr == 0.005 and bank.provenance["method"]["name"] == "ftd"


def test_zca_whitened_release_carries_its_whitening_to_the_test_split(release, test1000, tmp_path,
                                                                       one_torch_thread):
    mean, whiten = fit_kornia_zca(release["pixels"], eps=0.1)  # the rule on a small set: W^-2 = cov + eps
    flat = release["pixels"].reshape(100, -1).double()
    cov = (flat - flat.mean(0)).T @ (flat - flat.mean(0)) / 99
    inverse = torch.linalg.inv(whiten.double())
    assert torch.allclose(inverse @ inverse, cov + 0.1 * torch.eye(784, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(whiten, whiten.T, atol=1e-6) and torch.allclose(mean.double(), flat.mean(0), atol=1e-6)

    torch.save((release["pixels"], release["labels"]), tmp_path / "pixels.pt")
    bank = import_bank(tmp_path / "pixels.pt", "plain", dataset="fashion-mnist", method="mtt", lr=0.01,
                       zca=True, pixels=True)
    norm = bank.normalization
    assert norm.uses_zca and norm.zca_regularization == 0.1 and norm.mean == [0.0] and norm.std == [1.0]
    assert torch.allclose(bank.decode(), norm.apply(release["pixels"]), atol=1e-6)
    assert bank.provenance["imported"]["zca"]["fitted_on"] == "fashion-mnist/train"
    whitened = quick_accuracy(bank, test1000)
    assert whitened > CHANCE + 0.3
    without_whitening = MemoryBank(pixels=bank.decode(), labels=bank.labels, classes=bank.classes,
                                   recipe=bank.recipe)  # the field's failure: test images not whitened
    assert quick_accuracy(without_whitening, test1000) < whitened - 0.1


# ---- dc / dsa / dm ------------------------------------------------------------------------------

def test_dc_result_file_gives_dataset_method_model_ipc_and_one_experiment(release, test1000, tmp_path,
                                                                         one_torch_thread):
    other = release["images"].flip(-1)
    path = tmp_path / "res_DSA_FashionMNIST_ConvNet_10ipc.pt"
    torch.save({"data": [[release["images"], release["labels"]], [other, release["labels"]]],
                "accs_all_exps": {"ConvNet": [np.float64(0.8812), np.float64(0.8790)]}}, path)
    bank = import_bank(path, "dc", experiment=1)
    assert torch.equal(bank.decode(), other) and bank.provenance["method"]["name"] == "dsa"
    r = bank.recipe
    assert (r.lr, r.epochs, r.augmentation, r.extra["dsa_strategy"]) == (
        0.01, 1000, "dsa", "color_crop_cutout_flip_scale_rotate")
    imported = bank.provenance["imported"]
    assert imported["experiment"] == 1 and imported["experiments"] == 2
    assert imported["reported_accuracies"] == {"ConvNet": [0.8812, 0.8790]}
    assert bank.provenance["budget_ipc"] == 10 and bank.provenance["source"]["dataset"] == "fashion-mnist"
    assert quick_accuracy(bank, test1000) > CHANCE + 0.3
    with pytest.raises(InteropError, match=r"experiment 2 does not exist: 'data' holds 2 \(choose 0..1\)"):
        import_bank(path, "dc", experiment=2)
    with pytest.raises(InteropError, match="file name says dataset 'FashionMNIST'"):
        import_bank(path, "dc", dataset="mnist")
    other_method = path.rename(tmp_path / "res_IDM_FashionMNIST_ConvNet_10ipc.pt")  # DC layout, no preset
    with pytest.raises(InteropError, match="method 'IDM', which has no preset"):
        import_bank(other_method, "dc")
    bank = import_bank(other_method, "dc", method="dm")
    assert bank.provenance["imported"]["file_name_says"]["method"] == "IDM" and bank.recipe.epochs == 1000


@pytest.mark.parametrize("name, expected", [
    ("res_DC_FashionMNIST_ConvNet_1ipc.pt", {"epochs": 300, "augmentation": "none", "mean": [0.2861]}),
    ("res_DM_MNIST_ConvNet_1ipc.pt", {"epochs": 1000, "dsa_strategy": "color_crop_cutout_scale_rotate",
                                      "mean": [0.1307]}),
    ("res_DC_MNIST_ConvNetD4_1ipc.pt", {"epochs": 300, "depth": 4, "deviation": "crop/scale/rotate"}),
    ("res_DSA_FashionMNIST_ConvNetBN_1ipc.pt", {"norm": "batchnorm", "width": 128}),
])
def test_dc_family_presets_follow_the_repository(release, tmp_path, name, expected):
    torch.save({"data": [[release["images"][::10], release["labels"][::10]]]}, tmp_path / name)
    bank = import_bank(tmp_path / name, "dc")
    r = bank.recipe
    got = {"epochs": r.epochs, "augmentation": r.augmentation, "dsa_strategy": r.extra.get("dsa_strategy"),
           "mean": bank.normalization.mean, "depth": r.depth, "norm": r.norm, "width": r.width,
           "deviation": " ".join(bank.provenance["imported"].get("recipe_deviations", []))}
    for key, value in expected.items():
        assert value in got[key] if key == "deviation" else got[key] == value, key


def test_mtt_family_normalises_cifar100_with_cifar10_statistics_and_asks_about_zca(tmp_path):
    torch.save((torch.randn(100, 3, 32, 32), torch.arange(100)), tmp_path / "c100.pt")
    with pytest.raises(InteropError, match="pass zca=True or False") as refused:
        import_bank(tmp_path / "c100.pt", "plain", dataset="cifar100", method="mtt", lr=0.01)
    assert refused.value.command_line_message().endswith("pass --zca or --no-zca")
    mtt = import_bank(tmp_path / "c100.pt", "plain", dataset="cifar100", method="mtt", lr=0.01, zca=False)
    dm = import_bank(tmp_path / "c100.pt", "plain", dataset="cifar100", method="dm")
    assert mtt.normalization.mean == [0.4914, 0.4822, 0.4465] and mtt.normalization.std == [0.2023, 0.1994, 0.2010]
    assert dm.normalization.mean == [0.5071, 0.4866, 0.4409]
    assert mtt.classes == list(CIFAR100_CLASSES) and len(set(CIFAR100_CLASSES)) == 100
    assert list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)  # torchvision's order: alphabetical


# ---- plain, ddranking, folder -------------------------------------------------------------------

def test_plain_tuple_and_dict_give_the_same_examples(release, tmp_path):
    torch.save((release["images"], release["labels"]), tmp_path / "tuple.pt")
    torch.save({"x": release["images"], "y": release["labels"].float(), "lr": 0.03}, tmp_path / "dict.pt")
    a = import_bank(tmp_path / "tuple.pt", "plain", dataset="fashion-mnist")
    b = import_bank(tmp_path / "dict.pt", "plain", dataset="fashion-mnist")
    assert a.checksum() == b.checksum() and torch.equal(a.decode(), release["images"])
    assert a.provenance["method"]["name"] == "unknown" and a.recipe.epochs == 300 and a.recipe.lr == 0.01
    assert b.recipe.lr == 0.03


def test_ddranking_inputs_with_and_without_labels(release, tmp_path):
    folder = tmp_path / "ddr"
    folder.mkdir()
    torch.save(release["images"], folder / "images.pt")
    torch.save(torch.tensor(0.015), folder / "lr.pt")
    hard = import_bank(folder, "ddranking", dataset="fashion-mnist", method="datm")
    assert torch.equal(hard.labels, torch.arange(10).repeat_interleave(10))  # DD-Ranking's class order
    assert torch.equal(hard.labels, release["labels"]) and hard.recipe.lr == pytest.approx(0.015)
    logits = torch.randn(100, 10, generator=torch.Generator().manual_seed(2))
    torch.save(logits, folder / "labels.pt")
    soft = import_bank(folder, "ddranking", dataset="fashion-mnist", method="datm")
    assert soft.label_space == "logits" and torch.equal(soft.labels, logits)
    torch.save(release["images"][:95], folder / "images.pt")
    (folder / "labels.pt").unlink()
    with pytest.raises(InteropError, match="95 images to split evenly over the 10 classes"):
        import_bank(folder, "ddranking", dataset="fashion-mnist")


def test_image_folder_from_export_png_and_by_class_name(release, tmp_path):
    bank = import_bank(_plain(release, tmp_path), "plain", dataset="fashion-mnist", method="dm")
    export_png(bank, tmp_path / "png")
    back = import_bank(tmp_path / "png", "folder", dataset="fashion-mnist", method="dm")
    assert torch.equal(back.labels, bank.labels) and back.classes == bank.classes
    assert (back.decode_pixels() - bank.decode_pixels()).abs().max() <= 0.5 / 255 + 1e-6
    assert back.provenance["imported"]["images"] == "pixels"
    assert back.provenance["imported"]["files"][0]["files"] == 101  # 100 PNGs and classes.json

    by_name = tmp_path / "by-name"  # torchvision ImageFolder style: sorted names != class order
    for i, (image, label) in enumerate(zip(release["pixels"], release["labels"], strict=True)):
        folder = by_name / DATASETS["fashion-mnist"].classes[int(label)].replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255).round().byte().numpy(), mode="L").save(folder / f"{i:03d}.png")
    named = import_bank(by_name, "folder", dataset="fashion-mnist")
    order = torch.argsort(named.labels, stable=True)
    assert torch.equal(named.labels[order], release["labels"])
    (by_name / "Trouser").rename(by_name / "Trousers")
    with pytest.raises(InteropError, match="neither fashion-mnist's class names nor numbered"):
        import_bank(by_name, "folder", dataset="fashion-mnist")


# ---- export and round trips ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt, names", [("mtt", ("images_best.pt", "labels_best.pt", "lr_best.pt")),
                                        ("ddranking", ("images.pt", "labels.pt", "lr.pt"))])
def test_round_trip_import_export_import_gives_the_same_bank(release, tmp_path, fmt, names):
    logits = 4.0 * torch.nn.functional.one_hot(release["labels"], 10) + 0.5 * torch.randn(
        100, 10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(logits.argmax(1), release["labels"])  # class-ordered, as released sets are
    run = mtt_run(tmp_path / "run", release["images"], logits, lr=0.02, lr_name="lr_best.pt")
    first = import_bank(run, "mtt", dataset="fashion-mnist", method="datm")
    written = export_release(first, tmp_path / fmt, fmt)
    assert [p.name for p in written] == [*names, "compressdata.json"]
    for name in names:  # plain tensors: readable without full unpickling
        assert isinstance(torch.load(tmp_path / fmt / name, weights_only=True), torch.Tensor)
    again = import_bank(tmp_path / fmt, {"mtt": "mtt", "ddranking": "ddranking"}[fmt], dataset="fashion-mnist",
                        method="datm")
    assert again.checksum() == first.checksum() and again.recipe == first.recipe
    assert torch.equal(again.decode(), first.decode()) and torch.equal(again.labels, first.labels)
    sidecar = json.loads((tmp_path / fmt / "compressdata.json").read_text())
    assert sidecar["source_bank"]["checksum"] == first.checksum() and sidecar["recipe"]["lr"] == first.recipe.lr


def test_ddranking_export_orders_by_class_and_writes_probabilities_as_logits(release, tmp_path):
    shuffle = torch.randperm(100, generator=torch.Generator().manual_seed(4))
    probabilities = torch.softmax(torch.randn(100, 10, generator=torch.Generator().manual_seed(5)), 1)
    bank = MemoryBank(pixels=release["images"][shuffle], labels=probabilities, classes=[str(i) for i in range(10)],
                      label_space="probabilities")
    export_release(bank, tmp_path / "ddr", "ddranking")
    images = torch.load(tmp_path / "ddr" / "images.pt", weights_only=True)
    labels = torch.load(tmp_path / "ddr" / "labels.pt", weights_only=True)
    order = torch.argsort(probabilities.argmax(1), stable=True)
    assert torch.equal(images, release["images"][shuffle][order])
    assert torch.allclose(torch.softmax(labels, 1), probabilities[order], atol=1e-6)
    assert bool(torch.diff(labels.argmax(1)).ge(0).all())


def test_command_line_import_export_evaluate(release, tmp_path, capsys, one_torch_thread):
    run = mtt_run(tmp_path / "run", release["images"], release["labels"], lr=0.02)
    bank_path = tmp_path / "mtt.safetensors"
    assert main(["import", "--from", "mtt", str(run), "--dataset", "fashion-mnist", "--out", str(bank_path)]) == 1
    assert "--method mtt, ftd or datm" in capsys.readouterr().err and not bank_path.exists()
    assert main(["import", "--from", "mtt", str(run), "--dataset", "fashion-mnist", "--method", "mtt",
                 "--out", str(bank_path)]) == 0
    out = capsys.readouterr().out
    assert "IPC 10" in out and "lr 0.02" in out and "1000 epochs" in out and "augmentation dsa" in out
    assert f"compressdata evaluate {bank_path} --test fashion-mnist" in out
    assert main(["export", str(bank_path), "--format", "ddranking", str(tmp_path / "ddr")]) == 0
    capsys.readouterr()
    again = tmp_path / "again.safetensors"
    assert main(["import", "--from", "ddranking", str(tmp_path / "ddr"), "--dataset", "fashion-mnist",
                 "--method", "mtt", "--out", str(again)]) == 0
    assert MemoryBank.from_file(again).checksum() == MemoryBank.from_file(bank_path).checksum()
    capsys.readouterr()
    assert main(["evaluate", str(again), "--test", "fashion-mnist", "--networks", "1", "--epochs", "20",
                 "--width", "16", "--no-progress"]) == 0
    accuracy = float(capsys.readouterr().out.split()[1])
    assert accuracy > 100 * (CHANCE + 0.3)


def test_bad_releases_get_typed_errors_naming_the_problem(release, tmp_path):
    cases = {
        "shape.pt": ((release["images"][:, :, :14], release["labels"]), r"expected \[N, 1, 28, 28\]"),
        "range.pt": ((release["images"], release["labels"] + 1), r"values must lie in \[0, 10\)"),
        "count.pt": ((release["images"], release["labels"][:90]), "90 labels for 100 images"),
        "nan.pt": ((release["images"].clone().fill_(float("nan")), release["labels"]), "NaN or Inf"),
        "three.pt": ((release["images"], release["labels"], 0.1), "of length 3"),
        "soft.pt": ((release["images"], torch.rand(100, 7)), r"soft labels \[100, 10\]"),
    }
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(InteropError, match=message) as info:
            import_bank(tmp_path / name, "plain", dataset="fashion-mnist")
        assert name in str(info.value)
    run = mtt_run(tmp_path / "run", release["images"], release["labels"] + 5, lr=0.01)
    with pytest.raises(InteropError, match=r"labels_best.pt: labels: values must lie in \[0, 10\)"):
        import_bank(run, "mtt", dataset="fashion-mnist", method="mtt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "shape.pt").read_bytes()[:500])
    with pytest.raises(InteropError, match="not a readable torch.save file"):
        import_bank(tmp_path / "cut.pt", "plain", dataset="fashion-mnist")
    preview = _plain(release, tmp_path).rename(tmp_path / "images_zca_100.pt")
    with pytest.raises(InteropError, match="ZCA whitening undone"):
        import_bank([preview], "mtt", dataset="cifar10", method="mtt")


def _plain(release, folder: Path) -> Path:
    path = folder / "plain.pt"
    torch.save((release["images"], release["labels"]), path)
    return path


def _saved(bank: MemoryBank, path: Path) -> Path:
    bank.save(path)
    return path


def test_a_factorised_bank_exports_its_decoded_examples_and_reimports_at_their_full_storage(tmp_path):
    generator = torch.Generator().manual_seed(6)
    bank = MemoryBank(bases=torch.randn(6, 1, 14, 14, generator=generator),
                      addresses=torch.randn(40, 6, generator=generator), labels=torch.arange(10).repeat(4),
                      classes=list(DATASETS["fashion-mnist"].classes), image_size=(28, 28))
    export_release(bank, tmp_path / "mem", "mtt")
    assert torch.equal(torch.load(tmp_path / "mem" / "images_best.pt", weights_only=True), bank.decode())
    released = import_bank(tmp_path / "mem", "mtt", dataset="fashion-mnist", method="mtt")
    assert torch.equal(released.decode(), bank.decode()) and torch.equal(released.labels, bank.labels)
    assert bank.storage["floats_stored"] == 6 * 14 * 14 + 40 * 6  # what the bank stores
    assert released.storage["floats_stored"] == 40 * 28 * 28 and released.storage["ipc_equivalent"] == 4
