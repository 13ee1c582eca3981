"""Loading a bank from the Hugging Face Hub: id resolution, cached download, checksum checks.

Downloads go through `huggingface_hub.hf_hub_download` and its cache, so a bank downloaded once
loads again offline (`HF_HUB_OFFLINE=1`, or the Hub unreachable). The card (README.md) is read
first; its commit pins the bank download, and the bank must match the card's size, sha256 and
content checksum, or `HubChecksumError` is raised. Revisions are checked before any request
(`check_revision`), and each file is first asked for with one HEAD request of at most
HF_HUB_ETAG_TIMEOUT seconds without retries, so an endpoint that does not answer costs that long,
not huggingface_hub's retries (6 x 60 s).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from compressdata.bank.memory_bank import MemoryBank
from compressdata.errors import BankFormatError, UsageError
from compressdata.hub.card import CARD_NAME, BankEntry, check_config_name, read_manifest
from compressdata.hub.errors import (
    OFFLINE_CLI_HINT,
    OFFLINE_HINT,
    HubCardError,
    HubChecksumError,
    HubConfigError,
    HubConnectionError,
    HubError,
    HubFileNotFoundError,
    HubPermissionError,
    HubRepoNotFoundError,
    HubRevisionError,
    HubRevisionNotFoundError,
)

HUB_PREFIXES = ("hf://datasets/", "hf://")
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
REPO_ID = re.compile(rf"{_NAME}/{_NAME}")
LOCAL_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")
COMMIT_ID = re.compile(r"[0-9a-f]{40}")
MAX_REVISION = 255
_REVISION_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\~^:?*\[]|\.\.|@\{|//")


def is_hub_id(name_or_path: str | os.PathLike) -> bool:
    """Whether `load_memory_bank(name_or_path)` loads from the Hub. First matching rule wins:

    1. a `pathlib.Path` -> local; `hf://user/name` or `hf://datasets/user/name` -> Hub (the
       explicit form, for a repo whose id is also a local path);
    2. an existing file or folder, or `folder/name` whose `folder` is an existing local folder (a
       missing file there fails at once instead of asking the Hub) -> local;
    3. starts with `/`, `./`, `../` or `~`, holds a backslash or a drive colon, or ends with
       `.safetensors` -> local;
    4. `namespace/name` in the Hub's repo-id grammar (exactly one `/`; each part 1-96 letters,
       digits, `-`, `_`, `.`, starting with a letter or digit, not ending with `.` or `-`; no
       `--` or `..`; not ending in `.git`) -> Hub;
    5. anything else -> local (loading then reports the missing file).

    A local path wins over a Hub id because it is unambiguous and needs no network: a folder
    that happens to be called `user/name` must not be silently replaced by a download, and a typo
    in a path under a local folder must not turn into Hub requests.
    """
    if isinstance(name_or_path, os.PathLike):
        return False
    name = str(name_or_path)
    if name.startswith(HUB_PREFIXES):
        return True
    namespace, slash, _ = name.partition("/")
    if os.path.exists(name) or (slash and namespace and os.path.isdir(namespace)):
        return False
    if name.startswith(LOCAL_PREFIXES) or "\\" in name or ":" in name:
        return False
    if name.endswith(".safetensors"):
        return False
    return _valid_repo_id(name)


def _valid_repo_id(name: str) -> bool:
    return (REPO_ID.fullmatch(name) is not None and "--" not in name and ".." not in name
            and not name.endswith(".git"))


def parse_hub_id(name: str) -> str:
    """`user/name` from `user/name`, `hf://user/name` or `hf://datasets/user/name`."""
    repo_id = name
    for prefix in HUB_PREFIXES:
        if repo_id.startswith(prefix):
            repo_id = repo_id[len(prefix):]
            break
    if not _valid_repo_id(repo_id):
        raise UsageError(
            f"{name!r} is not a Hub dataset repo id: expected 'namespace/name' (letters, digits, "
            "'-', '_', '.'; optionally prefixed by hf:// or hf://datasets/)"
        )
    return repo_id


def check_revision(revision: str | None, repo_id: str | None = None) -> str | None:
    """`revision` if it is a valid git ref name or commit id (the Hub's branches and tags are git
    refs), else `HubRevisionError`, before any request: no `..`, no leading, trailing or double `/`,
    no backslash, whitespace, control character or `~^:?*[`, no `@{`, 1-255 characters. A name
    such as `main/../../x` would otherwise reach huggingface_hub's cache paths."""
    if revision is None:
        return None
    bad = (not isinstance(revision, str) or not 1 <= len(revision) <= MAX_REVISION
           or _REVISION_FORBIDDEN.search(revision) is not None or revision.startswith(("/", "-", "."))
           or revision.endswith(("/", ".", ".lock")) or "/." in revision)
    if bad:
        raise HubRevisionError(
            f"revision {revision!r:.300} is not a branch, tag or commit name", repo_id,
            hint="use a branch or tag name (git ref rules: no '..', no leading '/', no backslash or "
                 "spaces) or a full 40-hex commit id")
    return revision


