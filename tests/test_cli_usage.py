"""The command line's common mistakes and small needs, as a user meets them: a fast `--help` and `--version`,
folders and unknown suffixes given as image files, `inspect --json`, a local-looking path that does not exist
(no Hub request), hints that name flags, a test set of other classes, a bank at chance, the device-sized
distill profiles with their time estimate, and library messages through `logging`."""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hubserver import USER_TOKEN, HubServer
from PIL import Image

from compressdata import EvaluationResult, MemoryBank, Normalization, push_to_hub
from compressdata.cli import COMMANDS, build_parser, main
from compressdata.distiller.cli import parse_distill_args, run_config
from compressdata.distiller.loop import distill, loss_warning, time_left
from compressdata.errors import MissingFileError
from compressdata.evaluate import chance_warning, check_same_classes
from compressdata.loading import load_memory_bank
from compressdata.params import layout_for_budget

pytest_plugins = ["hub_fixtures"]
REPO = Path(__file__).resolve().parents[1]
README_CPU_COMMAND = ("--source fashion-mnist --budget-ipc 1 --method rtp --n-bases 24 --width 16 --unroll-steps 20 "
                      "--iterations 200 --inner-batch 10 --real-batch 32 --init real --inner-lr 0.03 "
                      "--outer-optimizer adam --outer-lr 0.01 --out fmnist-ipc1.safetensors")


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}
    env.pop("HF_HUB_OFFLINE", None)
    return env


def _cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compressdata", *args], capture_output=True, text=True,
                          env=_env(**env), cwd=cwd, timeout=120, check=False)


@pytest.fixture()
def bank_path(tmp_path, pixel_bank) -> Path:
    path = tmp_path / "bank.safetensors"
    pixel_bank(2).save(path)
    return path


# ---- start-up: --help, --version -----------------------------------------------------------------


