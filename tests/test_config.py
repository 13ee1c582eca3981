"""The run's configuration: nested groups, the flat names banks and checkpoints record, the command line
generated from the groups, config files, and files written by compressdata 0.1.0 (tests/fixtures/v0_1_0:
made with the flat configuration, before the groups existed)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from compressdata import MemoryBank
from compressdata.cli import main
from compressdata.distiller import options as options_module
from compressdata.distiller.cli import build_distill_parser, config_from_namespace, parse_distill_args, run_config
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.loop import distill
from compressdata.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "v0_1_0"


def _flag_actions():
    parser = build_distill_parser()
    skip = {"help", "config", "print_config"}
    return [a for a in parser._actions if a.option_strings and a.dest not in skip and not a.dest.endswith("CONFIG")
            and "Path to a configuration file" not in (a.help or "")]


def test_every_flag_has_help_and_shows_its_default():
    parser = build_distill_parser()
    actions = _flag_actions()
    assert len(actions) == 7 + 72  # out, force, method, objective, checkpoints, final_eval_networks, progress
    text = parser.format_help()
    for action in actions:
        assert action.help and len(action.help) > 8, action.dest
        if action.dest != "out":  # the one required option
            assert "default" in parser._get_formatter()._get_help_string(action), action.dest
    assert "default: 0.01" in text and "--inner.lr" in text and "--mtt.syn_steps" in text


def test_the_flat_names_are_those_of_0_1_0():
    """to_dict keeps every key (and default) that compressdata 0.1.0 recorded; later options only add keys."""
    flat, old = DistillConfig().to_dict(), json.loads((FIXTURES / "distill-config.json").read_text())
    assert {k: flat[k] for k in old} == old
    assert sorted(set(flat) - set(old)) == ["budget_bytes", "download", "profile", "quant_aware", "storage_dtype"]
    saved = json.loads((FIXTURES / "run-config.json").read_text())
    assert DistillConfig.from_dict(saved).to_dict() == {**flat, **saved}
    with pytest.raises(ConfigError, match=r"unknown distill options \['nope'\]"):
        DistillConfig.from_dict({"nope": 1})


def test_groups_and_flat_names_name_the_same_options():
    config = DistillConfig.from_flat(inner_lr=0.02, outer_betas=[0.6, 0.9], outer_optimizer="adam", mtt_syn_steps=7,
                                     mim_weight=0.5, parameterization="lowrank", gm_outer_loop=3)
    assert (config.inner.lr, config.outer.betas, config.mtt.syn_steps, config.mim.weight) == (0.02, (0.6, 0.9), 7, 0.5)
    assert config.parameterization.kind == "lowrank" and config.kind == "lowrank" and config.gm.outer_loop == 3
    assert config.replace(seed=3).run.seed == 3 and config.replace(seed=3).inner.lr == 0.02
    assert config.method_name == "bptt-lowrank+mim"


def test_print_config_and_config_round_trip(tmp_path, capsys):
    args = ["distill", "--out", str(tmp_path / "b.safetensors"), "--inner.lr", "0.02", "--mtt.syn_steps", "9",
            "--outer.betas", "[0.6,0.95]", "--outer.optimizer", "adam", "--data.dsa", "true", "--profile", "gpu"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--print-config"])
    assert exit_.value.code == 0
    written = capsys.readouterr().out
    assert "inner:" in written and "lr: 0.02" in written
    path = tmp_path / "run.yaml"
    path.write_text(written)
    with pytest.raises(SystemExit):
        main(["distill", "--config", str(path), "--print_config"])
    assert capsys.readouterr().out == written
    parsed = config_from_namespace(build_distill_parser().parse_args(["--config", str(path)]))
    expected = DistillConfig.from_flat(inner_lr=0.02, mtt_syn_steps=9, outer_betas=(0.6, 0.95),
                                       outer_optimizer="adam", dsa=True, profile="gpu",
                                       networks_per_iteration=None)  # None: one per process, set at the start
    assert parsed == expected


# The first command line of the README of compressdata 0.1.0.
README_0_1_0 = ("--source fashion-mnist --budget-ipc 1 --method rtp --n-bases 24 --width 16 --unroll-steps 20 "
                "--iterations 200 --inner-batch 10 --real-batch 32 --init real --inner-lr 0.03 --outer-optimizer adam "
                "--outer-lr 0.01 --out fmnist-ipc1.safetensors")
README_DOTTED = ("--data.source fashion-mnist --parameterization.budget_ipc 1 --method rtp "
                 "--parameterization.n_bases 24 --model.width 16 --inner.unroll_steps 20 --outer.iterations 200 "
                 "--inner.batch_per_class 10 --outer.real_batch_per_class 32 --parameterization.init real "
                 "--inner.lr 0.03 --outer.optimizer adam --outer.lr 0.01 --out fmnist-ipc1.safetensors")


def _parsed(argv: list[str]):
    ns = parse_distill_args([*argv, "--profile", "gpu"])  # the official defaults, as 0.1.0 had them
    return run_config(ns), {k: ns[k] for k in ("force", "checkpoints", "final_eval_networks", "progress")}


def test_the_0_1_0_readme_command_line_parses_as_its_dotted_form():
    short, dotted = _parsed(README_0_1_0.split()), _parsed(README_DOTTED.split())
    assert short == dotted
    config = short[0]
    assert (config.parameterization.n_bases, config.inner.batch_per_class, config.outer.real_batch_per_class,
            config.outer.optimizer, config.inner.lr, config.run.checkpoint_dir) == (
        24, 10, 32, "adam", 0.03, "fmnist-ipc1.safetensors.ckpt")


def test_every_0_1_0_flag_keeps_its_meaning():
    """Each flag of compressdata 0.1.0's distill (tests/fixtures/v0_1_0/distill-flags.json: the flat options
    0.1.0's own parser set for it, and its command options) sets the same options today."""
    default = DistillConfig().to_dict()
    cases = json.loads((FIXTURES / "distill-flags.json").read_text())
    assert len(cases) == 71
    for case in cases:
        config, command = _parsed([*case["argv"], "--out", "b.safetensors"])
        got = json.loads(json.dumps({k: v for k, v in config.to_dict().items()
                                     if v != default[k] and k != "profile"}))
        assert (got, command) == (case["config"], case["command"]), case["argv"]


