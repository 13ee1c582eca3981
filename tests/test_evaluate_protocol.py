"""Named evaluation protocols and fair baselines on real Fashion-MNIST: the standard protocol's
settings, the random-real baseline at the bank's storage, the cached full-data reference, the
record in the bank file, the dataset card and the command line."""

from __future__ import annotations

import pytest
import torch

from compressdata import MemoryBank
from compressdata.bank.metadata import FULL_DATA, RANDOM_REAL, EvaluationResult, TrainingRecipe
from compressdata.cli import main
from compressdata.data.sources import RealData
from compressdata.evaluate import (
    evaluate_bank,
    evaluate_tensors,
    full_data_reference,
    load_full_data_reference,
    real_images_per_class,
    resolve_training,
)
from compressdata.evaluate.full_data import CACHE_ENV, reference_path
from compressdata.hub.card import entry_for, render_card
from compressdata.loading import load_memory_bank, save_memory_bank
from compressdata.params.budget import layout_for_budget

FAST = {"epochs": 40, "width": 16, "networks": 2}  # the standard protocol, shrunk for a test
IMAGE = (1, 28, 28)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test reads and writes full-data references in its own cache folder."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def test2000(fashion_mnist_test) -> RealData:
    return fashion_mnist_test.subset(torch.randperm(10000, generator=torch.Generator().manual_seed(0))[:2000])


@pytest.fixture(scope="module")
def class_means(fashion_mnist_train) -> MemoryBank:
    """A 1-image-per-class pixels bank: the mean of 200 real images of each class (a crude
    distilled set) with a bank recipe that the standard protocol must override."""
    real = fashion_mnist_train.balanced_subset(200, torch.Generator().manual_seed(1))
    means = real.images.view(10, 200, *IMAGE).mean(1)
    recipe = TrainingRecipe(architecture="mlp", optimizer="adam", lr=0.003, epochs=7, width=32)
    return MemoryBank(pixels=means, labels=torch.arange(10), classes=real.classes,
                      normalization=real.normalization, recipe=recipe, provenance={"source": "fashion-mnist"})


# ---- the protocol's settings -------------------------------------------------------------------

def test_standard_protocol_overrides_network_and_optimiser_and_keeps_the_data_settings():
    bank_recipe = TrainingRecipe(architecture="mlp", optimizer="adam", lr=0.2, momentum=0.5, weight_decay=0.0,
                                 epochs=77, batch_size=64, lr_schedule="cosine", augmentation="dsa",
                                 label_loss="soft_cross_entropy", label_temperature=2.0, width=16, depth=2,
                                 extra={"dsa_strategy": "flip_rotate", "note": "x"})
    standard = resolve_training(bank_recipe, "standard", networks=5)
    assert standard.recipe == TrainingRecipe(
        architecture="convnet", optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, epochs=1000,
        batch_size=256, lr_schedule="step", augmentation="dsa", label_loss="soft_cross_entropy",
        label_temperature=2.0, width=128, depth=3, norm="instancenorm", extra={"dsa_strategy": "flip_rotate"})
    assert standard.overrides == {} and standard.network_key() == "convnet-w128-d3-instancenorm"
    plain = resolve_training(TrainingRecipe(augmentation="none"), "standard")
    assert plain.recipe.epochs == 300
    dsa = resolve_training(TrainingRecipe(), "standard", augmentation="dsa")
    assert dsa.recipe.epochs == 1000 and dsa.overrides == {"augmentation": "dsa"}
    shrunk = resolve_training(bank_recipe, "standard", epochs=3, width=8, networks=2, lr=0.03)
    assert (shrunk.recipe.epochs, shrunk.recipe.width, shrunk.recipe.lr) == (3, 8, 0.03)
    assert shrunk.overrides == {"width": 8, "epochs": 3, "lr": 0.03, "networks": 2}  # fewer than 5 networks
    other = resolve_training(bank_recipe, "standard", arch="resnet18")
    assert other.recipe.network_options() == {} and other.network_key() == "resnet18"
    recipe = resolve_training(bank_recipe, "recipe", networks=1)
    assert recipe.recipe == bank_recipe and recipe.overrides == {}
    with pytest.raises(ValueError, match="unknown evaluation protocol 'dc'; expected one of"):
        resolve_training(bank_recipe, "dc")