@contextlib.contextmanager
def hub_errors(
    repo_id: str, revision: str | None, config: str | None = None, filename: str | None = None,
    endpoint: str | None = None, cache_dir: str | os.PathLike | None = None,
) -> Iterator[None]:
    """Translate huggingface_hub and network errors into typed `HubError`s naming the context."""
    context = {"repo_id": repo_id, "revision": revision or "main", "config": config}
    what = f"{filename!r}" if filename else "the repo"
    try:
        yield
    except RepositoryNotFoundError as err:
        raise HubRepoNotFoundError(
            "no such dataset repo, or it is private and the token cannot read it",
            hint="check the id; pass token= (or log in with `hf auth login`) for a private repo",
            cli_hint="check the id; log in with `hf auth login` (or set HF_TOKEN) for a private repo",
            **context,
        ) from err
    except RevisionNotFoundError as err:
        raise HubRevisionNotFoundError(
            f"no branch, tag or commit named {revision!r}",
            hint="pin a branch, a tag or a full 40-hex commit id", **context,
        ) from err
    except RemoteEntryNotFoundError as err:
        raise HubFileNotFoundError(f"the repo has no file {what} at this revision",
                                   **context) from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, httpx2.TransportError) as err:
        cache = cache_dir or constants.HF_HUB_CACHE
        if filename is None:  # an API call (creating, listing, committing): no cache can help
            raise HubConnectionError(
                f"cannot reach the Hub at {endpoint or constants.ENDPOINT}: {err}",
                hint="this needs the network: check the connection, HF_ENDPOINT and that "
                     "HF_HUB_OFFLINE is not set", **context,
            ) from err
        if constants.is_offline_mode():
            raise HubConnectionError(
                f"offline mode is on (HF_HUB_OFFLINE=1) and {what} is not in the cache {cache}",
                hint="download it once online, or pass the cache_dir= used then",
                cli_hint="download it once online, or set HF_HUB_CACHE to the cache folder used then", **context,
            ) from err
        raise HubConnectionError(
            f"cannot reach the Hub at {endpoint or constants.ENDPOINT} and {what} is not in "
            f"the cache {cache}", hint=OFFLINE_HINT, cli_hint=OFFLINE_CLI_HINT, **context,
        ) from err
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            raise HubPermissionError(
                f"the Hub refused access (HTTP {status}): {err}",
                hint="pass token= with the needed rights, or log in with `hf auth login`",
                cli_hint="log in with `hf auth login` (or set HF_TOKEN; push takes --token) with the needed rights",
                **context,
            ) from err
        if status == 412:
            raise HubError("the branch moved while pushing (another commit landed first)",
                           hint="push again", **context) from err
        raise HubError(f"the Hub answered HTTP {status}: {err}", **context) from err