@pytest.mark.parametrize(("short", "dotted"), [
    ("--dsa --amp --learn-labels --streaming --source wds:/d/s.tar --resume --force --no-progress",
     "--data.dsa true --run.amp true --parameterization.learn_labels true --scale.streaming true "
     "--data.source wds:/d/s.tar --run.resume true --force true --progress false"),
    ("--dsa false --no-checkpoints --param lowrank --objective dm --mim-weight 0.5 --outer-betas 0.6 0.95 "
     "--outer-optimizer adam --budget-ipc=3",
     "--data.dsa false --checkpoints false --parameterization.kind lowrank --objective dm --mim.weight 0.5 "
     "--outer.betas [0.6,0.95] --outer.optimizer adam --parameterization.budget_ipc 3"),
    ("--objective mtt --expert-dir experts --mtt-syn-steps 9 --zca --seed 7 --device cpu",
     "--objective mtt --mtt.expert_dir experts --mtt.syn_steps 9 --data.zca true --run.seed 7 --run.device cpu"),
    ("--budget-ipc 2 --data.dsa true --inner-lr 0.02 --outer.iterations 5",  # both spellings in one line
     "--parameterization.budget_ipc 2 --data.dsa true --inner.lr 0.02 --outer.iterations 5"),
])
def test_short_and_dotted_flags_mix_and_agree(short, dotted):
    out = ["--out", "b.safetensors"]
    assert _parsed([*short.split(), *out]) == _parsed([*dotted.split(), *out])


