"""`compressdata distill`: the command line generated from the run's option groups, parse, call the library, print.

The parser is jsonargparse's, built from the dataclasses of `distill.options` and the groups the
objectives registered (one flag per field, `--GROUP.FIELD`, whose help is the field's docstring and
shows its default), so adding an option to a group adds its flag. `--config run.yaml` reads options
from a file and `--print_config` writes the complete configuration as that file; the two round-trip.
jsonargparse was chosen over tyro and hand-written argparse because it reads nested dataclasses with
their attribute docstrings, gives config files and `--print_config` for free, and is the parser
LightningCLI is built on, so the command behaves the way users of that ecosystem expect.
The short flags every earlier version took (`--budget-ipc 10`, `--dsa`, `--no-checkpoints`: each
option's flat name with dashes) keep working: `distill.short_flags` rewrites them into the dotted form
before jsonargparse parses, from a table generated from the same groups.

`compressdata.cli` lists `distill` among its commands and hands its arguments to `main`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ArgumentParser, Namespace, set_parsing_settings

from compressdata.distiller.checkpoint import CHECKPOINT_FILE, read_checkpoint_header
from compressdata.distiller.config import KIND_OF_METHOD, METHODS, DistillConfig
from compressdata.distiller.options import GROUPS, OBJECTIVES, option_groups
from compressdata.distiller.profiles import default_profile, profile_defaults
from compressdata.distiller.short_flags import RENAMED, ShortFlag, expand_short_flags, short_flags, short_help
from compressdata.errors import ConfigError
from compressdata.runtime.distributed import distributed_session, env_world

logger = logging.getLogger(__name__)
NETWORKS = "scale.networks_per_iteration"
DESCRIPTION = (
    "Distil a labelled dataset into a bank file. Three axes combine freely: the parameterization "
    "(--param pixels | memory | lowrank; memory = addressable memories, K shared bases and one address row "
    "per example), the objective (--objective bptt | dm | gm | mtt | dwa) and add-ons (--mim-weight). "
    "--method is a preset: rtp = memory + bptt (addressable memories, the default), pixels = pixels + bptt, "
    "random-real = a random real subset. Every parameterization spends the same bytes for the same budget "
    "(--budget-ipc or --budget-bytes), at the sizes --storage-dtype gives. Each option has two spellings: "
    "its short flag, the option's flat name with dashes as earlier versions and a bank's provenance spell it "
    "(--budget-ipc 10, --inner-lr 0.03, --outer-betas 0.5 0.9; booleans are switches: --dsa, --resume, "
    "--force, and --no-checkpoints, --no-progress turn the defaults off), and the grouped flag listed below "
    "(--parameterization.budget_ipc 10; booleans take a value: --data.dsa true), whose help names its short "
    f"flag. Short flags with another name: {', '.join(f'{k} (--{v})' for k, v in RENAMED.items())}. "
    "--print_config writes every option as YAML; --config FILE reads it back. The defaults depend on the "
    "device (--profile): on a GPU the official settings (ConvNet-128, T=50, 2000 iterations), on a CPU the "
    "CPU protocol (ConvNet-16, T=20, 200 iterations, about 6 minutes for IPC 1 on 2 cores; docs/benchmarks.md); "
    "options given explicitly win over the profile.")
# The command's own options (not part of the run's configuration): name -> (type, default, help).
COMMAND_OPTIONS: dict[str, tuple[type, Any, str]] = {
    "force": (bool, False, "overwrite --out if it exists, and start afresh over the checkpoint of an unfinished run"),
    "checkpoints": (bool, True, "write checkpoints (to --checkpoint-dir, else OUT.ckpt)"),
    "final_eval_networks": (int, 0, "evaluate the result with N fresh networks (its recipe) and record it in the bank"),
    "progress": (bool, True, "show a progress bar"),
}


def build_distill_parser() -> ArgumentParser:
    """The `distill` parser: top-level options, then one group per option class (help from docstrings)."""
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog="compressdata distill", description=DESCRIPTION, default_env=False)
    parser.add_argument("--config", action="config", help="a YAML file of options, as --print_config writes it")
    parser.add_argument("--out", "-o", type=str, required=True, help="bank file to write (.safetensors)")
    parser.add_argument("--method", type=Literal[METHODS], default="rtp",  # type: ignore[valid-type]
                        help="preset of parameterization + objective")
    parser.add_argument("--objective", type=Literal[tuple(OBJECTIVES)], default="bptt",  # type: ignore[valid-type]
                        help="the loss whose gradient moves the synthetic tensors")
    for name, (kind, default, text) in COMMAND_OPTIONS.items():
        parser.add_argument(f"--{name}", type=kind, default=default, help=text)
    for group, cls in option_groups().items():
        parser.add_class_arguments(cls, group)
    shorts = short_help(distill_short_flags())
    for action in parser._actions:
        if action.dest in shorts and action.help:
            action.help = f"{action.help} [{shorts[action.dest]}]"
    return parser


def distill_short_flags() -> dict[str, ShortFlag]:
    """The short flags of `distill` (`distill.short_flags`): the groups' flat names and the command's options."""
    return short_flags({name: kind for name, (kind, _, _) in COMMAND_OPTIONS.items()})


def parse_distill_args(argv: Sequence[str], parser: ArgumentParser | None = None) -> Namespace:
    """Parse a `distill` command line: short flags and `--print-config` are rewritten into the generated
    parser's dotted form first (exit 2 with a message on a bad or unknown flag). The options start from the
    run's profile (`distill.profiles`: --profile, else the device's), then what was given."""
    argv = ["--print_config" if a == "--print-config" else a for a in argv]
    parser = parser or build_distill_parser()
    expanded = expand_short_flags(argv, distill_short_flags())
    parser.set_defaults({**profile_defaults_for(parser, expanded), NETWORKS: None})  # None: one per process
    return parser.parse_args(expanded)


def profile_defaults_for(parser: ArgumentParser, expanded: Sequence[str]) -> dict[str, Any]:
    """The defaults of the profile a command line (in dotted form) asks for: its --profile, else the one of the
    device it runs on, for its objective and parameterization, leaving out bundles it gave an option of."""
    probe = [a for a in expanded if a not in ("-h", "--help") and not a.startswith("--print_config")]
    values = parser.parse_args(probe, _skip_validation=True).as_dict()
    profile = values["run"]["profile"] or default_profile(values["run"]["device"])
    kind = values["parameterization"]["kind"] or KIND_OF_METHOD.get(values["method"], "memory")
    given = {f"{group}.{name}": value for group in option_groups() for name, value in values[group].items()}
    return {**profile_defaults(profile, values["objective"], kind, given), "run.profile": profile}


def config_from_namespace(ns: Namespace) -> DistillConfig:
    """The `DistillConfig` a parsed `distill` command line describes (checkpoint dir not yet defaulted)."""
    values = ns.as_dict()
    groups = {g: cls(**values[g]) for g, cls in option_groups().items()}
    return DistillConfig(method=values["method"], objective=values["objective"],
                         **{g: v for g, v in groups.items() if g in GROUPS},
                         objective_options={g: v for g, v in groups.items() if g not in GROUPS})


def run_config(ns: Namespace) -> DistillConfig:
    """The validated configuration of a parsed command line, checkpoints in OUT.ckpt unless
    --run.checkpoint_dir names a folder or --checkpoints false turns them off."""
    if ns.final_eval_networks < 0:
        raise ConfigError(f"--final-eval-networks must be >= 0, got {ns.final_eval_networks}")
    config = config_from_namespace(ns)
    checkpoint_dir = (config.run.checkpoint_dir or f"{ns.out}.ckpt") if ns.checkpoints else None
    networks = config.scale.networks_per_iteration
    if networks is None:
        networks = network_count(checkpoint_dir if config.run.resume else None)
    return config.replace(checkpoint_dir=checkpoint_dir, networks_per_iteration=networks).validate()


def network_count(resumed: str | None) -> int:
    """networks_per_iteration when the command line does not give it: the resumed checkpoint's (in `resumed`),
    else one network per process of the launch (1 without torchrun)."""
    if resumed is not None and (Path(resumed) / CHECKPOINT_FILE).is_file():
        saved = read_checkpoint_header(resumed)[1].get("networks_per_iteration")
        if isinstance(saved, int) and not isinstance(saved, bool) and saved >= 1:
            return saved
    return env_world().size


def main(argv: Sequence[str]) -> int:
    """`compressdata distill ARGS`: parse (exit 2 with a message on bad flags) and run."""
    ns = parse_distill_args(argv)
    out = Path(ns.out)
    _check_out(out, ns.force)
    config = run_config(ns)
    with distributed_session(config.run.device, config.scale.collective_timeout) as world:
        return _distill_and_save(ns, config, out, world.is_main)


def _check_out(out: Path, force: bool) -> None:
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; expected a file path")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the directory {out.parent} does not exist")
    if out.exists() and not force:
        raise ConfigError(f"--out {out} exists; pass --force to overwrite it")


def _distill_and_save(ns: Any, config: DistillConfig, out: Path, main: bool) -> int:
    from compressdata.distiller.loop import distill
    from compressdata.evaluate.ranks import evaluate_bank_over_ranks
    from compressdata.loading import save_memory_bank

    try:
        bank = distill(config, progress=ns.progress, overwrite_checkpoint=ns.force)
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        return 130
    if ns.final_eval_networks:
        from compressdata.data.sources import load_source
        from compressdata.evaluate import chance_warning

        result = evaluate_bank_over_ranks(
            bank, load_source(config.data.source, "test", download=config.data.download), arch=config.model.arch,
            networks=ns.final_eval_networks, device=config.run.device, seed=config.run.seed,
            width=config.model.width, progress=ns.progress)
        bank.add_evaluation(result)
        warning = chance_warning(result, bank.num_classes)
        if main:
            print(result.summary())
            if warning:
                logger.warning(warning)
    if not main:
        return 0
    save_memory_bank(bank, out)
    storage = bank.storage
    print(f"wrote {out}: {bank.kind} bank, {len(bank)} examples, {storage['floats_stored']} "
          f"floats (IPC {storage['ipc_equivalent']:.3f} equivalent), {storage['bytes_stored']} bytes "
          f"({storage['ipc_equivalent_uint8']:g} 8-bit images per class)")
    if not ns.final_eval_networks:
        print(f"evaluate it with: compressdata evaluate {out} --test {config.data.source} --record")
    return 0
