"""Exports read back with the libraries' own readers (datasets, webdataset, torchvision) and
compared with the decoded bank."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import webdataset as wds
from hubserver import USER_TOKEN, HubServer
from PIL import Image
from torchvision.datasets import ImageFolder

from compressdata import MemoryBank
from compressdata.cli import main as cli_main
from compressdata.hub import push_to_hub
from compressdata.serving.export import (
    class_folder_names,
    export_png,
    export_webdataset,
    to_hf_dataset,
)

pytest_plugins = ["hub_fixtures"]

HALF_STEP = 0.5 / 255 + 1e-6  # 8-bit PNG rounding


def as_pixels(image: object) -> torch.Tensor:
    """A PIL image -> float [C, H, W] in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255
    return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))


def test_hf_dataset_matches_decoded_bank_and_survives_disk(
    memory_bank: Callable[..., MemoryBank], tmp_path: Path
) -> None:
    bank = memory_bank(4)
    ds = to_hf_dataset(bank)
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["label"].names == bank.classes
    assert len(ds) == len(bank) == 40
    ds.save_to_disk(str(tmp_path / "saved"))
    back = datasets.load_from_disk(str(tmp_path / "saved"))
    pixels = bank.decode_pixels()
    images = torch.stack([as_pixels(row["image"]) for row in back])
    assert (images - pixels).abs().max() <= HALF_STEP
    assert back["label"] == bank.hard_labels().tolist()
    assert "soft_label" not in back.features


def test_lazy_dataset_decodes_on_access_like_the_eager_one(
    pixel_bank: Callable[..., MemoryBank],
) -> None:
    bank = pixel_bank(3)
    eager, lazy = to_hf_dataset(bank), to_hf_dataset(bank, lazy=True)
    assert lazy.column_names == ["index", "label"]  # no image stored
    assert len(lazy) == len(eager)
    rows = lazy[5:9]
    assert rows["label"] == eager[5:9]["label"]
    for mine, theirs in zip(rows["image"], eager[5:9]["image"], strict=True):
        assert torch.equal(as_pixels(mine), as_pixels(theirs))
    assert sorted(lazy[0]) == ["image", "label"]


def test_soft_labels_and_exact_arrays(pixel_bank: Callable[..., MemoryBank]) -> None:
    bank = pixel_bank(2, soft=True)
    assert bank.label_space == "probabilities"
    ds = to_hf_dataset(bank, image_format="array")
    assert isinstance(ds.features["image"], datasets.Array3D)
    assert isinstance(ds.features["soft_label"], datasets.Sequence)
    arrays = torch.tensor(np.asarray(ds.with_format("numpy")["image"]))
    assert torch.equal(arrays, bank.decode())  # exact float32 decode, normalised space
    soft = torch.tensor(np.asarray(ds.with_format("numpy")["soft_label"]))
    assert torch.equal(soft, bank.labels)
    assert ds["label"] == bank.hard_labels().tolist()
    lazy = to_hf_dataset(bank, lazy=True, image_format="array")
    assert torch.equal(torch.as_tensor(np.asarray(lazy[3]["image"])), bank.decode([3])[0])


def test_webdataset_shards_read_back_with_webdataset(
    pixel_bank: Callable[..., MemoryBank], tmp_path: Path
) -> None:
    bank = pixel_bank(3, soft=True)
    shards = export_webdataset(bank, tmp_path / "out" / "shard-%06d.tar", maxcount=7)
    assert [Path(s).name for s in shards] == [f"shard-{i:06d}.tar" for i in range(5)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["classes.json", *(Path(s).name for s in shards)]
    assert json.loads((tmp_path / "out" / "classes.json").read_text()) == bank.classes
    for shard in shards:
        with tarfile.open(shard) as tar:
            names = tar.getnames()
        assert {n.split(".", 1)[1] for n in names} == {"png", "cls", "json", "npy"}  # nothing pickled
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("pil"))
    assert len(samples) == len(bank)
    index = torch.tensor([int(s["__key__"]) for s in samples])
    assert torch.equal(index, torch.arange(len(bank)))
    images = torch.stack([as_pixels(s["png"]) for s in samples])
    assert (images - bank.decode_pixels()).abs().max() <= HALF_STEP
    assert [s["cls"] for s in samples] == bank.hard_labels().tolist()
    assert [s["json"] for s in samples] == [{"label": int(c), "class": bank.classes[c]} for c in bank.hard_labels()]
    soft = torch.tensor(np.stack([s["npy"] for s in samples]))
    assert torch.equal(soft, bank.labels)


def test_webdataset_shards_read_back_with_datasets_builder(
    memory_bank: Callable[..., MemoryBank], tmp_path: Path
) -> None:
    """The reader the Hub's dataset viewer uses for `.tar` data files."""
    bank = memory_bank(2)
    subset = torch.tensor([0, 3, 7, 11, 19])
    shards = export_webdataset(bank, tmp_path / "wds" / "part-%03d.tar", index=subset)
    ds = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train",
                               cache_dir=str(tmp_path / "hf-datasets"))
    assert len(ds) == len(subset)
    assert [int(k) for k in ds["__key__"]] == subset.tolist()
    images = torch.stack([as_pixels(row["png"]) for row in ds])
    assert (images - bank.decode_pixels(subset)).abs().max() <= HALF_STEP
    assert [int(c) for c in ds["cls"]] == bank.hard_labels()[subset].tolist()


