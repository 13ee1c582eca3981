"""Typed errors of Hub publishing and loading; each names the repo, revision and config involved.

Every one is a `compressdata.errors.CompressdataError`; those that mean a missing thing, a network failure
or a refused write also subclass `FileNotFoundError`, `ConnectionError` or `PermissionError`, as
huggingface_hub's errors do."""

from __future__ import annotations

from compressdata.errors import CompressdataError

OFFLINE_HINT = (
    "if you are offline, load a bank downloaded before: set HF_HUB_OFFLINE=1 to use only the "
    "local huggingface_hub cache (pass the same cache_dir= as when it was downloaded)"
)
OFFLINE_CLI_HINT = (
    "if you are offline, load a bank downloaded before: set HF_HUB_OFFLINE=1 to use only the "
    "local huggingface_hub cache (and HF_HUB_CACHE to the cache folder used then, if it was another)"
)


class HubError(CompressdataError):
    """A Hub operation on a memory-bank repo failed."""

    def __init__(
        self,
        problem: str,
        repo_id: str | None = None,
        revision: str | None = None,
        config: str | None = None,
        hint: str | None = None,
        cli_hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.repo_id = repo_id
        self.revision = revision
        self.config = config
        where = repo_id or ""
        if repo_id and revision:
            where += f"@{revision}"
        if config:
            where += f" (config {config!r})"
        super().__init__(f"{where}: {problem}" if where else problem, hint=hint, cli_hint=cli_hint)


class HubRepoNotFoundError(HubError, FileNotFoundError):
    """The dataset repo does not exist, or it is private and the token cannot read it."""


class HubRevisionNotFoundError(HubError, FileNotFoundError):
    """The branch, tag or commit id does not exist in the repo."""


class HubConfigError(HubError, LookupError):
    """The config asked for is not in the repo, or several exist and none was named."""


class HubFileNotFoundError(HubError, FileNotFoundError):
    """A file the card promises (or the card itself) is missing at that revision."""


class HubCardError(HubError, ValueError):
    """The repo's README.md is not a readable compressdata card."""


class HubConnectionError(HubError, ConnectionError):
    """The Hub could not be reached and the file is not in the local cache."""


class HubChecksumError(HubError, ValueError):
    """A downloaded bank does not match the checksums its card records (corrupted or tampered)."""


class HubPermissionError(HubError, PermissionError):
    """The token cannot create or write to the repo."""


class HubRevisionError(HubError, ValueError):
    """The revision asked for is not a valid branch, tag or commit name (refused before any request)."""
