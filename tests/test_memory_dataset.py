"""MemoryDataset as a drop-in for torchvision's FashionMNIST, on banks made of real Fashion-MNIST images:
attributes, transforms, PIL output through a standard torchvision pipeline, soft labels, indexing,
DataLoader batching via __getitems__, worker processes and the device option.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from compressdata import MemoryBank, MemoryDataset, Normalization

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
MEAN, STD = [0.2860], [0.3530]
N = 200
UINT8_TOLERANCE = 0.5 / 255 / STD[0] + 1e-5  # one rounding to uint8, seen through Normalize


@pytest.fixture(scope="module")
def real(fashion_mnist_test) -> tuple[torch.Tensor, torch.Tensor]:
    """The first real test images as float32 in [0, 1], and their labels."""
    return fashion_mnist_test.float_pixels[: N + 16], fashion_mnist_test.labels[: N + 16]


@pytest.fixture(scope="module")
def memory_bank(real) -> MemoryBank:
    """16 bases: normalised real images pooled to 14x14; each example a convex mix of bases, so its
    pixels stay in [0, 1] and a uint8 PIL image can represent it."""
    images, labels = real
    bases = F.avg_pool2d((images[:16] - MEAN[0]) / STD[0], 2)
    g = torch.Generator().manual_seed(0)
    addresses = (3 * torch.randn(N, 16, generator=g)).softmax(dim=1)
    return MemoryBank(bases=bases, addresses=addresses, labels=labels[16:], classes=CLASSES, image_size=(28, 28),
                      normalization=Normalization(MEAN, STD))


@pytest.fixture(scope="module")
def pixels_bank(real) -> MemoryBank:
    """Real images, normalised, stored as they are (kind `pixels`)."""
    images, labels = real
    return MemoryBank(pixels=(images[:N] - MEAN[0]) / STD[0], labels=labels[:N], classes=CLASSES,
                      normalization=Normalization(MEAN, STD))


@pytest.fixture(scope="module")
def soft_banks(real) -> dict[str, MemoryBank]:
    images, _ = real
    logits = 2 * torch.randn(N, 10, generator=torch.Generator().manual_seed(1))
    pixels = (images[:N] - MEAN[0]) / STD[0]
    norm = Normalization(MEAN, STD)
    return {
        "probabilities": MemoryBank(pixels=pixels, labels=logits.softmax(dim=1), classes=CLASSES, normalization=norm),
        "logits": MemoryBank(pixels=pixels, labels=logits, label_space="logits", classes=CLASSES, normalization=norm),
    }


@pytest.fixture(scope="module")
def torchvision_fashion(tmp_path_factory) -> datasets.FashionMNIST:
    """torchvision's own FashionMNIST test split over the local files (decompressed where it looks)."""
    root = tmp_path_factory.mktemp("tv")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in FASHION.glob("*-ubyte.gz"):
        with gzip.open(gz) as src, open(raw / gz.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return datasets.FashionMNIST(str(root), train=False, download=False)


def batches(loader: DataLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


# ---- drop-in attributes and item types -----------------------------------------------------------


def test_attributes_and_items_match_torchvision(memory_bank, torchvision_fashion):
    tv = torchvision_fashion
    ds = MemoryDataset(memory_bank, output="pil")
    assert ds.classes == tv.classes and ds.class_to_idx == tv.class_to_idx
    assert isinstance(ds.targets, torch.Tensor) and ds.targets.dtype == tv.targets.dtype
    assert torch.equal(ds.targets, memory_bank.labels[ds.rows]) and len(ds) == N
    (image, target), (tv_image, tv_target) = ds[0], tv[0]
    assert isinstance(image, Image.Image) and isinstance(tv_image, Image.Image)
    assert (image.mode, image.size) == (tv_image.mode, tv_image.size) == ("L", (28, 28))
    assert type(target) is type(tv_target) is int


def test_the_same_torchvision_pipeline_runs_on_both(memory_bank, torchvision_fashion):
    pipeline = T.Compose([T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    tv = torchvision_fashion
    tv.transform = pipeline
    try:
        for ds in (tv, MemoryDataset(memory_bank, transform=pipeline, output="pil")):
            x, y = next(iter(DataLoader(ds, batch_size=32, shuffle=True)))
            assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
            assert y.shape == (32,) and y.dtype == torch.int64
            assert -1 / STD[0] < float(x.mean()) < 1 / STD[0]
    finally:
        tv.transform = None


def test_transform_and_target_transform_are_applied(memory_bank):
    ds = MemoryDataset(memory_bank, transform=lambda x: 2 * x + 1, target_transform=lambda t: CLASSES[t])
    for i in (0, 7, N - 1):
        image, target = ds[i]
        row = int(ds.rows[i])
        torch.testing.assert_close(image, 2 * memory_bank.decode([row])[0] + 1)
        assert target == CLASSES[int(memory_bank.labels[row])]


def test_tensor_output_is_the_decoded_example(memory_bank):
    ds = MemoryDataset(memory_bank)
    image, target = ds[11]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    row = int(ds.rows[11])
    torch.testing.assert_close(image, memory_bank.decode()[row], rtol=1e-6, atol=1e-6)
    assert target == int(memory_bank.labels[row])


# ---- PIL and pixel outputs -----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["memory_bank", "pixels_bank"])
def test_pil_through_totensor_normalize_gives_back_the_decoded_values(request, which):
    bank = request.getfixturevalue(which)
    pipeline = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    via_pil = torch.stack([x for x, _ in MemoryDataset(bank, transform=pipeline, output="pil", order="stored")])
    decoded = bank.decode()
    assert float(decoded.abs().max()) > 1.0  # a normalised space, not [0, 1]
    tolerance = UINT8_TOLERANCE if which == "memory_bank" else 1e-5  # real images are exact uint8 values
    torch.testing.assert_close(via_pil, decoded, rtol=0, atol=tolerance)


def test_pixels_output_undoes_the_normalisation(pixels_bank, real):
    images, _ = real
    ds = MemoryDataset(pixels_bank, output="pixels", order="stored")
    for i in (0, 5, N - 1):
        image, _ = ds[i]
        assert 0 <= float(image.min()) and float(image.max()) <= 1
        torch.testing.assert_close(image, images[i], rtol=0, atol=1e-6)


def test_rgb_pil_output(real):
    images, labels = real
    rgb = torch.cat([images[0:20], images[20:40], images[40:60]], dim=1)  # three real images as channels
    mean, std = [0.3, 0.25, 0.2], [0.35, 0.3, 0.25]
    norm = Normalization(mean, std)
    bank = MemoryBank(pixels=norm.apply(rgb), labels=labels[:20], classes=CLASSES, normalization=norm)
    image, _ = MemoryDataset(bank, output="pil", order="stored")[4]
    assert image.mode == "RGB" and image.size == (28, 28)
    torch.testing.assert_close(T.ToTensor()(image), rgb[4], rtol=0, atol=1e-6)


def test_invalid_options_are_rejected(pixels_bank):
    with pytest.raises(ValueError, match="output"):
        MemoryDataset(pixels_bank, output="numpy")
    two_channels = MemoryBank(pixels=torch.rand(4, 2, 8, 8), labels=[0, 1, 2, 3], classes=CLASSES)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        MemoryDataset(two_channels, output="pil")


# ---- labels and indexing -------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["probabilities", "logits"])
def test_soft_labels_are_the_distributions_the_recipe_trains_on(soft_banks, space):
    bank = soft_banks[space]
    ds = MemoryDataset(bank, order="stored")
    _, target = ds[3]
    assert isinstance(target, torch.Tensor) and target.dtype == torch.float32 and target.shape == (10,)
    expected = bank.labels if space == "probabilities" else (bank.labels / bank.recipe.label_temperature).softmax(1)
    torch.testing.assert_close(target, expected[3])
    assert float(target.sum()) == pytest.approx(1.0, abs=1e-5)
    x, y = next(iter(DataLoader(ds, batch_size=64)))
    assert x.shape == (64, 1, 28, 28) and y.shape == (64, 10) and y.dtype == torch.float32
    torch.testing.assert_close(y, expected[:64])
    _, hard = MemoryDataset(bank, order="stored", hard_targets=True)[3]
    assert hard == int(bank.labels[3].argmax())


def test_negative_indices_and_index_errors(pixels_bank):
    ds = MemoryDataset(pixels_bank)
    for negative, positive in ((-1, N - 1), (-N, 0), (-37, N - 37)):
        assert torch.equal(ds[negative][0], ds[positive][0]) and ds[negative][1] == ds[positive][1]
    assert torch.equal(ds[np.int64(5)][0], ds[5][0])
    for bad in (N, N + 10, -N - 1):
        with pytest.raises(IndexError):
            ds[bad]
    assert sum(1 for _ in ds) == N  # the legacy iteration protocol stops at IndexError


# ---- DataLoader ----------------------------------------------------------------------------------


class CountingDataset(MemoryDataset):
    """Records whether the DataLoader fetches item by item or a batch at once, and which indices."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.item_calls = 0
        self.batches: list[list[int]] = []

    def __getitem__(self, index):
        self.item_calls += 1
        return super().__getitem__(index)

    def __getitems__(self, indices):
        self.batches.append(list(indices))
        return super().__getitems__(indices)


def test_dataloader_uses_getitems_and_matches_item_access(memory_bank):
    ds = CountingDataset(memory_bank)
    got = batches(DataLoader(ds, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert ds.item_calls == 0 and [len(b) for b in ds.batches] == [64, 64, 64, 8] and len(got) == 4
    order = [i for b in ds.batches for i in b]
    assert sorted(order) == list(range(N)) and order != list(range(N))  # shuffled, each example once
    reference = MemoryDataset(memory_bank)
    for chunk, (x, y) in zip(ds.batches, got, strict=True):
        expected = torch.stack([reference[i][0] for i in chunk])
        torch.testing.assert_close(x, expected, rtol=1e-6, atol=1e-6)
        assert y.tolist() == [reference[i][1] for i in chunk]


@pytest.mark.parametrize("output", ["tensor", "pil"])
def test_two_workers_match_the_main_process(memory_bank, output):
    transform = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)]) if output == "pil" else None
    ds = MemoryDataset(memory_bank, transform=transform, output=output)

    def load(workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return batches(DataLoader(ds, batch_size=64, shuffle=True, num_workers=workers,
                                  generator=torch.Generator().manual_seed(7)))

    main, workers = load(0), load(2)
    assert len(main) == len(workers) == 4
    for (x0, y0), (x2, y2) in zip(main, workers, strict=True):
        torch.testing.assert_close(x2, x0, rtol=1e-6, atol=1e-6)
        assert torch.equal(y2, y0)


# ---- device option -------------------------------------------------------------------------------


def test_device_cpu_option(memory_bank):
    ds = MemoryDataset(memory_bank, device="cpu")
    image, target = ds[9]
    assert image.device.type == "cpu" and ds.device == torch.device("cpu")
    torch.testing.assert_close(image, MemoryDataset(memory_bank)[9][0])
    x, _ = next(iter(DataLoader(ds, batch_size=64)))
    assert x.device.type == "cpu" and x.shape == (64, 1, 28, 28)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_cuda_option(memory_bank):
    ds = MemoryDataset(memory_bank, device="cuda")
    x, y = next(iter(DataLoader(ds, batch_size=64)))
    assert x.device.type == "cuda"
    cpu_x, cpu_y = next(iter(DataLoader(MemoryDataset(memory_bank), batch_size=64)))
    torch.testing.assert_close(x.cpu(), cpu_x, rtol=1e-4, atol=1e-4)
    assert torch.equal(y.cpu(), cpu_y)
    image, _ = MemoryDataset(memory_bank, device="cuda", output="pil")[0]
    assert isinstance(image, Image.Image)
