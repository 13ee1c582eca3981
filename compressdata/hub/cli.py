"""`compressdata push | pull | export`: thin subcommands over the Hub and export functions.

`add_hub_commands(subparsers)` registers them on the main parser's subparsers; each sets
`func` to its `cmd_*` function, which returns the exit status. Errors are raised (HubError,
BankFormatError, ValueError, FileNotFoundError) for the main entry point to report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXPORT_FORMATS = ("webdataset", "hf", "png", "ddranking", "mtt")


def _hub_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="config name (e.g. ipc10)")
    p.add_argument("--revision", default=None, help="branch, tag or full commit id (default main)")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    p.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or the Hub)")


def add_hub_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `push`, `pull` and `export` on `subparsers`."""
    p = subparsers.add_parser("push", help="publish a bank file to a Hub dataset repo")
    p.add_argument("bank", help="bank file")
    p.add_argument("repo_id", help="Hub dataset repo, namespace/name")
    _hub_options(p)
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--license", default="other", help="license in the card (default other)")
    p.set_defaults(func=cmd_push)

    p = subparsers.add_parser("pull", help="download a bank into the cache and summarise it")
    p.add_argument("repo_id", help="Hub dataset repo, namespace/name")
    _hub_options(p)
    p.add_argument("--cache-dir", default=None, help="huggingface_hub cache folder")
    p.set_defaults(func=cmd_pull)

    p = subparsers.add_parser("export", help="write a bank as webdataset shards, a datasets "
                                             "folder, PNG files or an evaluator's .pt files")
    p.add_argument("bank", help="bank file or Hub id")
    p.add_argument("out", help="output folder (webdataset: a folder or a pattern with %%06d)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="webdataset",
                   help="webdataset shards, hf (datasets save_to_disk), png (ImageFolder), or the tensors "
                        "DD-Ranking (ddranking) or MTT-style evaluation code (mtt) load (docs/interop.md)")
    p.add_argument("--maxcount", type=int, default=10_000, help="samples per webdataset shard")
    p.set_defaults(func=cmd_export)


def cmd_push(args: argparse.Namespace) -> int:
    """Push a local bank file; prints the commit."""
    from compressdata.bank.memory_bank import MemoryBank
    from compressdata.hub.publish import push_to_hub

    bank = MemoryBank.from_file(args.bank)
    info = push_to_hub(bank, args.repo_id, config=args.config, private=args.private,
                       revision=args.revision, commit_message=args.message, token=args.token,
                       endpoint=args.endpoint, license=args.license)
    print(f"pushed {args.bank} to {args.repo_id} (config {args.config or 'default'}): "
          f"commit {info.oid}\n{info.commit_url}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Fetch a Hub bank into the cache, verify it and print where it is and its summary."""
    from compressdata.hub.load import fetch_hub_bank
    from compressdata.summary import describe_bank

    got = fetch_hub_bank(args.repo_id, config=args.config, revision=args.revision,
                         cache_dir=args.cache_dir, token=args.token, endpoint=args.endpoint)
    print(f"{got.repo_id} config {got.config} at commit {got.commit}\n"
          f"cached at {got.path}\n{describe_bank(got.bank)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a bank (file or Hub id) to webdataset shards, a datasets folder, PNGs or .pt tensors."""
    from compressdata.data.export import export_png, export_webdataset, save_hf_dataset
    from compressdata.loading import load_memory_bank

    bank = load_memory_bank(args.bank)
    if args.format == "webdataset":
        pattern = args.out if "%" in args.out else str(Path(args.out) / "shard-%06d.tar")
        written = export_webdataset(bank, pattern, maxcount=args.maxcount)
        print(f"wrote {len(bank)} samples in {len(written)} shards: {pattern}")
    elif args.format == "hf":
        save_hf_dataset(bank, args.out)
        print(f"wrote a datasets.Dataset of {len(bank)} rows to {args.out} "
              "(read it with datasets.load_from_disk)")
    elif args.format == "png":
        written = export_png(bank, args.out)
        print(f"wrote {len(written)} PNG files under {args.out}")
    else:
        from compressdata.interop.export import export_release

        written = export_release(bank, args.out, args.format)
        print(f"wrote {len(bank)} examples for {args.format}: {', '.join(str(p) for p in written)}")
    return 0