def test_real_images_per_class_buys_the_banks_storage():
    for kind in ("pixels", "memory", "lowrank"):
        for ipc in (1, 10, 50):
            layout = layout_for_budget(kind, ipc, 10, IMAGE)
            assert real_images_per_class(layout.floats, IMAGE, 10) == ipc, (kind, ipc, layout)
    assert real_images_per_class(784 * 10 // 5, IMAGE, 10) == 1  # never fewer than one
    assert real_images_per_class(int(2.6 * 7840), IMAGE, 10) == 3  # the nearest storage


# ---- evaluation with baselines on real data ------------------------------------------------------

def test_standard_evaluation_with_random_real_baseline(class_means, fashion_mnist_train, test2000):
    result = evaluate_bank(class_means, test2000, protocol="standard", baselines=True, train=fashion_mnist_train,
                           progress=False, **FAST)
    assert result.protocol == "standard" and result.architecture == "convnet" and result.epochs == 40
    assert result.extra["recipe"]["optimizer"] == "sgd" and result.extra["width"] == 16  # not the bank's mlp/adam
    assert result.extra["protocol_overrides"] == {"width": 16, "epochs": 40, "networks": 2}
    assert result.mean > 0.4, result.summary()  # chance is 0.1
    random_real = result.baselines[RANDOM_REAL]
    assert random_real.extra["per_class"] == 1 and random_real.extra["seeds"] == result.extra["seeds"] == [0, 1]
    assert random_real.mean > 0.25, result.summary()
    assert result.improvement_over_random == pytest.approx(result.mean - random_real.mean)
    assert FULL_DATA not in result.baselines and result.gap_to_full_data is None  # nothing cached
    # the baseline is exactly the protocol on a seeded random real subset in the bank's space
    subset = fashion_mnist_train.balanced_subset(1, torch.Generator().manual_seed(0))
    direct = evaluate_tensors(subset.images, subset.labels, TrainingRecipe(), test2000, protocol="standard",
                              progress=False, **FAST)
    assert random_real.accuracies == direct.accuracies


def test_full_data_reference_is_cached_reused_and_reported(class_means, fashion_mnist_train, test2000):
    train = fashion_mnist_train.subset(slice(0, 3000))  # a small "full" split keeps the test fast
    reference, path, computed = full_data_reference(train, test2000, "standard", epochs=4, networks=1, width=16,
                                                    progress=False)
    assert computed and path == reference_path("fashion-mnist", "standard", "convnet-w16-d3-instancenorm")
    assert reference.mean > 0.4, reference.summary()
    assert reference.extra["command"] == ("compressdata baseline full --test fashion-mnist --protocol standard "
                                          "--epochs 4 --networks 1 --width 16")
    assert reference.extra["train_examples"] == 3000 and reference.extra["recipe"]["epochs"] == 4
    written = path.read_bytes()
    stat = path.stat()
    again, _, computed = full_data_reference(train, test2000, "standard", epochs=4, networks=1, width=16,
                                             progress=False)
    assert not computed and again.to_dict() == reference.to_dict()  # read back, not retrained
    assert path.read_bytes() == written and path.stat().st_mtime_ns == stat.st_mtime_ns
    result = evaluate_bank(class_means, test2000, protocol="standard", baselines=True, train=fashion_mnist_train,
                           progress=False, **FAST)
    assert result.baselines[FULL_DATA].to_dict() == reference.to_dict()
    assert result.gap_to_full_data == pytest.approx(reference.mean - result.mean)
    assert FULL_DATA not in evaluate_bank(class_means, test2000, protocol="standard", baselines=True,
                                          train=fashion_mnist_train, progress=False, epochs=1, width=8,
                                          networks=1).baselines  # another network: no reference
    with pytest.raises(ValueError, match="'recipe' protocol trains with each bank's own recipe"):
        full_data_reference(train, test2000, "recipe")
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a compressdata full-data reference"):
        load_full_data_reference("fashion-mnist", "standard", "convnet-w16-d3-instancenorm")


def test_baselines_round_trip_through_the_bank_file_and_show_on_the_card(class_means, fashion_mnist_train,
                                                                         test2000, tmp_path):
    full_data_reference(fashion_mnist_train.subset(slice(0, 2000)), test2000, epochs=2, networks=1, width=16,
                        progress=False)
    result = evaluate_bank(class_means, test2000, protocol="standard", baselines=True, train=fashion_mnist_train,
                           progress=False, **FAST)
    path = tmp_path / "means.safetensors"
    class_means.add_evaluation(result)
    try:
        save_memory_bank(class_means, path)
    finally:
        class_means.evaluations.clear()
    loaded = load_memory_bank(path)
    (back,) = loaded.evaluations
    assert back.to_dict() == result.to_dict() and back.protocol == "standard"
    assert back.baselines[RANDOM_REAL].accuracies == result.baselines[RANDOM_REAL].accuracies
    assert back.improvement_over_random == result.improvement_over_random
    assert back.gap_to_full_data == result.gap_to_full_data
    stored = loaded.metadata()["evaluations"][0]
    assert stored["protocol"] == "standard" and set(stored["baselines"]) == {RANDOM_REAL, FULL_DATA}
    card = render_card("user/means", [(entry_for(loaded, "ipc1", path.read_bytes(), 0), loaded)])
    random_real, full = result.baselines[RANDOM_REAL], result.baselines[FULL_DATA]
    for text in (f"{100 * result.mean:.2f} ± {100 * result.std:.2f} %",
                 f"1/class: {100 * random_real.mean:.2f} ± {100 * random_real.std:.2f} % "
                 f"({100 * result.improvement_over_random:+.2f})",
                 f"{100 * full.mean:.2f} ± {100 * full.std:.2f} % (2 epochs; gap {100 * result.gap_to_full_data:.2f})",
                 "standard (epochs=40, networks=2, width=16)"):
        assert text in card, text


def test_evaluations_of_other_writers_keep_unknown_baselines():
    odd = {"architecture": "convnet", "accuracies": [0.5], "test": "t", "epochs": 1, "protocol": 3,
           "baselines": {"random_real": {"accuracies": "many"}}}
    parsed = EvaluationResult.from_dict(odd)
    assert parsed.protocol is None and parsed.baselines == {}
    assert parsed.to_dict()["baselines"] == odd["baselines"] and parsed.to_dict()["protocol"] == 3
    old = EvaluationResult.from_dict({"architecture": "mlp", "accuracies": [0.25, 0.75], "test": "t", "epochs": 2})
    assert old.protocol is None and old.improvement_over_random is None and "protocol" not in old.to_dict()


# ---- the command line ----------------------------------------------------------------------------

def test_cli_evaluate_reports_and_records_baselines(class_means, fashion_mnist_train, fashion_mnist_test,
                                                    tmp_path, capsys):
    path = tmp_path / "means.safetensors"
    save_memory_bank(class_means, path)
    args = ["evaluate", str(path), "--test", "fashion-mnist", "--protocol", "standard", "--epochs", "3",
            "--width", "8", "--networks", "1", "--no-progress"]
    assert main([*args, "--record"]) == 0
    printed = capsys.readouterr().out
    assert "standard protocol; overridden: width=8, epochs=3, networks=1" in printed
    assert "random real, 1 per class (same storage, protocol and network seeds)" in printed
    assert ("full data: no reference cached for fashion-mnist under the standard protocol with this network; "
            "compute it once with: compressdata baseline full --test fashion-mnist --protocol standard --epochs 20 "
            "--networks 2 --width 8") in printed
    recorded = load_memory_bank(path).evaluations[-1]
    assert recorded.protocol == "standard" and recorded.baselines[RANDOM_REAL].extra["per_class"] == 1
    assert main(["inspect", str(path)]) == 0
    assert "    random real (1 per class, same storage): " in capsys.readouterr().out
    # a reference computed once (here on a subset, for speed) is what `baseline full` and `evaluate` find
    full_data_reference(fashion_mnist_train.subset(slice(0, 1000)), fashion_mnist_test, epochs=2, networks=1,
                        width=8, progress=False)
    assert main(["baseline", "full", "--test", "fashion-mnist", "--epochs", "2", "--networks", "1", "--width", "8",
                 "--no-progress"]) == 0
    assert "already cached in" in capsys.readouterr().out
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "full data (2 epochs, 1 networks, made by: compressdata baseline full" in printed and "gap" in printed
    assert main([*args, "--no-baselines"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "random real" not in printed and "full data" not in printed
    assert main([*args, "--protocol", "recipe"]) == 0
    assert "the recipe protocol trains with each bank's own recipe" in capsys.readouterr().out
    assert main(["baseline", "full", "--test", "fashion-mnist", "--networks", "0"]) == 1
    assert "--networks must be >= 1, got 0" in capsys.readouterr().err


def test_compiled_networks_train_the_same_way(fashion_mnist_train, test2000):
    real = fashion_mnist_train.balanced_subset(10, torch.Generator().manual_seed(2))
    runs = [evaluate_tensors(real.images, real.labels, TrainingRecipe(architecture="mlp", epochs=50, lr=0.05, width=32),
                             test2000, networks=1, progress=False, compile_networks=compiled)
            for compiled in (False, True)]
    eager, compiled = runs
    assert compiled.extra["compiled"] is True and "compiled" not in eager.extra
    assert eager.mean > 0.5 and compiled.mean == pytest.approx(eager.mean, abs=0.01)  # rounding, not training
