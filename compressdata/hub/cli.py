"""`compressdata push | pull`: thin subcommands over the Hub functions.

`add_hub_commands(subparsers)` registers them on the main parser's subparsers; each sets
`func` to its `cmd_*` function, which returns the exit status. Errors are raised (`HubError`,
`BankFormatError`, ...: `CompressdataError`s) for the main entry point to report.
"""

from __future__ import annotations

import argparse


def _hub_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="config name (e.g. ipc10)")
    p.add_argument("--revision", default=None, help="branch, tag or full commit id (default main)")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    p.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or the Hub)")


def add_hub_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `push` and `pull` on `subparsers`."""
    p = subparsers.add_parser("push", help="publish a bank file to a Hub dataset repo")
    p.add_argument("bank", help="bank file")
    p.add_argument("repo_id", help="Hub dataset repo, namespace/name")
    _hub_options(p)
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--license", default=None,
                   help="the card's licence, a Hub licence id such as mit or cc-by-4.0, or other with --license-name "
                        "and --license-link (default: the existing card's, else the source dataset's terms)")
    p.add_argument("--license-name", default=None, help="an id for a licence of --license other (e.g. my-license-1.0)")
    p.add_argument("--license-link", default=None,
                   help="where a licence of --license other is: LICENSE, LICENSE.md (a file in the repo) or a URL")
    p.set_defaults(func=cmd_push)

    p = subparsers.add_parser("pull", help="download a bank into the cache and summarise it")
    p.add_argument("repo_id", help="Hub dataset repo, namespace/name")
    _hub_options(p)
    p.add_argument("--cache-dir", default=None, help="huggingface_hub cache folder")
    p.set_defaults(func=cmd_pull)


def cmd_push(args: argparse.Namespace) -> int:
    """Push a local bank file; prints the commit."""
    from compressdata.bank.memory_bank import MemoryBank
    from compressdata.hub.publish import push_to_hub

    bank = MemoryBank.from_file(args.bank)
    info = push_to_hub(bank, args.repo_id, config=args.config, private=args.private,
                       revision=args.revision, commit_message=args.message, token=args.token,
                       endpoint=args.endpoint, license=args.license, license_name=args.license_name,
                       license_link=args.license_link)
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
