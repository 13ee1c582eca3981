"""`push_to_hub`: publish a bank as a config of a Hub dataset repo, in one commit.

The commit adds `<config>/bank.safetensors`, `<config>/preview.png`, the viewer data
`<config>/data/<split>-00000-of-00001.parquet` (the decoded examples as `image` + a named `label`) and a
regenerated README.md card listing every config of the repo (see `compressdata.hub.card`). Pushing a
config again replaces it; other configs are kept, and so are the card's fields that compressdata does not
manage (its licence too, unless given again).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi

from compressdata.bank.memory_bank import MemoryBank
from compressdata.bank.order import interleaved_rows
from compressdata.errors import UsageError
from compressdata.hub.card import (
    CARD_NAME,
    DEFAULT_CONFIG,
    BankEntry,
    bank_file,
    check_config_name,
    entry_for,
    license_fields,
    natural_key,
    owned_paths,
    preview_file,
    render_card,
    split_front_matter,
    viewer_file,
    viewer_split,
)
from compressdata.hub.errors import HubCardError, HubError
from compressdata.hub.load import (
    check_revision,
    fetch_hub_bank,
    hub_errors,
    parse_hub_id,
    read_repo_card,
    read_repo_manifest,
)
from compressdata.preview import save_preview
from compressdata.serving.export import save_viewer_parquet

VIEWER_LIMIT = 10_000  # examples in the viewer data; a larger bank shows a class-balanced preview


def viewer_index(bank: MemoryBank, limit: int = VIEWER_LIMIT) -> torch.Tensor:
    """The examples of the viewer data: all of them when they are at most `limit`, else the first `limit`
    taking the classes in turn (the first of each class, then the second, ...), in increasing order."""
    if len(bank) <= limit:
        return torch.arange(len(bank))
    return interleaved_rows(bank.hard_labels(), bank.num_classes)[:limit].sort().values


def push_to_hub(
    bank: MemoryBank,
    repo_id: str,
    config: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    *,
    license: str | None = None,
    license_name: str | None = None,
    license_link: str | None = None,
    viewer_limit: int = VIEWER_LIMIT,
    cache_dir: str | os.PathLike | None = None,
) -> CommitInfo:
    """Create (or update) dataset repo `repo_id` with `bank` as config `config` ("default"
    when None) on branch `revision` (default main; created from main when missing).

    `private` applies when the repo is created. Other configs already in the repo are kept and
    listed in the regenerated card (they are downloaded and verified to render it). The commit
    is made against the branch head read at the start, so a concurrent push fails instead of
    being overwritten. `license` (a Hub licence id; `other` with `license_name` and `license_link`):
    default the existing card's, else the source dataset's terms. The viewer data holds every
    example up to `viewer_limit`, else a class-balanced preview of that many. Returns huggingface_hub's
    `CommitInfo` (`.oid` is the commit id).
    """
    repo_id = parse_hub_id(repo_id)
    config = check_config_name(config or DEFAULT_CONFIG)
    if viewer_limit < 1:
        raise UsageError(f"viewer_limit must be >= 1, got {viewer_limit}")
    license_fields([], license, license_name, license_link)  # a bad licence fails before any request
    branch = check_revision(revision, repo_id) or "main"
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(repo_id, branch, config, endpoint=endpoint):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, repo_type="dataset", exist_ok=True)
        info = api.repo_info(repo_id, repo_type="dataset", revision=branch)
    head = info.sha
    files = [s.rfilename for s in info.siblings or []]
    existing, others = _existing_card(repo_id, head, config, files, cache_dir, token, endpoint)

    with tempfile.TemporaryDirectory(prefix="compressdata-push-") as tmp:
        staging = Path(tmp)
        local = staging / bank_file(config)
        local.parent.mkdir(parents=True)
        bank.save(local)
        index = viewer_index(bank, viewer_limit)
        entry = entry_for(bank, config, local.read_bytes(), len(index))
        save_preview(bank, staging / preview_file(config))
        viewer = viewer_file(config, viewer_split(entry))
        save_viewer_parquet(bank, staging / viewer, index=index)
        card = render_card(repo_id, [*others, (entry, bank)], license, license_name=license_name,
                           license_link=license_link, existing=existing)
        (staging / CARD_NAME).write_text(card, encoding="utf-8")
        added = [CARD_NAME, bank_file(config), preview_file(config), viewer]
        stale = [f for f in files if f.startswith(owned_paths(config)) and f not in added]
        operations = [CommitOperationAdd(path, str(staging / path)) for path in added]
        operations += [CommitOperationDelete(path) for path in stale]
        with hub_errors(repo_id, branch, config, endpoint=endpoint):
            return api.create_commit(
                repo_id, operations, repo_type="dataset", revision=branch, parent_commit=head,
                commit_message=commit_message or f"Upload memory bank config {config!r}",
                commit_description=f"compressdata bank: {bank!r}, checksum {entry.checksum}",
            )


def _existing_card(
    repo_id: str, head: str, config: str, files: list[str],
    cache_dir: str | os.PathLike | None, token: str | bool | None, endpoint: str | None,
) -> tuple[dict[str, Any], list[tuple[BankEntry, MemoryBank]]]:
    """The front matter of the card at commit `head` and the verified banks of every other config it lists
    (nothing when the repo has no card yet)."""
    if CARD_NAME not in files:
        return {}, []
    try:
        _, entries = read_repo_manifest(repo_id, head, cache_dir, token, endpoint)
        existing, _ = split_front_matter(read_repo_card(repo_id, head, cache_dir, token, endpoint)[1])
    except (HubCardError, UsageError) as err:
        raise HubCardError(
            "the repo already has a README.md that is not a compressdata card; refusing to "
            "overwrite it", repo_id, head, config,
            hint="push to a new repo, or remove that README.md first",
        ) from err
    others = []
    for entry in sorted(entries, key=lambda e: natural_key(e.config)):
        if entry.config == config:
            continue
        try:
            loaded = fetch_hub_bank(repo_id, entry.config, head, cache_dir, token, endpoint)
        except HubError as err:
            raise HubError(
                f"cannot keep config {entry.config!r} in the regenerated card: {err}",
                repo_id, head, config,
            ) from err
        others.append((entry, loaded.bank))
    return existing, others