@dataclass(frozen=True)
class HubBank:
    """A bank loaded from the Hub and where it came from."""

    bank: MemoryBank
    repo_id: str
    config: str
    commit: str
    path: Path
    entry: BankEntry


def _download(
    repo_id: str, filename: str, revision: str | None, *, config: str | None,
    cache_dir: str | os.PathLike | None, token: str | bool | None, endpoint: str | None,
    force: bool = False, size: int | None = None,
) -> Path:
    """The cached path of `filename`, downloaded when needed. An endpoint that refuses or does not
    answer within HF_HUB_ETAG_TIMEOUT seconds is asked once (no retries): the file then comes
    from the cache, or HubConnectionError. `size`: the byte size the card records (a file the
    Hub serves with another size is refused before it is downloaded)."""
    options = {"repo_type": "dataset", "revision": revision, "cache_dir": cache_dir, "token": token,
               "endpoint": endpoint}
    with hub_errors(repo_id, revision, config, filename, endpoint, cache_dir):
        if constants.is_offline_mode():
            return Path(hf_hub_download(repo_id, filename, **options))
        served = _probe(repo_id, filename, revision, token, endpoint)
        if served is None:
            if force:
                raise HubConnectionError(f"cannot reach the Hub at {endpoint or constants.ENDPOINT} to "
                                         f"download {filename!r} again", repo_id, revision or "main", config)
            return Path(hf_hub_download(repo_id, filename, local_files_only=True, **options))
        if size is not None and served.size is not None and served.size != size:
            raise HubChecksumError(f"the Hub serves {filename} with {served.size} bytes, the card records "
                                   f"{size}", repo_id, revision or "main", config)
        return Path(hf_hub_download(repo_id, filename, force_download=force,
                                    etag_timeout=constants.HF_HUB_ETAG_TIMEOUT, **options))


def _probe(repo_id: str, filename: str, revision: str | None, token: str | bool | None,
           endpoint: str | None) -> Any:
    """The file's metadata from one HEAD request of at most HF_HUB_ETAG_TIMEOUT seconds, or None
    when the endpoint cannot be reached or does not answer in time (HTTP errors are raised)."""
    url = hf_hub_url(repo_id, filename, repo_type="dataset", revision=revision, endpoint=endpoint)
    try:
        return get_hf_file_metadata(url, token=token, timeout=constants.HF_HUB_ETAG_TIMEOUT, endpoint=endpoint)
    except httpx2.TransportError:
        return None


def read_repo_manifest(
    repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None, endpoint: str | None = None,
) -> tuple[str, list[BankEntry]]:
    """(commit id, bank entries) of the card at `revision` (downloaded through the cache)."""
    commit, text = read_repo_card(repo_id, revision, cache_dir, token, endpoint)
    try:
        return commit, read_manifest(text)
    except ValueError as err:
        raise HubCardError(f"README.md is not a compressdata card: {err}", repo_id,
                           revision or "main") from err


def read_repo_card(
    repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None, endpoint: str | None = None,
) -> tuple[str, str]:
    """(commit id, text) of the README.md card at `revision` (downloaded through the cache)."""
    check_revision(revision, repo_id)
    try:
        card = _download(repo_id, CARD_NAME, revision, config=None, cache_dir=cache_dir,
                         token=token, endpoint=endpoint)
    except HubFileNotFoundError as err:
        raise HubFileNotFoundError(
            "the repo has no README.md dataset card, so it holds no compressdata bank",
            repo_id, revision or "main",
            hint="publish banks with bank.push_to_hub() or `compressdata push`",
        ) from err
    # the cache stores files under snapshots/<commit id>/<path> (huggingface_hub's layout)
    commit = card.parent.name
    if not (COMMIT_ID.fullmatch(commit) and card.parent.parent.name == "snapshots"):
        commit = revision or "main"
    try:
        return commit, card.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise HubCardError(f"README.md is not a compressdata card: {err}", repo_id,
                           revision or "main") from err


