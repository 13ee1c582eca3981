"""The `compressdata` command line: parse, call the library, print."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from compressdata.safe_text import terminal_text

# Commands that train networks: they run on a caching allocator (compressdata.runtime.allocator).
HEAVY_COMMANDS = ("distill", "evaluate", "baseline", "experts", "continual")
EXPORT_FORMATS = ("webdataset", "hf", "png", "ddranking", "mtt")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from compressdata.loading import is_local, load_memory_bank
    from compressdata.summary import describe_bank, describe_bank_header

    if is_local(args.bank):  # the header alone: no tensor is read or hashed
        from compressdata.bank.io import read_bank_header

        print(describe_bank_header(read_bank_header(args.bank)))
    else:
        print(describe_bank(load_memory_bank(args.bank)))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from compressdata.loading import load_memory_bank
    from compressdata.summary import describe_decode_memory

    bank = load_memory_bank(args.bank)
    print(terminal_text(f"{args.bank}: valid {bank.kind} bank, {len(bank)} examples, checksum {bank.checksum()}"))
    print(f"decode memory: {describe_decode_memory(bank)}")
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from compressdata.loading import load_memory_bank
    from compressdata.preview import save_preview

    save_preview(load_memory_bank(args.bank), args.out, per_class=args.per_class, scale=args.scale)
    print(f"wrote {args.out}")
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    import torch

    from compressdata.bank.query import parse_label_vector
    from compressdata.loading import load_memory_bank
    from compressdata.preview import grid_image, save_png

    bank = load_memory_bank(args.bank)
    y = torch.cat([parse_label_vector(text, bank.classes) for text in args.vector])
    with torch.no_grad():
        images = bank.query(y, args.n)
    rows = list(bank.to_pixels(images).split(len(images) // len(y)))
    save_png(grid_image(rows, scale=args.scale), args.out)
    print(f"wrote {args.out}: {len(y)} queries x {len(rows[0])} examples")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from compressdata.loading import load_memory_bank
    from compressdata.serving.export import export_png, export_webdataset, save_hf_dataset

    bank = load_memory_bank(args.bank)
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
    from compressdata.loading import load_memory_bank, save_memory_bank

    out = Path(args.out)
    if out.is_dir() or not out.parent.is_dir():
        raise UsageError(f"--out {out}: expected a file path in an existing folder")
    if out.exists() and not args.force:
        raise UsageError(f"--out {out} exists; pass --force to overwrite it")
    bank = load_memory_bank(args.bank)
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    from compressdata.continual.cli import add_continual_commands
    from compressdata.distiller.cli import add_distill_commands
    from compressdata.evaluate.cli import add_evaluate_commands
    from compressdata.hub.cli import add_hub_commands
    from compressdata.interop.cli import add_import_command

    parser = argparse.ArgumentParser(prog="compressdata", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="print a bank's kind, shapes, classes, storage, recipe, provenance "
                       "(a local file: from its header alone; validate checks the tensors)")
    p.add_argument("bank", help="bank file or Hub id")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("validate", help="check a bank against the format spec (exit 1 if invalid)")
    p.add_argument("bank", help="bank file or Hub id")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("preview", help="write a PNG grid, one row per class")
    p.add_argument("bank", help="bank file or Hub id")
    p.add_argument("-o", "--out", default="preview.png", help="output PNG path")
    p.add_argument("--per-class", type=int, default=10, help="examples shown per class")
    p.add_argument("--scale", type=int, default=2, help="pixel magnification")
    p.set_defaults(func=_cmd_preview)

    p = sub.add_parser("query", help="synthesise examples for label vectors (memory banks); PNG, one row per query")
    p.add_argument("bank", help="bank file or Hub id")
    p.add_argument("--vector", action="append", required=True,
                   help="a label vector: numbers, one per class ('0,0.5,0,...'), or class=weight pairs "
                        "('Sandal=0.5,Sneaker=0.5'); repeat for several queries")
    p.add_argument("-n", type=int, default=None, help="examples per query (default: all available rows)")
    p.add_argument("-o", "--out", default="query.png", help="output PNG path")
    p.add_argument("--scale", type=int, default=2, help="pixel magnification")
    p.set_defaults(func=_cmd_query)

    p = sub.add_parser("export", help="write a bank as webdataset shards, a datasets folder, PNG files or an "
                                      "evaluator's .pt files")
    p.add_argument("bank", help="bank file or Hub id")
    p.add_argument("out", help="output folder (webdataset: a folder or a pattern with %%06d)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="webdataset",
                   help="webdataset shards, hf (datasets save_to_disk), png (ImageFolder), or the tensors "
                        "DD-Ranking (ddranking) or MTT-style evaluation code (mtt) load (docs/interop.md)")
    p.add_argument("--maxcount", type=int, default=10_000, help="samples per webdataset shard")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("quantize", help="store a bank in fewer bytes (f16, bf16, or 8-bit with a scale and zero "
                                        "point) and report the error of its decoded examples")
    p.add_argument("bank", help="bank file or Hub id")
    p.add_argument("--dtype", required=True,
                   help="f32, f16, bf16, int8 (one scale and zero point per tensor) or int8-row (one per row), for "
                        "every stored tensor, or per tensor: 'bases=f16,addresses=int8' (others f32)")
    p.add_argument("-o", "--out", required=True, help="bank file to write (.safetensors)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=_cmd_quantize)

    add_distill_commands(sub)
    add_evaluate_commands(sub)
    add_continual_commands(sub)
    add_hub_commands(sub)
    add_import_command(sub)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


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

    if argv[:1] == ["distill"]:  # its own parser, generated from the run's option groups
        from compressdata.distiller.cli import main as distill_main

        command, run = "distill", lambda: distill_main(argv[1:])
    else:
        args = build_parser().parse_args(argv)
        command, run = args.command, lambda: args.func(args)
    try:
        return run()
    except (CompressdataError, OSError) as e:  # the library's errors and the system's; a bug shows its traceback
        print(terminal_text(f"compressdata {command}: error: {e}"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