def test_an_unknown_flag_is_refused_by_name(capsys):
    for flag in ("--budget-ipcs", "--no-dsa", "--data.budget_ipc"):
        with pytest.raises(SystemExit) as exit_:
            parse_distill_args([flag, "3", "--out", "b.safetensors"])
        assert exit_.value.code == 2
        assert f"unrecognized arguments: {flag}" in capsys.readouterr().err.lower()


def test_help_names_the_short_flags():
    text = " ".join(build_distill_parser().format_help().split())
    for expected in ("--budget-ipc 10", "[short: --budget-ipc]", "[short: --dsa, a switch]",
                     "[short: --no-checkpoints turns it off]", "--param (--parameterization.kind)",
                     "[short: --inner-batch-per-class; --inner-batch]"):
        assert expected in text, expected


@dataclass(frozen=True)
class ToyOptions:
    """toy: an objective's options, for the test."""

    alpha: float = 0.5
    """the toy objective's weight"""

    def validate(self, config) -> None:
        options_module.positive_number("toy_alpha", self.alpha)


def test_adding_an_option_is_one_edit():
    """A field added to a group (here a registered objective's) is a flag with help and default, a flat
    key, and a validated value, with no other edit."""
    options_module.register_objective("toy", ToyOptions)
    try:
        parser = build_distill_parser()
        help_text = " ".join(parser.format_help().split())
        assert "the toy objective's weight [short: --toy-alpha] (type: float, default: 0.5)" in help_text
        config = config_from_namespace(parser.parse_args(["--out", "x", "--toy.alpha", "2"]))
        assert config.toy.alpha == 2.0 and config.to_dict()["toy_alpha"] == 2.0
        short = config_from_namespace(parse_distill_args(["--out", "x", "--toy-alpha", "2", "--profile", "gpu"],
                                                         parser))
        assert short.replace(profile=None, networks_per_iteration=1) == config
        assert DistillConfig.from_dict(config.to_dict()) == config
        with pytest.raises(ConfigError, match="toy_alpha must be a positive number"):
            config.replace(toy_alpha=-1.0).validate()
    finally:
        del options_module.OBJECTIVES["toy"]


def test_a_bank_written_by_0_1_0_loads_with_the_flat_provenance():
    bank = MemoryBank.from_file(FIXTURES / "rtp-bank.safetensors")
    hyper = bank.provenance["method"]["hyperparameters"]
    config = DistillConfig.from_dict(json.loads((FIXTURES / "run-config.json").read_text()))
    expected = config.recorded_hyperparameters()
    expected.update(n_bases=hyper["n_bases"], downsample=hyper["downsample"])  # the layout the budget rule picked
    assert sorted(set(expected) - set(hyper)) == ["quant_aware", "storage_dtype"]  # options added since 0.1.0
    assert hyper == json.loads(json.dumps({k: v for k, v in expected.items() if k in hyper}))
    assert DistillConfig.from_dict({**config.to_dict(), **{k: v for k, v in hyper.items()
                                                             if k not in ("n_bases", "downsample")}})


def test_a_checkpoint_written_by_0_1_0_resumes_bit_exactly(tmp_path, fashion_mnist_train, one_torch_thread):
    """The 0.1.0 checkpoint (2 of the run's iterations) resumed to 3 equals 0.1.0's uninterrupted 3."""
    train = fashion_mnist_train.balanced_subset(40, torch.Generator().manual_seed(0))
    ckpt = tmp_path / "checkpoint"
    shutil.copytree(FIXTURES / "checkpoint", ckpt)
    saved = json.loads((FIXTURES / "run-config.json").read_text())
    config = DistillConfig.from_dict(saved).replace(checkpoint_dir=str(ckpt), resume=True, iterations=3)
    bank = distill(config, train, progress=False, log=lambda _m: None)
    expected = load_file(str(FIXTURES / "uninterrupted-3.safetensors"))
    for name, tensor in bank.tensors.items():
        assert torch.equal(tensor, expected[name]), name
    assert torch.equal(bank.labels, expected["labels"])
    assert bank.provenance["method"]["iterations_done"] == 3
