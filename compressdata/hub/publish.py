"""`push_to_hub`: publish a bank as a config of a Hub dataset repo, in one commit.

The commit adds `<config>/bank.safetensors`, `<config>/preview.png`, webdataset preview shards
under `<config>/preview/` and a regenerated README.md card listing every config of the repo
(see `compressdata.hub.card`). Pushing a config again replaces it; other configs are kept.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi

from compressdata.bank.memory_bank import MemoryBank
from compressdata.errors import UsageError
from compressdata.hub.card import (
    CARD_NAME,
    DEFAULT_CONFIG,
    BankEntry,
    bank_file,
    check_config_name,
    entry_for,
    natural_key,
    preview_file,
    preview_shards,
    render_card,
)
from compressdata.hub.errors import HubCardError, HubError
from compressdata.hub.load import check_revision, fetch_hub_bank, hub_errors, parse_hub_id, read_repo_manifest
from compressdata.preview import save_preview
from compressdata.serving.export import export_webdataset

PREVIEW_LIMIT = 1000
PREVIEW_SHARD_SIZE = 500


def preview_index(bank: MemoryBank, limit: int = PREVIEW_LIMIT) -> torch.Tensor:
    """Up to `limit` example indices, balanced over classes (the first of each class, then the
    second, ...), in increasing order."""
    labels = bank.hard_labels()
    rank = torch.zeros(len(labels), dtype=torch.int64)
    for c in range(bank.num_classes):
        members = torch.nonzero(labels == c).flatten()
        rank[members] = torch.arange(len(members))
    order = torch.argsort(rank * len(labels) + torch.arange(len(labels)))
    return order[:limit].sort().values


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
    license: str = "other",
    preview_limit: int = PREVIEW_LIMIT,
    cache_dir: str | os.PathLike | None = None,
) -> CommitInfo:
    """Create (or update) dataset repo `repo_id` with `bank` as config `config` ("default"
    when None) on branch `revision` (default main; created from main when missing).

    `private` applies when the repo is created. Other configs already in the repo are kept and
    listed in the regenerated card (they are downloaded and verified to render it). The commit
    is made against the branch head read at the start, so a concurrent push fails instead of
    being overwritten. Returns huggingface_hub's `CommitInfo` (`.oid` is the commit id).
    """
    repo_id = parse_hub_id(repo_id)
    config = check_config_name(config or DEFAULT_CONFIG)
    if preview_limit < 1:
        raise UsageError(f"preview_limit must be >= 1, got {preview_limit}")
    branch = check_revision(revision, repo_id) or "main"
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(repo_id, branch, config, endpoint=endpoint):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, repo_type="dataset", exist_ok=True)
        info = api.repo_info(repo_id, repo_type="dataset", revision=branch)
    head = info.sha
    files = [s.rfilename for s in info.siblings or []]
    others = _other_banks(repo_id, head, config, files, cache_dir, token, endpoint)

    with tempfile.TemporaryDirectory(prefix="compressdata-push-") as tmp:
        staging = Path(tmp)
        local = staging / bank_file(config)
        local.parent.mkdir(parents=True)
        bank.save(local)
        index = preview_index(bank, preview_limit)
        entry = entry_for(bank, config, local.read_bytes(), len(index))
        save_preview(bank, staging / preview_file(config))
        shards = export_webdataset(bank, staging / preview_shards(config) / "shard-%06d.tar",
                                   maxcount=PREVIEW_SHARD_SIZE, index=index)
        card = render_card(repo_id, [*others, (entry, bank)], license)
        (staging / CARD_NAME).write_text(card, encoding="utf-8")
        added = [CARD_NAME, bank_file(config), preview_file(config)]
        added += [str(Path(s).relative_to(staging).as_posix()) for s in shards]
        stale = [f for f in files if f.startswith(preview_shards(config) + "/") and f not in added]
        operations = [CommitOperationAdd(path, str(staging / path)) for path in added]
        operations += [CommitOperationDelete(path) for path in stale]
        with hub_errors(repo_id, branch, config, endpoint=endpoint):
            return api.create_commit(
                repo_id, operations, repo_type="dataset", revision=branch, parent_commit=head,
                commit_message=commit_message or f"Upload memory bank config {config!r}",
                commit_description=f"compressdata bank: {bank!r}, checksum {entry.checksum}",
            )


def _other_banks(
    repo_id: str, head: str, config: str, files: list[str],
    cache_dir: str | os.PathLike | None, token: str | bool | None, endpoint: str | None,
) -> list[tuple[BankEntry, MemoryBank]]:
    """The verified banks of every other config listed in the card at commit `head`."""
    if CARD_NAME not in files:
        return []
    try:
        _, entries = read_repo_manifest(repo_id, head, cache_dir, token, endpoint)
    except HubCardError as err:
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
    return others