def choose_config(entries: list[BankEntry], config: str | None, repo_id: str,
                  revision: str | None) -> BankEntry:
    """The entry of `config`; with config=None, the only one (several -> HubConfigError)."""
    names = [e.config for e in entries]
    where = {"repo_id": repo_id, "revision": revision or "main"}
    if not entries:
        raise HubCardError("the card lists no bank", **where)
    if config is None:
        if len(entries) == 1:
            return entries[0]
        raise HubConfigError(
            f"the repo holds {len(names)} configs ({', '.join(names)})", hint="name one with config=",
            cli_hint=f"name one with --config (e.g. --config {names[0]})", **where,
        )
    for entry in entries:
        if entry.config == config:
            return entry
    raise HubConfigError(f"no config {config!r}; available: {', '.join(names)}",
                         config=config, **where)


def _check(path: Path, entry: BankEntry) -> tuple[MemoryBank | None, str | None]:
    """(bank, None) when the file matches the card's checksums, else (None, problem)."""
    if path.stat().st_size != entry.size:
        return None, f"downloaded {entry.path} has {path.stat().st_size} bytes, the card records {entry.size}"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry.sha256:
        return None, (f"downloaded {entry.path} has sha256 {digest}, the card records "
                      f"{entry.sha256}")
    try:
        bank = MemoryBank.from_file(path)
    except BankFormatError as err:
        return None, f"downloaded {entry.path} is not a valid bank: {err.problem}"
    if bank.checksum() != entry.checksum:
        return None, (f"downloaded {entry.path} has content checksum {bank.checksum()}, the "
                      f"card records {entry.checksum}")
    return bank, None


def fetch_hub_bank(
    repo_id: str,
    config: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
) -> HubBank:
    """Download (or take from the cache), verify and load a bank; see `load_hub_bank`."""
    repo_id = parse_hub_id(repo_id)
    check_revision(revision, repo_id)
    if config is not None:
        check_config_name(config)
    commit, entries = read_repo_manifest(repo_id, revision, cache_dir, token, endpoint)
    entry = choose_config(entries, config, repo_id, revision)
    options = {"config": entry.config, "cache_dir": cache_dir, "token": token,
               "endpoint": endpoint, "size": entry.size}
    try:
        path = _download(repo_id, entry.path, commit, **options)
    except HubFileNotFoundError as err:
        raise HubFileNotFoundError(
            f"the card lists {entry.path} but the repo has no such file at commit {commit}",
            repo_id, revision or "main", entry.config,
        ) from err
    bank, problem = _check(path, entry)
    if problem is not None and not constants.is_offline_mode():
        # a corrupted cache entry heals with a fresh download; a bad file on the Hub does not
        with contextlib.suppress(HubError, ValueError):  # e.g. the Hub is unreachable now
            path = _download(repo_id, entry.path, commit, force=True, **options)
            bank, problem = _check(path, entry)
    if problem is not None or bank is None:
        raise HubChecksumError(
            f"{problem} (commit {commit})", repo_id, revision or "main", entry.config,
            hint="the file does not match the card committed with it: it was corrupted or "
                 "modified outside compressdata; pin an earlier revision or publish it again",
        )
    return HubBank(bank, repo_id, entry.config, commit, path, entry)


def load_hub_bank(
    repo_id: str,
    config: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
) -> MemoryBank:
    """Load config `config` of Hub dataset repo `repo_id` at `revision` (branch, tag or full
    commit id; default main) through the huggingface_hub cache, verified against the card.

    With one config in the repo, `config` may be omitted. `endpoint` defaults to HF_ENDPOINT.
    Raises a `HubError` subclass naming repo, revision and config on every failure.
    """
    return fetch_hub_bank(repo_id, config, revision, cache_dir, token, endpoint).bank
