"""The evaluation protocol on real Fashion-MNIST: label losses, determinism, short real runs, and
a bank whose normalisation differs from the test source's."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from compressdata import MemoryBank
from compressdata.bank.metadata import TrainingRecipe
from compressdata.data.sources import RealData
from compressdata.data.zca import zca_normalization
from compressdata.evaluate import (
    evaluate_bank,
    evaluate_tensors,
    label_loss,
    test_accuracy,
    train_network,
)
from compressdata.models import build_model

SHORT = TrainingRecipe(epochs=10, batch_size=50)


@pytest.fixture(scope="module")
def train50(fashion_mnist_train) -> RealData:
    """50 real training images per class."""
    return fashion_mnist_train.balanced_subset(50, torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def test2000(fashion_mnist_test) -> RealData:
    """2000 real test images (about 200 per class)."""
    return fashion_mnist_test.subset(torch.randperm(10000, generator=torch.Generator()
                                                    .manual_seed(0))[:2000])


# ---- label losses on small cases with known values ---------------------------------------------

def test_hard_label_cross_entropy_of_uniform_logits_is_log_k():
    logits = torch.zeros(4, 10)
    loss = label_loss(logits, torch.tensor([0, 3, 9, 2]), "index", "cross_entropy")
    assert float(loss) == pytest.approx(math.log(10), abs=1e-6)


def test_soft_cross_entropy_known_values():
    q = torch.tensor([[0.25, 0.75]])
    uniform = label_loss(torch.zeros(1, 2), q, "probabilities", "soft_cross_entropy")
    assert float(uniform) == pytest.approx(math.log(2), abs=1e-6)
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    matched = label_loss(q.log(), q, "probabilities", "soft_cross_entropy")
    assert float(matched) == pytest.approx(entropy, abs=1e-6)
    # logits targets: softmax([ln 3, 0] / 1) = [0.75, 0.25]; student softmax = [0.25, 0.75]
    z = torch.tensor([[math.log(3.0), 0.0]])
    student = torch.tensor([[0.0, math.log(3.0)]])
    expected = -(0.75 * math.log(0.25) + 0.25 * math.log(0.75))
    assert float(label_loss(student, z, "logits", "soft_cross_entropy")) == pytest.approx(
        expected, abs=1e-6)
    # at temperature 2 the targets soften to softmax([ln 3 / 2, 0])
    q2 = math.sqrt(3) / (math.sqrt(3) + 1)
    expected2 = -(q2 * math.log(0.25) + (1 - q2) * math.log(0.75))
    assert float(label_loss(student, z, "logits", "soft_cross_entropy", temperature=2.0)) == \
        pytest.approx(expected2, abs=1e-6)


def test_kl_divergence_known_values():
    z = torch.tensor([[2.0, 0.0]])
    q1 = math.e / (math.e + 1)  # softmax([2, 0] / 2)
    expected = 4 * (q1 * math.log(2 * q1) + (1 - q1) * math.log(2 * (1 - q1)))
    got = label_loss(torch.zeros(1, 2), z, "logits", "kl_divergence", temperature=2.0)
    assert float(got) == pytest.approx(expected, abs=1e-6)
    same = label_loss(z, z, "logits", "kl_divergence", temperature=3.0)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    # index labels: KL to one-hot at T = 1 is the cross-entropy
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 1])
    torch.testing.assert_close(label_loss(logits, y, "index", "kl_divergence"),
                               F.cross_entropy(logits, y))


def test_bad_label_configurations_are_named():
    with pytest.raises(ValueError, match="'cross_entropy' needs index labels; got 'logits'"):
        label_loss(torch.zeros(1, 2), torch.zeros(1, 2), "logits", "cross_entropy")
    with pytest.raises(ValueError, match="unknown label_loss 'hinge'"):
        label_loss(torch.zeros(1, 2), torch.zeros(1, 2), "logits", "hinge")
    model = build_model("mlp", 1, 10, 28, width=8)
    x = torch.zeros(4, 1, 28, 28)
    with pytest.raises(ValueError, match="recipe.optimizer 'lbfgs' is not supported"):
        train_network(model, x, torch.zeros(4, dtype=torch.int64), TrainingRecipe(optimizer="lbfgs"))
    with pytest.raises(ValueError, match="probabilities targets must have shape \\[N, "
                                         "num_classes\\] with N = 4; got \\(4,\\)"):
        train_network(model, x, torch.zeros(4), SHORT, label_space="probabilities")
    with pytest.raises(ValueError, match="unknown label_space 'onehot'"):
        train_network(model, x, torch.zeros(4, dtype=torch.int64), SHORT, label_space="onehot")


# ---- training ---------------------------------------------------------------------------------

def test_train_network_is_deterministic_for_a_seed(train50):
    recipe = TrainingRecipe(epochs=2, batch_size=64, augmentation="dsa")

    def trained(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model("mlp", 1, 10, 28, width=32)
        train_network(model, train50.images, train50.labels, recipe, seed=seed, device="cpu")
        return model.state_dict()

    a, b, c = trained(0), trained(0), trained(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_short_real_convnet_run_beats_chance(train50, test2000):
    state = torch.random.get_rng_state()
    result = evaluate_tensors(train50.images, train50.labels, SHORT, test2000, networks=2,
                              width=16, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    assert result.architecture == "convnet" and result.epochs == 10 and result.networks == 2
    assert result.test == "fashion-mnist/test" and result.extra["seeds"] == [0, 1]
    assert len(set(result.accuracies)) == 2  # two different networks
    assert result.mean > 0.6, result.summary()  # chance is 0.1


def test_soft_labels_train_networks_that_beat_chance(train50, test2000):
    smoothed = F.one_hot(train50.labels, 10).float() * 0.9 + 0.01
    result = evaluate_tensors(train50.images, smoothed,
                              TrainingRecipe(epochs=10, batch_size=50,
                                             label_loss="soft_cross_entropy"),
                              test2000, label_space="probabilities", arch="mlp", networks=1,
                              progress=False)
    assert result.mean > 0.6, result.summary()
    logits = 5.0 * F.one_hot(train50.labels, 10).float()
    result = evaluate_tensors(train50.images, logits,
                              TrainingRecipe(epochs=10, batch_size=50, label_loss="kl_divergence",
                                             label_temperature=2.0),
                              test2000, label_space="logits", arch="mlp", networks=1,
                              progress=False)
    assert result.mean > 0.6, result.summary()


def test_test_accuracy_counts_correct_predictions(test2000):
    class Oracle(torch.nn.Module):  # a "network" that knows the labels by looking up images
        def __init__(self) -> None:
            super().__init__()
            self.table = {x.numpy().tobytes(): int(y) for x, y in zip(test2000.images,
                                                                       test2000.labels,
                                                                       strict=True)}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            labels = [self.table[i.numpy().tobytes()] for i in x]
            wrong_half = torch.tensor(labels) * (torch.arange(len(labels)) % 2)
            return F.one_hot(wrong_half, 10).float()

    # every odd example predicted right, every even one predicted as class 0
    expected = float(((test2000.labels == 0) | (torch.arange(2000) % 2 == 1)).float().mean())
    assert test_accuracy(Oracle(), test2000, "cpu", batch_size=300) == pytest.approx(expected)


# ---- banks: decoded once, tested in the bank's own normalisation -----------------------------

def test_bank_with_its_own_normalisation_is_tested_in_that_space(fashion_mnist_train, train50,
                                                                  test2000):
    zca = zca_normalization(train50.normalization,
                            fashion_mnist_train.subset(slice(0, 10000)).float_pixels, 0.1)
    bank = MemoryBank(pixels=train50.with_normalization(zca).images, labels=train50.labels,
                      classes=train50.classes, normalization=zca, recipe=SHORT)
    assert test2000.normalization.zca_whiten is None  # the test source knows nothing of ZCA
    result = evaluate_bank(bank, test2000, networks=1, width=16, progress=False)
    assert result.mean > 0.6, result.summary()
    assert result.epochs == SHORT.epochs and result.networks == 1
    # control: the same training data tested without the bank's normalisation does much worse
    unmatched = evaluate_tensors(bank.decode(), bank.labels, SHORT, test2000, networks=1,
                                 width=16, progress=False)
    assert unmatched.mean < result.mean - 0.1, (unmatched.summary(), result.summary())
    bank.add_evaluation(result)
    assert bank.metadata()["evaluations"][0]["accuracies"] == result.accuracies


def test_recipe_network_shape_is_used_and_saved(tmp_path, train50, test2000):
    recipe = TrainingRecipe(architecture="mlp", epochs=1, width=7, depth=2)
    bank = MemoryBank(pixels=train50.images[:20], labels=train50.labels[:20],
                      classes=train50.classes, normalization=train50.normalization, recipe=recipe)
    bank.save(tmp_path / "b.safetensors")
    loaded = MemoryBank.from_file(tmp_path / "b.safetensors")
    assert loaded.recipe.network_options() == {"width": 7, "depth": 2}
    assert loaded.metadata()["format_version"] == "1.2"
    result = evaluate_bank(loaded, test2000, networks=1, progress=False)
    assert (result.extra["width"], result.extra["depth"]) == (7, 2)
    wider = evaluate_bank(loaded, test2000, networks=1, width=9, progress=False)
    assert (wider.extra["width"], wider.extra["depth"]) == (9, 2)
    other = evaluate_bank(loaded, test2000, arch="convnet", networks=1, epochs=1, progress=False)
    assert other.extra["width"] == 128  # the recipe's shape belongs to its own architecture


def test_bank_overrides_and_mismatches(train50, test2000):
    bank = MemoryBank(pixels=train50.images[:20], labels=train50.labels[:20],
                      classes=train50.classes, normalization=train50.normalization,
                      recipe=TrainingRecipe(architecture="mlp", epochs=1))
    result = evaluate_bank(bank, test2000, networks=1, epochs=2, progress=False)
    assert (result.architecture, result.epochs) == ("mlp", 2)
    assert result.extra["augmentation"] == "none"
    augmented = evaluate_bank(bank, test2000, networks=1, epochs=2, augmentation="dsa",
                              progress=False)
    assert augmented.extra["augmentation"] == "dsa" and augmented.accuracies != result.accuracies
    assert result.extra["lr"] == bank.recipe.lr == 0.01
    faster = evaluate_bank(bank, test2000, networks=1, epochs=2, lr=0.1, progress=False)
    assert faster.extra["lr"] == 0.1 and faster.accuracies != result.accuracies
    with pytest.raises(ValueError, match="lr must be a positive number, got -1"):
        evaluate_bank(bank, test2000, networks=1, epochs=1, lr=-1, progress=False)
    with pytest.raises(ValueError, match="recipe.augmentation 'blur' is not supported"):
        evaluate_bank(bank, test2000, networks=1, epochs=1, augmentation="blur", progress=False)
    few = MemoryBank(pixels=train50.images[:4], labels=torch.tensor([0, 1, 2, 3]),
                     classes=["a", "b", "c", "d"], normalization=train50.normalization)
    with pytest.raises(ValueError, match="the bank has 4 classes; the test split "
                                         "fashion-mnist/test has 10"):
        evaluate_bank(few, test2000, progress=False)
    small = MemoryBank(pixels=train50.images[:4, :, :14, :14], labels=train50.labels[:4],
                       classes=train50.classes, normalization=train50.normalization)
    with pytest.raises(ValueError, match="decodes to \\(1, 14, 14\\) images"):
        evaluate_bank(small, test2000, progress=False)
    with pytest.raises(ValueError, match="networks must be >= 1"):
        evaluate_bank(bank, test2000, networks=0, progress=False)
