"""MemoryDataset where a user swaps it in for a torchvision dataset: the pytorch/examples MNIST training loop
(which shuffles only on an accelerator) on a bank stored class by class, a learned-label bank through
CrossEntropyLoss (and nll_loss), what `repr` says, and a bank given as a path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from compressdata import MemoryBank, MemoryDataset, TrainingRecipe
from compressdata.errors import UsageError
from compressdata.evaluate.training import label_loss

PER_CLASS = 30
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sorted_bank(fashion_mnist_train) -> MemoryBank:
    """Real Fashion-MNIST training images, 30 per class, stored class by class as a distilled bank is."""
    data = fashion_mnist_train
    index = torch.cat([data.class_indices(c)[:PER_CLASS] for c in range(data.num_classes)])
    return MemoryBank(pixels=data.images[index], labels=data.labels[index], classes=data.classes,
                      normalization=data.normalization)


@pytest.fixture(scope="module")
def learned_label_bank(fashion_mnist_test) -> MemoryBank:
    """Learned labels as the distiller stores them: logits that start at 5 x one-hot (a row sums to 5)."""
    data = fashion_mnist_test
    g = torch.Generator().manual_seed(3)
    logits = 5 * F.one_hot(data.labels[:100], 10).float() + torch.randn(100, 10, generator=g)
    return MemoryBank(pixels=data.images[:100], labels=logits, label_space="logits", classes=data.classes,
                      normalization=data.normalization,
                      recipe=TrainingRecipe(label_loss="soft_cross_entropy", label_temperature=2.0))


class ExamplesNet(nn.Module):
    """The network of pytorch/examples mnist/main.py."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = self.dropout2(F.relu(self.fc1(torch.flatten(self.dropout1(x), 1))))
        return F.log_softmax(self.fc2(x), dim=1)


def examples_main(train_set: MemoryDataset, test_images: torch.Tensor, test_labels: torch.Tensor) -> float:
    """pytorch/examples mnist/main.py on the CPU: no shuffle (it shuffles on an accelerator only), Adadelta
    lr 1 with StepLR 0.7, nll_loss; 3 epochs. Returns the test accuracy."""
    torch.manual_seed(1)
    train_loader = DataLoader(train_set, batch_size=64)
    model = ExamplesNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    for _epoch in range(3):
        model.train()
        for data, target in train_loader:
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
        scheduler.step()
    model.eval()
    with torch.no_grad():
        return float((model(test_images).argmax(1) == test_labels).float().mean())


def test_the_examples_loop_without_shuffle_learns_from_a_class_sorted_bank(sorted_bank, fashion_mnist_test):
    mnist_transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    test_images = (fashion_mnist_test.float_pixels[:1000] - 0.1307) / 0.3081
    test_labels = fashion_mnist_test.labels[:1000]
    default = examples_main(MemoryDataset(sorted_bank, output="pil", transform=mnist_transform),
                            test_images, test_labels)
    as_stored = examples_main(MemoryDataset(sorted_bank, output="pil", transform=mnist_transform, order="stored"),
                              test_images, test_labels)
    # measured: 66.6 % served interleaved, 21.0 % in the stored (class-sorted) order
    assert default > 0.55 and as_stored < 0.35, (default, as_stored)


def test_interleaved_order_agrees_across_targets_items_and_batches(sorted_bank):
    ds = MemoryDataset(sorted_bank)
    labels = sorted_bank.labels
    assert sorted(ds.rows.tolist()) == list(range(len(sorted_bank)))
    assert ds.rows[:12].tolist() == [0, 30, 60, 90, 120, 150, 180, 210, 240, 270, 1, 31]
    assert torch.equal(ds.targets, labels[ds.rows])
    for _, y in DataLoader(ds, batch_size=64):  # unshuffled: every batch holds every class
        assert set(y.tolist()) == set(range(10))
    decoded = sorted_bank.decode()
    x, y = next(iter(DataLoader(ds, batch_size=25)))
    torch.testing.assert_close(x, decoded[ds.rows[:25]])
    assert y.tolist() == ds.targets[:25].tolist() == [ds[i][1] for i in range(25)]
    torch.testing.assert_close(ds[17][0], decoded[int(ds.rows[17])])
    stored = MemoryDataset(sorted_bank, order="stored")
    assert torch.equal(stored.rows, torch.arange(300)) and torch.equal(stored.targets, labels)


