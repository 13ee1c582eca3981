"""The short `distill` flags: every option also answers to its flat name with dashes.

`--budget-ipc 10` is `--parameterization.budget_ipc 10`, `--inner-lr 0.03` is `--inner.lr 0.03`: the
flat name (the key `DistillConfig.to_dict` writes and banks' provenance records) with dashes, the
flags compressdata has always accepted. Booleans are switches there (`--dsa` is `--data.dsa true`;
`--dsa false` works too), a tuple takes its values one by one (`--outer-betas 0.5 0.9`). The table is
generated from the option groups and the command's own options; `RENAMED` and `NEGATED` list the few
short flags that are not a flat name. `expand_short_flags` rewrites a command line into the dotted
form the generated parser reads and leaves every other argument as it is, so an unknown flag still
reaches the parser and is reported there.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compressdata.distiller.options import flat_names, option_groups

# Short flags whose name is not the option's flat name.
RENAMED = {
    "--param": "parameterization.kind",
    "--inner-batch": "inner.batch_per_class",
    "--real-batch": "outer.real_batch_per_class",
    "--stream-buffer": "scale.stream_buffer_per_class",
    "--expert-dir": "mtt.expert_dir",
    "--quantization-aware": "parameterization.quant_aware",
}
# Switches that turn an option off.
NEGATED = {"--no-checkpoints": "checkpoints", "--no-progress": "progress"}
_BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no"})


@dataclass(frozen=True)
class ShortFlag:
    """What a short flag stands for: the dotted option, how many values follow it (0: a switch) and,
    for a switch, the value it sets."""

    dest: str
    arity: int
    value: str = "true"


def short_flags(command_options: Mapping[str, type]) -> dict[str, ShortFlag]:
    """{short flag: ShortFlag} of every option of the groups and of `command_options` (the command's own
    options by name, with their types), then the renamed and negated ones."""
    table: dict[str, ShortFlag] = {}
    groups = option_groups()
    for name, kind in command_options.items():
        table[_dashed(name)] = ShortFlag(name, _arity(kind))
    for group, cls in groups.items():
        hints = typing.get_type_hints(cls)
        for name, flat in flat_names(group, cls).items():
            if flat not in groups:  # `--parameterization` is the group's own flag (a YAML of the group)
                table[_dashed(flat)] = ShortFlag(f"{group}.{name}", _arity(hints[name]))
    for flag, dest in RENAMED.items():
        group, name = dest.split(".")
        table[flag] = ShortFlag(dest, _arity(typing.get_type_hints(groups[group])[name]))
    for flag, dest in NEGATED.items():
        table[flag] = ShortFlag(dest, 0, "false")
    return table


def expand_short_flags(argv: Sequence[str], table: Mapping[str, ShortFlag]) -> list[str]:
    """`argv` with each short flag (and its values) written as `--DEST=VALUE`; other arguments unchanged."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        flag, eq, given = arg.partition("=")
        short = table.get(flag) if flag.startswith("--") else None
        if short is None:
            out.append(arg)
            continue
        if eq:
            out.append(f"--{short.dest}={given}")
        elif short.arity == 0:
            value = short.value
            if i < len(argv) and argv[i].lower() in _BOOLEAN_WORDS and short.value == "true":
                value, i = argv[i], i + 1
            out.append(f"--{short.dest}={value}")
        elif short.arity == 1:
            out.append(f"--{short.dest}")
        else:
            values = list(argv[i:i + short.arity])
            i += len(values)
            out.append(f"--{short.dest}=[{', '.join(values)}]" if len(values) == short.arity else f"--{short.dest}")
    return out


def short_help(table: Mapping[str, ShortFlag]) -> dict[str, str]:
    """{dotted option: "short: FLAG" (a switch: "short: FLAG, a switch")}, for the help text."""
    by_dest: dict[str, list[str]] = {}
    for flag, short in table.items():
        if short.dest in NEGATED.values():
            if short.value == "false":
                by_dest.setdefault(short.dest, []).append(f"{flag} turns it off")
        elif short.arity == 0:
            by_dest.setdefault(short.dest, []).append(f"{flag}, a switch")
        elif flag != f"--{short.dest}":
            by_dest.setdefault(short.dest, []).append(flag)
    return {dest: "short: " + "; ".join(flags) for dest, flags in by_dest.items()}


def _dashed(name: str) -> str:
    return "--" + name.replace("_", "-")


def _arity(kind: Any) -> int:
    """0 for a boolean (a switch), n for a tuple of n values, else 1 (an optional type: its value's)."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        kinds = [k for k in typing.get_args(kind) if k is not type(None)]
        kind = kinds[0] if len(kinds) == 1 else kind
    if kind is bool:
        return 0
    if typing.get_origin(kind) is tuple:
        return len(typing.get_args(kind))
    return 1
