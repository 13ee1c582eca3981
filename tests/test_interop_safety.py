"""A pickle with a malicious __reduce__ in every accepted layout is refused with a typed error and
never runs; plain numpy scalars (DC result files' accuracies, under numpy 1.x and 2.x names) load."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from compressdata import UnsafeFileError, import_bank
from compressdata.cli import main
from compressdata.interop.safeload import load_pt
from compressdata.serving.export import export_png


class Payload:
    """Runs a shell command when unpickled (what a hostile .pt file does under full unpickling)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def release(fashion_mnist_train):
    real = fashion_mnist_train.balanced_subset(2, torch.Generator().manual_seed(0))
    return (real.float_pixels - 0.2861) / 0.3530, real.labels.clone()


def test_the_payload_is_live_under_full_unpickling(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()  # so its absence below means the import never ran it


def _layouts(folder: Path, images: torch.Tensor, labels: torch.Tensor, evil: Payload):
    """(layout, files to import, the file holding the payload) for every .pt-reading layout."""
    run = folder / "mtt"
    run.mkdir()
    torch.save(evil, run / "images_best.pt")
    torch.save(labels, run / "labels_best.pt")
    lr_run = folder / "mtt-lr"
    lr_run.mkdir()
    torch.save(images, lr_run / "images_best.pt")
    torch.save(labels, lr_run / "labels_best.pt")
    torch.save({"lr": evil}, lr_run / "syn_lr_best.pt")
    raw = folder / "raw"  # a bare pickle, not torch.save's zip: the legacy reader, same unpickler
    raw.mkdir()
    with open(raw / "images_best.pt", "wb") as f:
        pickle.dump(evil, f, protocol=2)
    torch.save(labels, raw / "labels_best.pt")
    dc = folder / "res_DM_FashionMNIST_ConvNet_2ipc.pt"
    torch.save({"data": [[images, labels], [images, evil]], "accs_all_exps": {}}, dc)
    plain = folder / "plain.pt"
    torch.save({"images": images, "labels": labels, "extra": [evil]}, plain)
    ddr = folder / "ddr"
    ddr.mkdir()
    torch.save(images, ddr / "images.pt")
    torch.save(evil, ddr / "lr.pt")
    return [("mtt", run, run / "images_best.pt"), ("mtt", lr_run, lr_run / "syn_lr_best.pt"),
            ("mtt", raw, raw / "images_best.pt"), ("dc", dc, dc), ("plain", plain, plain),
            ("ddranking", ddr, ddr / "lr.pt")]


def test_a_malicious_pickle_is_refused_in_every_layout_and_never_runs(release, tmp_path):
    images, labels = release
    marker = tmp_path / "pwned"
    for layout, files, holder in _layouts(tmp_path, images, labels, Payload(marker)):
        with pytest.raises(UnsafeFileError) as info:
            import_bank(files, layout, dataset="fashion-mnist", method="mtt", lr=0.01)
        message = str(info.value)
        assert str(holder) in message and "full unpickling" in message and "Nothing in it was run" in message
        assert "system" in message, message  # names what it would have called (posix.system)
        assert not marker.exists(), layout


def test_command_line_refuses_without_running_or_writing(release, tmp_path, capsys):
    images, labels = release
    marker = tmp_path / "pwned"
    for layout, files, _ in _layouts(tmp_path, images, labels, Payload(marker)):
        out = tmp_path / f"{layout}.safetensors"
        code = main(["import", "--from", layout, str(files), "--dataset", "fashion-mnist", "--method", "mtt",
                     "--lr", "0.01", "--out", str(out)])
        assert code == 1 and "refused" in capsys.readouterr().err
        assert not out.exists() and not marker.exists()


def test_an_image_folder_reads_no_pickle(release, tmp_path):
    images, labels = release
    plain = tmp_path / "plain.pt"
    torch.save((images, labels), plain)
    bank = import_bank(plain, "plain", dataset="fashion-mnist")
    export_png(bank, tmp_path / "png")
    marker = tmp_path / "pwned"
    first_class = sorted(p for p in (tmp_path / "png").iterdir() if p.is_dir())[0]
    torch.save(Payload(marker), first_class / "planted.pt")
    back = import_bank(tmp_path / "png", "folder", dataset="fashion-mnist")
    assert len(back) == len(bank) and not marker.exists()


def test_numpy_arrays_are_refused_but_numpy_scalars_load(tmp_path):
    torch.save({"images": torch.zeros(2, 1, 28, 28), "labels": np.array([0, 1])}, tmp_path / "array.pt")
    with pytest.raises(UnsafeFileError, match="numpy"):
        load_pt(tmp_path / "array.pt")
    scalars = {"accs_all_exps": {"ConvNet": [np.float64(0.5), np.float32(0.25), np.int64(3)]}}
    torch.save(scalars, tmp_path / "v2.pt")
    assert load_pt(tmp_path / "v2.pt")["accs_all_exps"]["ConvNet"] == [0.5, 0.25, 3]
    # the same file as numpy 1.x writes it: numpy.core.multiarray.scalar instead of numpy._core
    with zipfile.ZipFile(tmp_path / "v2.pt") as source, zipfile.ZipFile(tmp_path / "v1.pt", "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(item, data)
    assert load_pt(tmp_path / "v1.pt")["accs_all_exps"]["ConvNet"] == [0.5, 0.25, 3]