def test_interleaving_classes_of_different_sizes():
    labels = torch.tensor([2, 0, 0, 0, 1, 2, 2, 2])
    bank = MemoryBank(pixels=torch.rand(8, 1, 4, 4), labels=labels, classes=["a", "b", "c"])
    ds = MemoryDataset(bank)
    assert ds.rows.tolist() == [1, 4, 0, 2, 5, 3, 6, 7]
    assert ds.targets.tolist() == [0, 1, 2, 0, 2, 0, 2, 2]


def test_learned_labels_through_cross_entropy_are_the_recipes_loss(learned_label_bank):
    bank = learned_label_bank
    assert float(bank.labels[0].sum()) == pytest.approx(5.0, abs=3.5)  # raw logits, not a distribution
    ds = MemoryDataset(bank)
    x, y = next(iter(DataLoader(ds, batch_size=32)))
    assert y.shape == (32, 10) and torch.allclose(y.sum(1), torch.ones(32))
    torch.testing.assert_close(y, torch.softmax(bank.labels[ds.rows[:32]] / 2.0, dim=1))
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    logits = model(x)
    recipe = label_loss(logits, bank.labels[ds.rows[:32]], "logits", "soft_cross_entropy", temperature=2.0)
    torch.testing.assert_close(nn.CrossEntropyLoss()(logits, y), recipe)
    nn.CrossEntropyLoss()(logits, y).backward()  # a plain loss tensor, trains as usual
    assert model[1].weight.grad is not None


def test_nll_loss_on_soft_targets_is_a_clear_error_and_hard_targets_work(learned_label_bank):
    bank = learned_label_bank
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.LogSoftmax(dim=1))
    for workers in (0, 2):
        x, y = next(iter(DataLoader(MemoryDataset(bank), batch_size=16, num_workers=workers)))
        with pytest.raises(UsageError, match="nll_loss needs class indices.*hard_targets=True"):
            F.nll_loss(model(x), y)
        with pytest.raises(UsageError, match="CrossEntropyLoss"):
            nn.NLLLoss()(model(x), y.to("cpu"))
    hard = MemoryDataset(bank, hard_targets=True)
    x, y = next(iter(DataLoader(hard, batch_size=16)))
    assert y.dtype == torch.int64 and torch.equal(y, bank.labels[hard.rows[:16]].argmax(1))
    assert float(F.nll_loss(model(x), y).detach()) > 0


def test_repr_states_the_output_space_and_the_targets(sorted_bank, learned_label_bank):
    pipeline = transforms.Compose([transforms.ToTensor()])
    text = repr(MemoryDataset(sorted_bank, output="pil", transform=pipeline))
    assert text.startswith("Dataset MemoryDataset\n    Number of datapoints: 300\n")
    assert "Normalize(mean=[0.286], std=[0.353])" in text and "not normalised" in text
    assert "interleaved across classes" in text and "class indices" in text
    assert "Transform: Compose(" in text and "ToTensor()" in text
    tensor = repr(MemoryDataset(sorted_bank))
    assert "the bank's normalised space" in tensor and "do not normalise again" in tensor
    soft = repr(MemoryDataset(learned_label_bank, order="stored"))
    assert "softmax(logits / 2) of the learned labels" in soft and "hard_targets=True" in soft
    assert "the bank's row order" in soft


def test_a_bank_file_path_works_as_the_bank(sorted_bank, tmp_path):
    path = tmp_path / "bank.safetensors"
    sorted_bank.save(path)
    for given in (path, str(path)):
        ds = MemoryDataset(given)
        assert len(ds) == 300 and ds.classes == sorted_bank.classes
        torch.testing.assert_close(ds[0][0], sorted_bank.decode([0])[0])
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        MemoryDataset(str(tmp_path / "missing.safetensors"))
    with pytest.raises(UsageError, match="bank must be a MemoryBank"):
        MemoryDataset(42)
