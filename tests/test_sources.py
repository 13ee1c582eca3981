"""Real-data sources: the IDX reader, every source kind built from real Fashion-MNIST images,
RealData's sampling and normalisation, ZCA."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from compressdata.bank.metadata import Normalization
from compressdata.data.readers.idx import IDXFormatError, read_idx, read_idx_bytes
from compressdata.data.real import RealData, channel_stats
from compressdata.data.sources import PRESETS, load_source, source_from_hf_dataset
from compressdata.data.zca import fit_zca, zca_normalization

FMNIST_CLASSES = PRESETS["fashion-mnist"].classes


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture(scope="module")
def small(fashion_mnist_train) -> RealData:
    """30 real training images: 3 of each class, grouped by class."""
    return fashion_mnist_train.balanced_subset(3, torch.Generator().manual_seed(0))


def assert_same_examples(a: RealData, b: RealData) -> None:
    assert a.image_shape == b.image_shape and len(a) == len(b)
    torch.testing.assert_close(a.float_pixels, b.float_pixels, rtol=0, atol=0)
    assert torch.equal(a.labels, b.labels)


# ---- the local IDX preset --------------------------------------------------------------------

def test_fashion_mnist_preset_reads_the_local_idx_files(fashion_mnist_train, fashion_mnist_test):
    tr, te = fashion_mnist_train, fashion_mnist_test
    assert tr.pixels.shape == (60000, 1, 28, 28) and tr.pixels.dtype == torch.uint8
    assert te.pixels.shape == (10000, 1, 28, 28)
    assert tr.classes == list(FMNIST_CLASSES) and tr.num_classes == 10
    assert torch.bincount(tr.labels).tolist() == [6000] * 10
    assert torch.bincount(te.labels).tolist() == [1000] * 10
    assert (tr.name, tr.split, te.split) == ("fashion-mnist", "train", "test")
    # the preset's statistics are the data's own, so normalised training images are standard
    mean, std = channel_stats(tr.pixels)
    assert mean[0] == pytest.approx(tr.normalization.mean[0], abs=1e-3)
    assert std[0] == pytest.approx(tr.normalization.std[0], abs=1e-3)
    assert float(tr.images.mean()) == pytest.approx(0.0, abs=2e-3)
    assert float(tr.images.std()) == pytest.approx(1.0, abs=2e-3)


def test_idx_reader_matches_plain_and_gzip_and_all_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    cases = {0x08: rng.integers(0, 256, (3, 4, 5)).astype(np.uint8),
             0x09: rng.integers(-128, 128, (7,)).astype(np.int8),
             0x0B: rng.integers(-3000, 3000, (2, 3)).astype(np.int16),
             0x0C: rng.integers(-10**6, 10**6, (4,)).astype(np.int32),
             0x0D: rng.standard_normal((2, 2)).astype(np.float32),
             0x0E: rng.standard_normal((3,)).astype(np.float64)}
    for code, array in cases.items():
        raw = idx_bytes(array, code)
        (tmp_path / "plain").write_bytes(raw)
        (tmp_path / "packed.whatever").write_bytes(gzip.compress(raw))
        for name in ("plain", "packed.whatever"):
            t = read_idx(tmp_path / name)
            assert t.shape == array.shape
            np.testing.assert_array_equal(t.numpy(), array)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:3], "at least 4"),
    (lambda b: b"\x01" + b[1:], "two zero bytes"),
    (lambda b: b[:2] + b"\x07" + b[3:], "unknown dtype code 0x07"),
    (lambda b: b[:3] + b"\x00" + b[4:], "number of dimensions is 0"),
    (lambda b: b[:3] + b"\x05" + b[4:], "header needs 24 bytes"),
    (lambda b: b[:-1], "needs 18 bytes; file has 17"),
    (lambda b: b + b"\x00", "needs 18 bytes; file has 19"),
])
def test_idx_reader_rejects_malformed_files(mutate, message):
    good = idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3), 0x08)
    with pytest.raises(IDXFormatError, match=message):
        read_idx_bytes(mutate(good), "f.idx")


def test_idx_reader_rejects_a_corrupt_gzip_and_a_missing_file(tmp_path):
    raw = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8), 0x08))
    (tmp_path / "cut.gz").write_bytes(raw[:20])
    with pytest.raises(IDXFormatError, match="corrupt gzip"):
        read_idx(tmp_path / "cut.gz")
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        read_idx(tmp_path / "nope")


def test_idx_prefix_reads_an_mnist_layout_folder(tmp_path, small):
    images = small.pixels[:, 0].numpy()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images, 0x08))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(small.labels.numpy().astype(np.uint8), 0x08)))
    data = load_source(f"idx:{tmp_path}", split="test")
    assert_same_examples(data, small)
    assert data.classes == [str(i) for i in range(10)] and data.name == f"idx:{tmp_path}"
    # a folder without the split's files names what it looked for
    with pytest.raises(FileNotFoundError, match="no train IDX files"):
        load_source(f"idx:{tmp_path}", split="train")


def test_preset_falls_back_to_torchvision_files_under_root(tmp_path, fashion_mnist_test):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for kind in ("images-idx3", "labels-idx1"):
        for prefix in ("train", "t10k"):
            src = f"/usr/share/datasets/fashion-mnist/{prefix}-{kind}-ubyte.gz"
            with gzip.open(src) as f, open(raw / f"{prefix}-{kind}-ubyte", "wb") as out:
                shutil.copyfileobj(f, out)
    via_torchvision = load_source("fashion-mnist", split="test", root=tmp_path)
    assert_same_examples(via_torchvision, fashion_mnist_test)
    assert via_torchvision.classes == fashion_mnist_test.classes
    by_class_name = load_source("torchvision:FashionMNIST", split="test", root=tmp_path)
    assert_same_examples(by_class_name, fashion_mnist_test)
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_source("mnist", root=tmp_path / "empty")


# ---- image folders, Hugging Face datasets, webdataset shards ---------------------------------

def write_pngs(small: RealData, root) -> None:
    for i in range(len(small)):
        c = int(small.labels[i])
        folder = root / f"{c:02d}-{FMNIST_CLASSES[c].replace('/', '_')}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(small.pixels[i, 0].numpy()).save(folder / f"{i:04d}.png")


def test_folder_source_loads_the_same_examples(tmp_path, small):
    write_pngs(small, tmp_path / "train")
    data = load_source(f"folder:{tmp_path}")  # PATH/train/<class>/... is found
    assert_same_examples(data, small)
    assert data.classes[0] == "00-T-shirt_top" and data.num_classes == 10
    assert data.pixels.dtype == torch.uint8
    assert_same_examples(load_source(f"folder:{tmp_path / 'train'}", split="other"), small)
    (tmp_path / "train" / "10-empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_source(f"folder:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_source(f"folder:{tmp_path / 'missing'}")


def test_hf_dataset_with_image_and_classlabel_columns(tmp_path, small):
    import datasets

    features = datasets.Features({"img": datasets.Image(),
                                  "fine": datasets.ClassLabel(names=list(FMNIST_CLASSES))})
    ds = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(p[0].numpy()) for p in small.pixels],
         "fine": small.labels.tolist()}, features=features)
    data = source_from_hf_dataset(ds, name="hf:test", split="train")
    assert_same_examples(data, small)
    assert data.classes == list(FMNIST_CLASSES)
    # a DatasetDict saved to disk, loaded through the hf: prefix
    datasets.DatasetDict({"train": ds, "test": ds.select(range(5))}).save_to_disk(tmp_path / "dd")
    assert_same_examples(load_source(f"hf:{tmp_path / 'dd'}", split="train"), small)
    assert len(load_source(f"hf:{tmp_path / 'dd'}", split="test")) == 5
    with pytest.raises(ValueError, match="no split 'validation'"):
        load_source(f"hf:{tmp_path / 'dd'}", split="validation")


def test_hf_dataset_with_array_images_and_plain_int_labels(small):
    import datasets

    features = datasets.Features({"pixels": datasets.Array2D((28, 28), "uint8"),
                                  "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"pixels": small.pixels[:, 0].numpy(),
                                     "label": small.labels.numpy()}, features=features)
    data = source_from_hf_dataset(ds)
    assert_same_examples(data, small)
    assert data.classes == [str(i) for i in range(10)]
    no_label = datasets.Dataset.from_dict({"pixels": small.pixels[:2, 0].numpy()})
    with pytest.raises(ValueError, match="no label column found"):
        source_from_hf_dataset(no_label)


def test_hf_hub_ids_need_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass download=True"):
        load_source("hf:someone/not-a-local-dir")


def test_webdataset_shards_load_the_same_examples(tmp_path, small):
    import io

    import webdataset as wds

    pattern = str(tmp_path / "train-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=12, verbose=0) as sink:
        for i in range(len(small)):
            buf = io.BytesIO()
            Image.fromarray(small.pixels[i, 0].numpy()).save(buf, format="png")
            sink.write({"__key__": f"s{i:06d}", "png": buf.getvalue(),
                        "cls": str(int(small.labels[i])).encode()})
    assert len(list(tmp_path.glob("*.tar"))) == 3
    braces = load_source(f"wds:{tmp_path}/train-{{000000..000002}}.tar")
    assert_same_examples(braces, small)
    assert_same_examples(load_source(f"{tmp_path}/train-*.tar"), small)
    with pytest.raises(FileNotFoundError, match="no shard files match"):
        load_source(f"wds:{tmp_path}/valid-*.tar")


def test_webdataset_npy_members(tmp_path, small):
    import io

    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "a.tar")) as sink:
        for i in range(len(small)):
            buf = io.BytesIO()
            np.save(buf, small.pixels[i].numpy())  # [1, 28, 28] uint8
            sink.write({"__key__": f"k{i}", "npy": buf.getvalue(),
                        "cls": str(int(small.labels[i])).encode()})
    assert_same_examples(load_source(f"wds:{tmp_path / 'a.tar'}"), small)


def test_unknown_sources_and_splits_are_named():
    with pytest.raises(ValueError, match="unknown source 'imagenet'.*fashion-mnist.*cifar10.*"
                                         "idx:.*torchvision:.*hf:.*folder:.*wds:"):
        load_source("imagenet")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'; got 'val'"):
        load_source("fashion-mnist", split="val")
    with pytest.raises(ValueError, match="no dataset class 'NotADataset'"):
        load_source("torchvision:NotADataset")


# ---- RealData ---------------------------------------------------------------------------------

def test_sample_class_returns_distinct_real_images_of_that_class(fashion_mnist_train):
    data = fashion_mnist_train
    g = torch.Generator().manual_seed(1)
    batch = data.sample_class(4, 64, g)
    assert batch.shape == (64, 1, 28, 28)
    coat = data.images[data.class_indices(4)]
    # each sampled image is a real coat: check membership against the whole class in chunks
    found = torch.zeros(64, dtype=torch.bool)
    for start in range(0, coat.shape[0], 2000):
        chunk = coat[start:start + 2000].flatten(1)
        found |= (batch.flatten(1)[:, None, :] == chunk[None]).all(-1).any(1)
    assert found.all()
    assert torch.unique(batch.flatten(1), dim=0).shape[0] == 64
    again = data.sample_class(4, 64, torch.Generator().manual_seed(1))
    assert torch.equal(batch, again)
    assert not torch.equal(batch, data.sample_class(4, 64, torch.Generator().manual_seed(2)))
    assert torch.equal(data.labels[data.class_indices(4)], torch.full((6000,), 4))
    with pytest.raises(ValueError, match="asked for 6001 images of class 4 \\('Coat'\\)"):
        data.sample_class(4, 6001)
    with pytest.raises(ValueError, match="class 10 out of range"):
        data.class_indices(10)


def test_with_normalization_shares_pixels_and_changes_the_space(small):
    other = Normalization(mean=[0.5], std=[0.25])
    moved = small.with_normalization(other)
    assert moved.pixels is small.pixels
    torch.testing.assert_close(moved.images, (small.float_pixels - 0.5) / 0.25)
    torch.testing.assert_close(other.invert(moved.images), small.float_pixels)
    assert load_source("fashion-mnist", split="test", normalization=other).normalization is other


def test_subsets_and_validation(small):
    assert torch.bincount(small.labels).tolist() == [3] * 10
    sub = small.subset([0, 5, 7])
    assert len(sub) == 3 and torch.equal(sub.labels, small.labels[[0, 5, 7]])
    with pytest.raises(ValueError, match="has 3 examples; asked for 4"):
        small.balanced_subset(4)
    with pytest.raises(ValueError, match="labels must lie in \\[0, 10\\); got \\[0, 10\\]"):
        RealData(small.pixels[:2], torch.tensor([0, 10]), small.classes, "x", "train",
                 small.normalization)
    with pytest.raises(ValueError, match="float pixels must lie in \\[0, 1\\]"):
        RealData(small.float_pixels[:2] * 2, small.labels[:2], small.classes, "x", "train",
                 small.normalization)
    with pytest.raises(ValueError, match="3 means and 3 stds; the images have 1 channels"):
        small.with_normalization(Normalization(mean=[0.5] * 3, std=[0.2] * 3))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        RealData(small.pixels[:2], small.labels[:3], small.classes, "x", "train",
                 small.normalization)


# ---- ZCA --------------------------------------------------------------------------------------

def test_zca_follows_the_documented_rule_and_round_trips(fashion_mnist_train):
    data = fashion_mnist_train.balanced_subset(100, torch.Generator().manual_seed(0))
    norm = zca_normalization(data.normalization, data.float_pixels, regularization=0.1)
    assert norm.zca_regularization == 0.1
    assert norm.zca_mean.shape == (784,) and norm.zca_whiten.shape == (784, 784)
    # W = U diag(1/sqrt(s + 0.1 mean(s))) U^T, so W cov W = U diag(s / (s + 0.1 mean(s))) U^T
    x = Normalization(data.normalization.mean, data.normalization.std).apply(data.float_pixels)
    flat = x.reshape(len(data), -1).double()
    cov = torch.cov(flat.T, correction=0)
    s, u = torch.linalg.eigh(cov)
    s = s.clamp_min(0)
    expected = (u * (s / (s + 0.1 * s.mean()))) @ u.T
    whitened = data.with_normalization(norm).images.reshape(len(data), -1).double()
    torch.testing.assert_close(torch.cov(whitened.T, correction=0), expected, atol=2e-4,
                               rtol=1e-3)
    torch.testing.assert_close(whitened.mean(0), torch.zeros(784, dtype=torch.float64),
                               atol=1e-4, rtol=0)
    # apply / invert round-trip on unseen real images
    test_pixels = fashion_mnist_train.subset(slice(0, 50)).float_pixels
    torch.testing.assert_close(norm.invert(norm.apply(test_pixels)), test_pixels, atol=2e-4,
                               rtol=0)
    with pytest.raises(ValueError, match="regularization must be > 0"):
        fit_zca(x, regularization=0)
