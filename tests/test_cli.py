"""The `compressdata` command line on real bank files: inspect, validate, preview."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from PIL import Image

from compressdata import EvaluationResult, MemoryBank, Normalization, load_memory_bank, save_memory_bank
from compressdata.cli import main
from compressdata.summary import describe_bank


@pytest.fixture()
def bank_path(tmp_path):
    g = torch.Generator().manual_seed(0)
    bank = MemoryBank(
        bases=torch.rand(6, 1, 14, 14, generator=g),
        addresses=torch.rand(30, 6, generator=g) / 6,
        labels=torch.arange(30) % 3,
        classes=["shirt", "boot", "bag"],
        image_size=(28, 28),
        normalization=Normalization([0.5], [0.25]),
        provenance={"source": {"dataset": "fashion-mnist", "split": "train"}, "method": {"name": "rtp"}},
        evaluations=[EvaluationResult("convnet", [0.81, 0.83], "fashion-mnist/test", 300)],
    )
    path = tmp_path / "bank.safetensors"
    save_memory_bank(bank, path)
    return path


def test_inspect_prints_every_section(bank_path, capsys):
    assert main(["inspect", str(bank_path)]) == 0
    out = capsys.readouterr().out
    for expected in ("kind:          memory", "[1, 28, 28]", "classes (3): shirt, boot, bag", "floats", "recipe:",
                     "lr=0.01", "provenance:\n  method:\n    name: rtp\n  source:\n    dataset: fashion-mnist",
                     "82.00 +- 1.00 %", "upsample:      bilinear", "decode memory:",
                     "(as recorded; compressdata validate verifies it)"):
        assert expected in out, expected
    bank = load_memory_bank(bank_path)  # the report of the loaded bank, but for the examples per class
    recorded = f"{bank.checksum()} (as recorded; compressdata validate verifies it)"
    assert out == describe_bank(bank).replace(" (10)", "").replace(bank.checksum(), recorded) + "\n"


def test_inspect_reads_the_header_alone(bank_path, tmp_path, capsys):
    """A file whose tensor bytes were changed after writing: inspect (header only) describes it with
    its recorded checksum; validate, which reads and hashes the tensors, refuses it."""
    data = bytearray(bank_path.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # the last float becomes +inf
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(bytes(data))
    assert main(["inspect", str(damaged)]) == 0
    assert "kind:          memory" in capsys.readouterr().out
    assert main(["validate", str(damaged)]) == 1
    assert "contains NaN or Inf" in capsys.readouterr().err


def test_validate_accepts_valid_and_rejects_corrupted(bank_path, tmp_path, capsys):
    assert main(["validate", str(bank_path)]) == 0
    assert "valid memory bank, 30 examples" in capsys.readouterr().out
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(bank_path.read_bytes()[:-7])
    assert main(["validate", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "broken.safetensors" in err and "error" in err


def test_preview_writes_a_png_with_one_row_per_class(bank_path, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["preview", str(bank_path), "-o", str(out), "--per-class", "4", "--scale", "1", "--no-labels"]) == 0
    image = Image.open(out)
    assert image.format == "PNG"
    # 3 rows of 28-pixel cells + 1-pixel padding, 4 columns
    assert image.size == (4 * 29 + 1, 3 * 29 + 1)


def test_module_entry_point_runs(bank_path):
    result = subprocess.run([sys.executable, "-m", "compressdata", "validate", str(bank_path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "valid memory bank" in result.stdout


def test_preview_of_a_two_channel_bank_shows_the_channel_mean(tmp_path):
    pixels = torch.zeros(2, 2, 4, 4)
    pixels[:, 0] = 1.0  # channel 0 white, channel 1 black -> mean grey 0.5
    bank = MemoryBank(pixels=pixels, labels=torch.tensor([0, 1]), classes=["a", "b"],
                      normalization=Normalization([0.0, 0.0], [1.0, 1.0]))
    path, out = tmp_path / "two.safetensors", tmp_path / "two.png"
    save_memory_bank(bank, path)
    assert main(["preview", str(path), "-o", str(out), "--scale", "1", "--no-labels"]) == 0
    image = Image.open(out).convert("RGB")
    assert image.size == (10 * 5 + 1, 2 * 5 + 1)  # --per-class 10 columns
    assert image.getpixel((1, 1)) == (128, 128, 128)