def test_help_lists_every_command_without_loading_the_heavy_libraries():
    heavy = ("torch", "torchvision", "huggingface_hub", "jsonargparse", "datasets")
    script = ("import sys\nfrom compressdata.cli import main\ntry:\n    main(['--help'])\n"
              f"except SystemExit:\n    pass\nprint(sorted(m for m in {heavy!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    for name in COMMANDS:
        assert f"    {name} " in result.stdout, name


def test_the_listed_help_is_each_commands_own():
    def listed(parser):
        subparsers = next(a for a in parser._actions if a.dest == "command")
        return {a.dest: a.help for a in subparsers._choices_actions}

    assert listed(build_parser([])) == listed(build_parser())


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == "compressdata 0.1.0"


# ---- preview and inspect -------------------------------------------------------------------------


def test_preview_refuses_a_folder_and_an_unknown_suffix_and_writes_jpeg(bank_path, tmp_path, capsys):
    assert main(["preview", str(bank_path), "-o", str(tmp_path)]) == 1
    assert f"compressdata preview: error: {tmp_path} is a folder; expected an image file path" in \
        capsys.readouterr().err
    assert main(["preview", str(bank_path), "-o", str(tmp_path / "grid.gif")]) == 1
    assert "cannot tell the image format from the suffix '.gif'; expected .png, .jpg, .jpeg" in capsys.readouterr().err
    assert not (tmp_path / "grid.gif").exists()
    assert main(["preview", str(bank_path), "-o", str(tmp_path / "grid.jpg")]) == 0
    assert Image.open(tmp_path / "grid.jpg").format == "JPEG"


def test_preview_rows_are_labelled_and_contrast_stretches_a_faint_bank(tmp_path):
    faint = 0.45 + 0.1 * torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    bank = MemoryBank(pixels=faint, labels=[0, 0, 1, 1, 2, 2], classes=["Sandal", "Sneaker", "Ankle boot"],
                      normalization=Normalization([0.0], [1.0]))
    path = tmp_path / "faint.safetensors"
    bank.save(path)
    plain, labelled, stretched = (tmp_path / f"{n}.png" for n in ("plain", "labelled", "stretched"))
    assert main(["preview", str(path), "-o", str(plain), "--no-labels", "--scale", "1", "--per-class", "2"]) == 0
    assert main(["preview", str(path), "-o", str(labelled), "--scale", "1", "--per-class", "2"]) == 0
    assert main(["preview", str(path), "-o", str(stretched), "--scale", "1", "--per-class", "2", "--no-labels",
                 "--contrast"]) == 0
    plain_image, labelled_image = Image.open(plain).convert("L"), Image.open(labelled).convert("L")
    assert labelled_image.height == plain_image.height and labelled_image.width > plain_image.width + 20
    label_column = labelled_image.crop((0, 0, labelled_image.width - plain_image.width, labelled_image.height))
    assert label_column.getextrema()[0] < 100  # dark text on white
    cell = (1, 1, 9, 9)  # the first example
    assert Image.open(plain).convert("L").crop(cell).getextrema()[1] - \
        Image.open(plain).convert("L").crop(cell).getextrema()[0] <= 26
    assert Image.open(stretched).convert("L").crop(cell).getextrema() == (0, 255)


def test_inspect_json_and_inspect_of_a_folder(bank_path, tmp_path, capsys):
    assert main(["inspect", str(bank_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metadata"]["classes"][0] == "T-shirt/top"
    assert report["metadata"]["provenance"]["source"]["dataset"] == "fashion-mnist"
    assert report["tensors"]["pixels"] == {"dtype": "float32", "shape": [20, 1, 28, 28]}
    assert main(["inspect", str(tmp_path)]) == 1
    assert "not a regular file (a folder)" in capsys.readouterr().err


# ---- paths, Hub ids and hints --------------------------------------------------------------------


def test_a_missing_file_under_a_local_folder_never_goes_to_the_hub(hub_server: HubServer, tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    result = _cli("inspect", "runs/bank", cwd=tmp_path, HF_ENDPOINT=hub_server.url, HF_HOME=str(tmp_path / "hf"))
    assert result.returncode == 1, result.stderr
    assert "runs/bank: no such bank file; runs/ is a local folder" in result.stderr
    assert "hf://runs/bank" in result.stderr and "Traceback" not in result.stderr
    assert hub_server.requests == []
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingFileError, match="write hf://runs/bank for the Hub repo"):
        load_memory_bank("runs/bank")


def test_cli_hints_name_flags_not_python_arguments(hub_server: HubServer, pixel_bank, bank_path, tmp_path):
    for config in ("ipc1", "ipc2"):
        push_to_hub(pixel_bank(int(config[-1])), "alice/two", config=config, token=USER_TOKEN,
                    endpoint=hub_server.url)
    env = {"HF_ENDPOINT": hub_server.url, "HF_HOME": str(tmp_path / "hf")}
    several = _cli("inspect", "alice/two", **env)
    assert several.returncode == 1
    assert "2 configs (ipc1, ipc2); name one with --config (e.g. --config ipc1)" in several.stderr
    assert "config=" not in several.stderr
    chosen = _cli("inspect", "alice/two", "--config", "ipc2", **env)
    assert chosen.returncode == 0 and "examples:      20 of shape" in chosen.stdout
    local = _cli("inspect", str(bank_path), "--config", "ipc2", **env)
    assert local.returncode == 1 and "--config and --revision apply to Hub ids" in local.stderr
    # a source the command line would have to download (torchvision's MNIST is not on this machine)
    missing = _cli("evaluate", str(bank_path), "--test", "mnist", "--networks", "1",
                   HOME=str(tmp_path), **env)
    assert missing.returncode == 1 and "add --download to fetch it" in missing.stderr, missing.stderr
    assert "download=True" not in missing.stderr


# ---- evaluate: the wrong test set, a bank at chance ----------------------------------------------


def test_evaluate_refuses_a_test_set_of_other_classes(fashion_mnist, tmp_path, capsys):
    digits = MemoryBank(pixels=fashion_mnist.images[:20], labels=fashion_mnist.labels[:20],
                        classes=[str(d) for d in range(10)], normalization=fashion_mnist.normalization)
    path = tmp_path / "digits.safetensors"
    digits.save(path)
    args = ["evaluate", str(path), "--test", "fashion-mnist", "--networks", "1", "--epochs", "1", "--width", "8",
            "--no-baselines", "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "class names differ from the test split fashion-mnist/test's: class 0: '0' vs 'T-shirt/top'" in err
    assert "pass --allow-class-mismatch to evaluate anyway" in err and "check_classes" not in err
    assert main([*args, "--allow-class-mismatch"]) == 0
    assert "accuracy" in capsys.readouterr().out
    check_same_classes(["T - shirt / top", "trouser"], ["T-shirt/top", "Trouser"], "x")  # spelling differs only


def test_a_bank_at_chance_is_flagged(fashion_mnist, tmp_path, capsys):
    one = fashion_mnist.images[:1].expand(20, -1, -1, -1)  # one image under every label: nothing to learn
    bank = MemoryBank(pixels=one.contiguous(), labels=torch.arange(20) % 10, classes=fashion_mnist.classes,
                      normalization=fashion_mnist.normalization)
    path = tmp_path / "flat.safetensors"
    bank.save(path)
    assert main(["evaluate", str(path), "--test", "fashion-mnist", "--networks", "1", "--epochs", "2",
                 "--width", "8", "--no-baselines", "--no-progress"]) == 0
    assert "is at chance level (10.0 % for 10 classes)" in capsys.readouterr().err
    result = EvaluationResult("convnet", [0.088], "fashion-mnist/test", 300)
    assert "8.80 % is at chance level" in chance_warning(result, 10)
    assert chance_warning(EvaluationResult("convnet", [0.5], "t", 1), 10) is None


# ---- distill: profiles, the time estimate, a loss that never fell --------------------------------


def _config(command: str):
    return run_config(parse_distill_args(command.split()))


def test_the_cpu_profile_is_the_readmes_cpu_command_and_explicit_options_win():
    bare = _config("--source fashion-mnist --budget-ipc 1 --out fmnist-ipc1.safetensors --profile cpu")
    # the README leaves --downsample to the budget rule, which picks 2 for 24 bases at IPC 1
    assert bare == _config(f"{README_CPU_COMMAND} --downsample 2 --profile cpu")
    assert layout_for_budget("memory", 1.0, 10, (1, 28, 28), n_bases=24).downsample == 2
    assert (bare.model.width, bare.inner.unroll_steps, bare.outer.iterations, bare.outer.optimizer) == (
        16, 20, 200, "adam")
    gpu = _config("--out b.safetensors --profile gpu")
    assert (gpu.model.width, gpu.inner.unroll_steps, gpu.outer.iterations, gpu.outer.optimizer) == (
        128, 50, 2000, None)
    wider = _config("--out b.safetensors --profile cpu --width 128 --iterations 5")
    assert (wider.model.width, wider.outer.iterations, wider.inner.unroll_steps) == (128, 5, 20)
    sgd = _config("--out b.safetensors --profile cpu --outer-lr 30")  # the Adam bundle stays out
    assert (sgd.outer.optimizer, sgd.outer.lr) == (None, 30.0)
    pixels = _config("--out b.safetensors --profile cpu --method pixels")
    assert pixels.parameterization.n_bases is None and pixels.outer.optimizer is None
    if not torch.cuda.is_available():
        assert _config("--out b.safetensors").run.profile == "cpu"  # chosen by the device


def test_distill_prints_the_profile_and_an_estimate_of_the_time_left(tmp_path, capsys):
    out = tmp_path / "b.safetensors"
    assert main(["distill", "--out", str(out), "--iterations", "4", "--unroll-steps", "2", "--width", "4",
                 "--inner-batch", "2", "--real-batch", "2", "--no-progress", "--no-checkpoints",
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "s per outer iteration: about" in printed and "for the remaining 1" in printed
    assert load_memory_bank(out).provenance["profile"] == "cpu"


def test_time_left_and_loss_warnings():
    assert time_left([9.0, 2.0, 3.0], 120) == ("2.50 s per outer iteration: about 5 min 0 s for the remaining 120 "
                                              "(--iterations, --profile cpu|gpu and the network size set it)")
    assert loss_warning([2.3] * 30).startswith("the outer loss did not fall over 30 iterations")
    assert loss_warning([2.3 - 0.01 * i for i in range(30)]) is None
    assert loss_warning([2.3] * 5) is None  # too short to judge


def test_library_messages_go_through_logging(fashion_mnist, caplog, capsys, monkeypatch):
    from compressdata.distiller.config import DistillConfig

    config = DistillConfig.from_flat(method="random-real", device="cpu")
    monkeypatch.setattr(logging.getLogger("compressdata"), "handlers", [])  # as in a program that is not the CLI
    with caplog.at_level(logging.INFO, logger="compressdata"):
        distill(config, fashion_mnist, progress=False)
    assert capsys.readouterr().out == ""
    assert any(r.name == "compressdata.distiller.loop" and "random-real on fashion-mnist" in r.getMessage()
               for r in caplog.records)


def test_the_package_ships_its_type_information():
    assert importlib.resources.files("compressdata").joinpath("py.typed").is_file()
