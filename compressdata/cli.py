"""The `compressdata` command line: parse, call the library, print."""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from compressdata.safe_text import terminal_text
from compressdata.version import __version__

DESCRIPTION = ("Distil a labelled image dataset into a small memory bank file, and inspect, evaluate, export and "
               "publish banks. `compressdata COMMAND --help` lists a command's options.")
# Commands that train networks: they run on a caching allocator (compressdata.runtime.allocator).
HEAVY_COMMANDS = ("distill", "evaluate", "baseline", "experts", "continual")
EXPORT_FORMATS = ("webdataset", "hf", "png", "ddranking", "mtt")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from compressdata.loading import is_local, load_bank_argument, read_local_header
    from compressdata.summary import bank_json, describe_bank, describe_bank_header

    if is_local(args.bank) and args.config is None and args.revision is None:  # the header alone
        header = read_local_header(args.bank)
        print(bank_json(header.meta, header.tensors) if args.json else describe_bank_header(header))
    else:
        bank = load_bank_argument(args)
        print(bank_json(bank.metadata(), bank.all_tensors()) if args.json else describe_bank(bank))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from compressdata.loading import load_bank_argument
    from compressdata.summary import describe_decode_memory

    bank = load_bank_argument(args)
    print(terminal_text(f"{args.bank}: valid {bank.kind} bank, {len(bank)} examples, checksum {bank.checksum()}"))
    print(f"decode memory: {describe_decode_memory(bank)}")
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from compressdata.loading import load_bank_argument
    from compressdata.preview import check_image_path, save_preview

    check_image_path(args.out)  # before the bank is read
    save_preview(load_bank_argument(args), args.out, per_class=args.per_class, scale=args.scale,
                 labels=args.labels, contrast=args.contrast)
    print(f"wrote {args.out}")
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    import torch

    from compressdata.bank.query import parse_label_vector
    from compressdata.loading import load_bank_argument
    from compressdata.preview import check_image_path, grid_image, save_image

    check_image_path(args.out)
    bank = load_bank_argument(args)
    y = torch.cat([parse_label_vector(text, bank.classes) for text in args.vector])
    with torch.no_grad():
        images = bank.query(y, args.n)
    rows = list(bank.to_pixels(images).split(len(images) // len(y)))
    save_image(grid_image(rows, scale=args.scale), args.out)
    print(f"wrote {args.out}: {len(y)} queries x {len(rows[0])} examples")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from compressdata.loading import load_bank_argument
    from compressdata.serving.export import export_png, export_webdataset, save_hf_dataset

    bank = load_bank_argument(args)
    if args.format == "webdataset":
        pattern = args.out if "%" in args.out else str(Path(args.out) / "shard-%06d.tar")
        written = export_webdataset(bank, pattern, maxcount=args.maxcount)
        print(f"wrote {len(bank)} samples in {len(written)} shards: {pattern}")
    elif args.format == "hf":
        save_hf_dataset(bank, args.out)
        print(f"wrote a datasets.Dataset of {len(bank)} rows to {args.out} (read it with datasets.load_from_disk)")
    elif args.format == "png":
        written = export_png(bank, args.out)
        print(f"wrote {len(written)} PNG files under {args.out}")
    else:
        from compressdata.interop.export import export_release

        written = export_release(bank, args.out, args.format)
        print(f"wrote {len(bank)} examples for {args.format}: {', '.join(str(p) for p in written)}")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from compressdata.bank.quantize import quantize_bank
    from compressdata.errors import UsageError
    from compressdata.loading import load_bank_argument, save_memory_bank

    out = Path(args.out)
    if out.is_dir() or not out.parent.is_dir():
        raise UsageError(f"--out {out}: expected a file path in an existing folder")
    if out.exists() and not args.force:
        raise UsageError(f"--out {out} exists; pass --force to overwrite it")
    bank = load_bank_argument(args)
    quantized = quantize_bank(bank, args.dtype)
    save_memory_bank(quantized, out)
    record = quantized.provenance["quantization"]
    before, after = bank.storage["bytes_stored"], quantized.storage["bytes_stored"]
    dtypes = ", ".join(f"{name} {dtype}" for name, dtype in quantized.storage_dtypes().items())
    print(terminal_text(f"wrote {out}: {dtypes}; {after} bytes stored (was {before}, x{after / before:.3f}), "
                        f"IPC {quantized.storage['ipc_equivalent_uint8']:g} in 8-bit images"))
    error = record["decoded_error"]
    print(f"decoded error: RMSE {error['rmse']:.4g} ({100 * error['relative_rmse']:.2f} % of the decoded values' "
          f"std), max abs {error['max_abs']:.4g}")
    if bank.evaluations:
        print(f"note: the {len(bank.evaluations)} recorded evaluation(s) measured the unquantised values and were "
              f"dropped; evaluate the new bank with: compressdata evaluate {out} --record")
    return 0


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    from compressdata.loading import add_bank_arguments

    p = sub.add_parser("inspect", help=COMMANDS["inspect"][0])
    add_bank_arguments(p)
    p.add_argument("--json", action="store_true", help="print the metadata and the tensors' shapes as JSON")
    p.set_defaults(func=_cmd_inspect)


def _add_validate(sub: argparse._SubParsersAction) -> None:
    from compressdata.loading import add_bank_arguments

    p = sub.add_parser("validate", help=COMMANDS["validate"][0])
    add_bank_arguments(p)
    p.set_defaults(func=_cmd_validate)


def _add_preview(sub: argparse._SubParsersAction) -> None:
    from compressdata.loading import add_bank_arguments

    p = sub.add_parser("preview", help=COMMANDS["preview"][0])
    add_bank_arguments(p)
    p.add_argument("-o", "--out", default="preview.png", help="output image: .png, or .jpg / .jpeg for JPEG")
    p.add_argument("--per-class", type=int, default=10, help="examples shown per class")
    p.add_argument("--scale", type=int, default=2, help="pixel magnification")
    p.add_argument("--no-labels", dest="labels", action="store_false", help="leave out the class names")
    p.add_argument("--contrast", action="store_true",
                   help="stretch each example to the full grey range (shows a faint bank's structure)")
    p.set_defaults(func=_cmd_preview)


def _add_query(sub: argparse._SubParsersAction) -> None:
    from compressdata.loading import add_bank_arguments

    p = sub.add_parser("query", help=COMMANDS["query"][0])
    add_bank_arguments(p)
    p.add_argument("--vector", action="append", required=True,
                   help="a label vector: numbers, one per class ('0,0.5,0,...'), or class=weight pairs "
                        "('Sandal=0.5,Sneaker=0.5'); repeat for several queries")
    p.add_argument("-n", type=int, default=None, help="examples per query (default: all available rows)")
    p.add_argument("-o", "--out", default="query.png", help="output image: .png, or .jpg / .jpeg for JPEG")
    p.add_argument("--scale", type=int, default=2, help="pixel magnification")
    p.set_defaults(func=_cmd_query)


def _add_export(sub: argparse._SubParsersAction) -> None:
    from compressdata.loading import add_bank_arguments

    p = sub.add_parser("export", help=COMMANDS["export"][0])
    add_bank_arguments(p)
    p.add_argument("out", help="output folder (webdataset: a folder or a pattern with %%06d)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="webdataset",
                   help="webdataset shards, hf (datasets save_to_disk), png (ImageFolder), or the tensors "
                        "DD-Ranking (ddranking) or MTT-style evaluation code (mtt) load (docs/interop.md)")
    p.add_argument("--maxcount", type=int, default=10_000, help="samples per webdataset shard")
    p.set_defaults(func=_cmd_export)


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    from compressdata.loading import add_bank_arguments

    p = sub.add_parser("quantize", help=COMMANDS["quantize"][0])
    add_bank_arguments(p)
    p.add_argument("--dtype", required=True,
                   help="f32, f16, bf16, int8 (one scale and zero point per tensor) or int8-row (one per row), for "
                        "every stored tensor, or per tensor: 'bases=f16,addresses=int8' (others f32)")
    p.add_argument("-o", "--out", required=True, help="bank file to write (.safetensors)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=_cmd_quantize)


def _add_distill(sub: argparse._SubParsersAction) -> None:
    """`distill` has its own parser (`compressdata.distiller.cli`); `main` hands it the arguments."""
    p = sub.add_parser("distill", add_help=False, help=COMMANDS["distill"][0])
    p.add_argument("args", nargs=argparse.REMAINDER, help="options: compressdata distill --help")
    p.set_defaults(func=_cmd_distill)


def _cmd_distill(args: argparse.Namespace) -> int:
    from compressdata.distiller.cli import main as distill_main

    return distill_main(args.args)


# Every command: its one-line help (what `compressdata --help` lists without importing anything heavy) and
# what registers its parser: a function here, or "module:function" imported only when the command runs
# (a function of another module may register several commands at once).
COMMANDS: dict[str, tuple[str, Callable[[argparse._SubParsersAction], None] | str]] = {
    "inspect": ("print a bank's kind, shapes, classes, storage, recipe, provenance (a local file: from its "
                "header alone; validate checks the tensors)", _add_inspect),
    "validate": ("check a bank against the format spec (exit 1 if invalid)", _add_validate),
    "preview": ("write an image grid, one labelled row per class", _add_preview),
    "query": ("synthesise examples for label vectors (memory banks); an image, one row per query", _add_query),
    "export": ("write a bank as webdataset shards, a datasets folder, PNG files or an evaluator's .pt files",
               _add_export),
    "quantize": ("store a bank in fewer bytes (f16, bf16, or 8-bit with a scale and zero point) and report the "
                 "error of its decoded examples", _add_quantize),
    "distill": ("distil a real dataset into a memory bank (any parameterization x objective); see compressdata "
                "distill --help", _add_distill),
    "experts": ("train expert trajectories for mtt (resumable)",
                "compressdata.distiller.experts_cli:add_experts_command"),
    "evaluate": ("train fresh networks on a bank and test them on a real test split",
                 "compressdata.evaluate.cli:add_evaluate_commands"),
    "baseline": ("compute and cache reference accuracies (full-data training)",
                 "compressdata.evaluate.cli:add_evaluate_commands"),
    "continual": ("continual learning: grow a memory bank task by task, compare with replay",
                  "compressdata.continual.cli:add_continual_commands"),
    "push": ("publish a bank file to a Hub dataset repo", "compressdata.hub.cli:add_hub_commands"),
    "pull": ("download a bank into the cache and summarise it", "compressdata.hub.cli:add_hub_commands"),
    "import": ("turn a released distilled dataset (MTT, DC, DD-Ranking, ... files) into a bank",
               "compressdata.interop.cli:add_import_command"),
}


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: the subcommands in `commands` (default: all) with their options, every other one
    listed by name and help only (so that `compressdata --help` imports nothing heavy)."""
    parser = argparse.ArgumentParser(prog="compressdata", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"compressdata {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = list(COMMANDS) if commands is None else [c for c in commands if c in COMMANDS]
    for name in wanted:
        if name not in sub.choices:
            _registrar(COMMANDS[name][1])(sub)
    for name, (text, _) in COMMANDS.items():
        if name not in sub.choices:
            stub = sub.add_parser(name, help=text, add_help=False)
            stub.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _registrar(where: Callable[[argparse._SubParsersAction], None] | str
               ) -> Callable[[argparse._SubParsersAction], None]:
    if callable(where):
        return where
    module, _, function = where.partition(":")
    return getattr(importlib.import_module(module), function)


def _command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


class _ConsoleHandler(logging.Handler):
    """The library's log messages on the terminal: information on stdout, warnings on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        warning = record.levelno >= logging.WARNING
        text = terminal_text(("warning: " if warning else "") + record.getMessage())
        print(text, file=sys.stderr if warning else sys.stdout, flush=True)


def show_library_messages() -> None:
    """Print the `compressdata` loggers' messages (INFO and above) as the command line's output."""
    logger = logging.getLogger("compressdata")
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `compressdata` command. Run as a program (argv None), the heavy commands
    first move onto a caching allocator (this may re-execute the process)."""
    if argv is None and _command(sys.argv[1:]) in HEAVY_COMMANDS:
        from compressdata.runtime.allocator import AllocatorError, use_caching_allocator

        try:
            use_caching_allocator(sys.argv[1:])
        except AllocatorError as e:
            print(f"compressdata: error: {e}", file=sys.stderr)
            return 2
    argv = list(sys.argv[1:] if argv is None else argv)
    from compressdata.errors import CompressdataError

    command = _command(argv)
    if argv[:1] == ["distill"]:  # its own parser, generated from the run's option groups
        run = functools.partial(_cmd_distill, argparse.Namespace(args=argv[1:]))
    else:
        args = build_parser([command] if command else []).parse_args(argv)
        command, run = args.command, functools.partial(args.func, args)
    show_library_messages()
    try:
        return run()
    except CompressdataError as e:  # the library's errors, with the command line's hint
        print(terminal_text(f"compressdata {command}: error: {e.command_line_message()}"), file=sys.stderr)
        return 1
    except OSError as e:  # the system's; a bug shows its traceback
        print(terminal_text(f"compressdata {command}: error: {e}"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
