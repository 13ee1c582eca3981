"""A hostile or broken Hub: revisions that would escape the cache, an endpoint that never answers,
files of another size than the card records, and dataset cards built from hostile names."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml
from hubserver import USER, USER_TOKEN, HubServer
from huggingface_hub import constants

from compressdata import MemoryBank, load_memory_bank
from compressdata.hub import HubChecksumError, HubConnectionError, HubRevisionError, load_hub_bank, push_to_hub
from compressdata.hub.card import BankEntry, entry_for, read_manifest, render_card, split_front_matter

pytest_plugins = ["hub_fixtures"]

REPO = f"{USER}/hostile"
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, so any request fails to connect


@pytest.mark.parametrize("revision", ["main/../../../../x", "..", "/etc", "a\\b", "main branch", "x\x1b[2J",
                                      "refs/heads/", "v1..v2", "-rf", ""])
def test_revision_is_refused_before_any_request(revision: str, hub_cache: Path) -> None:
    with pytest.raises(HubRevisionError, match="is not a branch, tag or commit name"):
        load_hub_bank(REPO, revision=revision, endpoint=CLOSED, cache_dir=hub_cache)
    with pytest.raises(HubRevisionError):
        push_to_hub(MemoryBank(pixels=torch.zeros(2, 1, 2, 2), labels=[0, 1], classes=["a", "b"]), REPO,
                    revision=revision, endpoint=CLOSED, token=USER_TOKEN)
    assert not any(hub_cache.iterdir()), "nothing may be written to the cache"


def test_git_ref_names_and_commit_ids_are_accepted(hub_server: HubServer, hub_cache: Path,
                                                   pixel_bank: Callable[..., MemoryBank]) -> None:
    bank = pixel_bank(1)
    commit = push_to_hub(bank, REPO, token=USER_TOKEN, endpoint=hub_server.url, revision="release/v1.0").oid
    for revision in ("release/v1.0", commit):
        loaded = load_hub_bank(REPO, revision=revision, endpoint=hub_server.url, cache_dir=hub_cache)
        assert loaded.checksum() == bank.checksum()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_silent_endpoint_is_given_up_after_the_etag_timeout(
    silent_endpoint: str, hub_server: HubServer, hub_cache: Path, pixel_bank: Callable[..., MemoryBank],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, an empty cache waited 6 x 60 s (huggingface_hub's retries) on such an endpoint."""
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
    started = time.monotonic()
    with pytest.raises(HubConnectionError, match=f"cannot reach the Hub at {silent_endpoint}"):
        load_hub_bank(REPO, endpoint=silent_endpoint, cache_dir=hub_cache)
    assert time.monotonic() - started < 30  # one 1 s probe of the card; 395 s before
    bank = pixel_bank(1)  # with the bank in the cache, the silent endpoint costs one probe per file
    push_to_hub(bank, REPO, token=USER_TOKEN, endpoint=hub_server.url)
    load_hub_bank(REPO, endpoint=hub_server.url, cache_dir=hub_cache)
    started = time.monotonic()
    assert load_hub_bank(REPO, endpoint=silent_endpoint, cache_dir=hub_cache).checksum() == bank.checksum()
    assert time.monotonic() - started < 30


def test_a_file_of_another_size_is_refused_before_it_is_downloaded(
    hub_server: HubServer, hub_cache: Path, pixel_bank: Callable[..., MemoryBank]
) -> None:
    push_to_hub(pixel_bank(1), REPO, token=USER_TOKEN, endpoint=hub_server.url)
    hub_server.corrupt_file(REPO, "default/bank.safetensors", b"\0" * 50_000_000)
    with pytest.raises(HubChecksumError, match="serves default/bank.safetensors with 50000000 bytes, the card "
                                               "records"):
        load_hub_bank(REPO, endpoint=hub_server.url, cache_dir=hub_cache)
    assert not [p for p in hub_cache.rglob("*") if p.is_file() and p.stat().st_size >= 50_000_000]


HOSTILE = ["<script>alert(1)</script>", "a|b|c", "# Heading", "**bold** [link](http://x)", "two\nlines",
           "\x1b[31mred", "&amp;", "`code`", "~~x~~ $x$"]


def test_the_card_body_escapes_class_and_source_names() -> None:
    bank = MemoryBank(pixels=torch.rand(len(HOSTILE), 1, 2, 2), labels=torch.arange(len(HOSTILE)),
                      classes=HOSTILE,
                      provenance={"source": {"dataset": "<img src=x onerror=alert(1)>|# x"},
                                  "note": "```\n# not a heading\n```"})
    entry = entry_for(bank, "default", b"x" * 100, len(bank))
    card = render_card(f"{USER}/hostile", [(entry, bank)])
    meta, body = split_front_matter(card)
    assert meta["source_datasets"] == ["<img src=x onerror=alert(1)>|# x"]  # YAML keeps the name exactly
    assert read_manifest(card)[0] == entry
    fence = next(line for line in body.splitlines() if line.endswith("json") and line.startswith("`"))
    opening = body.index(fence)
    closing = body.index("\n" + fence[: -len("json")] + "\n", opening)
    code, prose = body[opening:closing], body[:opening] + body[closing:]
    assert "not a heading" in code  # the provenance's backticks cannot close its code block
    assert "<script>" not in prose and "<img" not in prose and "\x1b" not in prose
    heading = [line for line in prose.splitlines() if line.startswith("#")]
    assert all(line.startswith(("# ", "## ", "### ")) for line in heading)
    rows = [line for line in prose.splitlines() if line.startswith("| `default`")]
    assert rows and all(row.count("|") - row.count("\\|") == 10 for row in rows)  # 9 cells, none split by a name


def test_a_card_cannot_point_a_config_at_another_path() -> None:
    good = {"config": "default", "path": "default/bank.safetensors", "size": 100, "sha256": "0" * 64,
            "checksum": "0" * 64, "kind": "pixels", "examples": 1, "classes": 1, "ipc_equivalent": 1.0,
            "preview_examples": 1}
    assert BankEntry.from_dict(good).path == "default/bank.safetensors"
    for path in ("../../outside.safetensors", "other/bank.safetensors", "/etc/passwd"):
        with pytest.raises(ValueError, match="manifest field 'path'"):
            BankEntry.from_dict({**good, "path": path})
    card = "---\n" + yaml.safe_dump({"compressdata": {"format": "compressdata.hub-repo", "version": 1,
                                                      "banks": [{**good, "path": "../x"}]}}) + "---\n"
    with pytest.raises(ValueError, match="manifest field 'path'"):
        read_manifest(card)


def test_load_memory_bank_reports_a_bad_revision_on_one_line(hub_cache: Path, capsys) -> None:
    from compressdata.cli import main

    with pytest.raises(HubRevisionError):
        load_memory_bank(REPO, revision="../x", cache_dir=hub_cache)
    assert main(["pull", REPO, "--revision", "main/../../x", "--endpoint", CLOSED]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a branch, tag or commit name" in err