def test_png_folder_reads_back_as_torchvision_image_folder(
    pixel_bank: Callable[..., MemoryBank], tmp_path: Path
) -> None:
    bank = pixel_bank(2)
    paths = export_png(bank, tmp_path / "png")
    assert len(paths) == len(bank)
    folder = ImageFolder(str(tmp_path / "png"))
    assert folder.classes == class_folder_names(bank.classes)
    assert folder.classes[0] == "0-T-shirt_top" and folder.classes[9] == "9-Ankle_boot"
    assert folder.targets == sorted(bank.hard_labels().tolist())  # class order == folder order
    for image_path, target in folder.samples:
        i = int(Path(image_path).stem)
        assert target == int(bank.hard_labels()[i])
        image = as_pixels(folder.loader(image_path).convert("L"))
        assert (image - bank.decode_pixels([i])[0]).abs().max() <= HALF_STEP
    assert (tmp_path / "png" / "classes.json").read_text().count("T-shirt/top") == 1


def test_export_errors(pixel_bank: Callable[..., MemoryBank], tmp_path: Path) -> None:
    bank = pixel_bank(1)
    with pytest.raises(ValueError, match="one integer field"):
        export_webdataset(bank, tmp_path / "shard.tar")
    with pytest.raises(ValueError, match="maxcount"):
        export_webdataset(bank, tmp_path / "s-%d.tar", maxcount=0)
    with pytest.raises(IndexError, match=r"\[0, 10\)"):
        export_webdataset(bank, tmp_path / "s-%d.tar", index=[3, 10])
    with pytest.raises(ValueError, match="image_format"):
        to_hf_dataset(bank, image_format="jpeg")
    two_channel = MemoryBank(pixels=torch.rand(4, 2, 8, 8), labels=[0, 1, 0, 1],
                             classes=["a", "b"])
    with pytest.raises(ValueError, match="1 or 3 channels"):
        export_png(two_channel, tmp_path / "x")
    arrays = to_hf_dataset(two_channel, image_format="array")
    assert np.asarray(arrays.with_format("numpy")["image"]).shape == (4, 2, 8, 8)
    rgb = MemoryBank(pixels=torch.rand(3, 3, 6, 5), labels=[0, 1, 1], classes=["a", "b"])
    shard = export_webdataset(rgb, tmp_path / "rgb-%d.tar")[0]
    with tarfile.open(shard) as tar:
        member = tar.extractfile(tar.getmember("000000.png"))
        assert member is not None
        assert Image.open(io.BytesIO(member.read())).mode == "RGB"


def test_cli_export_formats(
    pixel_bank: Callable[..., MemoryBank], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bank = pixel_bank(1)
    bank.save(tmp_path / "bank.safetensors")
    for fmt in ("webdataset", "hf", "png"):
        assert cli_main(["export", str(tmp_path / "bank.safetensors"), str(tmp_path / fmt), "--format", fmt,
                         "--maxcount", "4"]) == 0
    assert "wrote 10 samples in 3 shards" in capsys.readouterr().out
    samples = list(wds.WebDataset(sorted(map(str, (tmp_path / "webdataset").glob("*.tar"))),
                                  shardshuffle=False))
    assert [int(s["cls"]) for s in samples] == bank.hard_labels().tolist()
    saved = datasets.load_from_disk(str(tmp_path / "hf"))
    assert saved["label"] == bank.hard_labels().tolist()
    assert len(ImageFolder(str(tmp_path / "png"))) == len(bank)


def test_hub_repo_loads_with_datasets_load_dataset(
    hub_server: HubServer, pixel_bank: Callable[..., MemoryBank],
    memory_bank: Callable[..., MemoryBank], tmp_path: Path,
) -> None:
    """What a user (and the Hub's viewer) does: `datasets.load_dataset(repo, config)` follows the card's
    `configs` to the viewer data and gets `image` and a `label` ClassLabel with the class names, like the
    Hub's fashion_mnist; every example of a small bank, a class-balanced `preview` split of a large one."""
    banks = {"ipc1": pixel_bank(1), "ipc2": memory_bank(2), "big": pixel_bank(6, soft=True)}
    for config, bank in banks.items():
        push_to_hub(bank, "alice/viewer", config=config, token=USER_TOKEN, endpoint=hub_server.url,
                    viewer_limit=20 if config == "big" else 10_000)
    script = textwrap.dedent(
        """
        import json, datasets
        full = datasets.load_dataset("alice/viewer", "ipc2")
        rows = full["train"]
        preview = datasets.load_dataset("alice/viewer", "big")
        print(json.dumps({"splits": list(full), "columns": rows.column_names, "names": rows.features["label"].names,
                          "label": list(rows["label"]), "pixels": [img.tobytes().hex() for img in rows["image"]],
                          "preview_splits": list(preview), "preview_columns": preview["preview"].column_names,
                          "preview_label": list(preview["preview"]["label"])}))
        """
    )
    env = {**os.environ, "HF_ENDPOINT": hub_server.url, "HF_HOME": str(tmp_path / "home")}
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    bank = banks["ipc2"]
    assert out["splits"] == ["train"] and out["columns"] == ["image", "label"]
    assert out["names"] == bank.classes and out["label"] == bank.hard_labels().tolist()
    pixels = torch.tensor([list(bytes.fromhex(h)) for h in out["pixels"]], dtype=torch.float32).view(-1, 1, 28, 28)
    assert (pixels / 255 - bank.decode_pixels()).abs().max() <= HALF_STEP
    assert out["preview_splits"] == ["preview"] and out["preview_columns"] == ["image", "label", "soft_label"]
    assert sorted(out["preview_label"]) == sorted(list(range(10)) * 2)  # 20 of 60, two of every class
