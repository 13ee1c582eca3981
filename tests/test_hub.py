"""push_to_hub / load_hub_bank against the Hub-compatible test server and the real client."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
from hubserver import OTHER_TOKEN, USER, USER_TOKEN, HubServer
from huggingface_hub import HfApi
from PIL import Image

from compressdata import MemoryBank, load_memory_bank
from compressdata.hub import (
    HubCardError,
    HubChecksumError,
    HubConfigError,
    HubConnectionError,
    HubFileNotFoundError,
    HubPermissionError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    fetch_hub_bank,
    is_hub_id,
    load_hub_bank,
    push_to_hub,
)
from compressdata.hub.card import split_front_matter
from compressdata.hub.cli import add_hub_commands

pytest_plugins = ["hub_fixtures"]

REPO = f"{USER}/fmnist-mem"


def push(server: HubServer, bank: MemoryBank, **kwargs: object):
    kwargs.setdefault("token", USER_TOKEN)
    return push_to_hub(bank, kwargs.pop("repo_id", REPO), endpoint=server.url, **kwargs)


def load(server: HubServer, cache: Path, **kwargs: object) -> MemoryBank:
    return load_hub_bank(kwargs.pop("repo_id", REPO), endpoint=server.url, cache_dir=cache,
                         **kwargs)


def repo_files(server: HubServer, revision: str | None = None) -> list[str]:
    return HfApi(endpoint=server.url).list_repo_files(REPO, repo_type="dataset",
                                                      revision=revision)


def remote_bytes(server: HubServer, cache: Path, filename: str) -> bytes:
    path = huggingface_hub.hf_hub_download(REPO, filename, repo_type="dataset",
                                           endpoint=server.url, cache_dir=cache / "raw")
    return Path(path).read_bytes()


def same_bank(a: MemoryBank, b: MemoryBank) -> bool:
    return a.checksum() == b.checksum() and torch.equal(a.decode(), b.decode())


def test_is_hub_id_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for hub in ("user/name", "my-org/cifar10_mem.v2", "hf://user/name", "hf://datasets/u/n"):
        assert is_hub_id(hub), hub
    for local in ("bank.safetensors", "user/bank.safetensors", "./user/name", "../u/n",
                  "/abs/u", "~/u", "name", "a/b/c", "u\\n", "C:/x", "user/na--me",
                  "user/name.git", "user/..", "", Path("user/name")):
        assert not is_hub_id(local), local
    (tmp_path / "user" / "name").mkdir(parents=True)
    assert not is_hub_id("user/name")  # an existing path wins over the Hub id
    assert is_hub_id("hf://user/name")  # ... unless the Hub is asked for explicitly


def test_push_creates_repo_card_preview_and_shards(
    hub_server: HubServer, hub_cache: Path, pixel_bank: Callable[..., MemoryBank]
) -> None:
    bank = pixel_bank(3)
    info = push(hub_server, bank, license="mit")
    assert len(info.oid) == 40
    assert repo_files(hub_server) == [
        ".gitattributes", "README.md", "default/bank.safetensors", "default/data/train-00000-of-00001.parquet",
        "default/preview.png"]
    card = remote_bytes(hub_server, hub_cache, "README.md").decode()
    meta, body = split_front_matter(card)
    assert meta["license"] == "mit"
    assert "dataset-distillation" in meta["tags"]
    assert meta["task_categories"] == ["image-classification"]
    assert meta["source_datasets"] == ["zalando-datasets/fashion_mnist"]  # the Hub id of the source
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "default/data/train-*"}]}]
    (entry,) = meta["compressdata"]["banks"]
    assert entry["checksum"] == bank.checksum() and entry["examples"] == 30
    (result,) = bank.evaluations
    accuracy = f"{100 * result.mean:.2f} ± {100 * result.std:.2f} %"
    for text in ("T-shirt/top (3)", "Ankle boot (3)", "real images per class", accuracy,
                 "| lr | 0.01 |", '"real-subset"', "![preview of default", "pip install compressdata",
                 f'MemoryDataset("{REPO}")', "all 30 decoded examples"):
        assert text in body, text
    preview = Image.open(io.BytesIO(remote_bytes(hub_server, hub_cache, "default/preview.png")))
    assert preview.format == "PNG"
    assert preview.size[1] == 10 * (28 * 2 + 1) + 1  # one row per class
    loaded = load(hub_server, hub_cache)
    assert same_bank(loaded, bank)
    assert loaded.provenance == bank.provenance and loaded.classes == bank.classes


def test_the_card_licence_follows_the_hub_spec_and_a_later_push_keeps_the_cards_fields(
    hub_server: HubServer, hub_cache: Path, pixel_bank: Callable[..., MemoryBank]
) -> None:
    bank = pixel_bank(1)
    push(hub_server, bank)
    meta, body = split_front_matter(remote_bytes(hub_server, hub_cache, "README.md").decode())
    # no licence given: `other`, with the name and link the Hub's card spec asks for
    assert (meta["license"], meta["license_name"], meta["license_link"]) == (
        "other", "same-as-source-dataset", "https://huggingface.co/datasets/zalando-datasets/fashion_mnist")
    assert "its licence terms apply" in body
    # the publisher edits the card: a licence, a language, a tag of their own
    edited = {**meta, "license": "mit", "language": ["en"], "tags": [*meta["tags"], "fashion"]}
    del edited["license_name"], edited["license_link"]
    card = "---\n" + yaml.safe_dump(edited, sort_keys=False) + "---\n" + body
    HfApi(endpoint=hub_server.url, token=USER_TOKEN).upload_file(
        path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=REPO, repo_type="dataset")
    push(hub_server, pixel_bank(2), config="ipc2")  # a later push without a licence
    meta, _ = split_front_matter(remote_bytes(hub_server, hub_cache / "2", "README.md").decode())
    assert meta["license"] == "mit" and "license_name" not in meta
    assert meta["language"] == ["en"] and "fashion" in meta["tags"] and "dataset-distillation" in meta["tags"]
    assert [c["config_name"] for c in meta["configs"]] == ["default", "ipc2"]
    push(hub_server, bank, license="other", license_name="my-terms-1.0", license_link="LICENSE.md")
    meta, _ = split_front_matter(remote_bytes(hub_server, hub_cache / "3", "README.md").decode())
    assert (meta["license"], meta["license_name"], meta["license_link"]) == ("other", "my-terms-1.0", "LICENSE.md")
    before = len(hub_server.requests)
    with pytest.raises(ValueError, match="license 'other' needs license_name and license_link"):
        push(hub_server, bank, license="other")
    assert len(hub_server.requests) == before  # refused before any request


def test_update_keeps_history_and_pinned_revisions_load(
    hub_server: HubServer, hub_cache: Path, pixel_bank: Callable[..., MemoryBank]
) -> None:
    first, second, third = (pixel_bank(2, offset=k) for k in (0, 2, 4))
    v1 = push(hub_server, first, config="ipc2")
    HfApi(endpoint=hub_server.url, token=USER_TOKEN).create_tag(REPO, tag="v1",
                                                                repo_type="dataset")
    v2 = push(hub_server, second, config="ipc2", commit_message="better bank")
    assert v2.oid != v1.oid
    commits = HfApi(endpoint=hub_server.url).list_repo_commits(REPO, repo_type="dataset")
    assert [c.title for c in commits[:2]] == ["better bank", "Upload memory bank config 'ipc2'"]
    push(hub_server, third, config="ipc2", revision="dev")
    assert same_bank(load(hub_server, hub_cache), second)
    assert same_bank(load(hub_server, hub_cache, revision="main"), second)
    assert same_bank(load(hub_server, hub_cache, revision="v1"), first)
    assert same_bank(load(hub_server, hub_cache, revision=v1.oid), first)
    assert same_bank(load(hub_server, hub_cache, revision="dev"), third)
    fetched = fetch_hub_bank(REPO, revision="v1", endpoint=hub_server.url, cache_dir=hub_cache)
    assert fetched.commit == v1.oid and fetched.config == "ipc2"


def test_several_configs_and_stale_shards(
    hub_server: HubServer, hub_cache: Path, pixel_bank: Callable[..., MemoryBank],
    memory_bank: Callable[..., MemoryBank],
) -> None:
    big, small, mem = pixel_bank(60), pixel_bank(1), memory_bank(5)
    push(hub_server, big, config="ipc60", viewer_limit=500)
    assert "ipc60/data/preview-00000-of-00001.parquet" in repo_files(hub_server)  # 500 of 600: a preview
    push(hub_server, mem, config="ipc10")
    push(hub_server, small, config="ipc1")
    push(hub_server, small, config="ipc60")  # replaces ipc60: its preview file must go
    files = repo_files(hub_server)
    assert [f for f in files if f.startswith("ipc60/data/")] == ["ipc60/data/train-00000-of-00001.parquet"]
    meta, body = split_front_matter(remote_bytes(hub_server, hub_cache, "README.md").decode())
    assert [c["config_name"] for c in meta["configs"]] == ["ipc1", "ipc10", "ipc60"]
    assert "## Config `ipc10`" in body and 'config="ipc1"' in body
    assert same_bank(load(hub_server, hub_cache, config="ipc1"), small)
    assert same_bank(load(hub_server, hub_cache, config="ipc60"), small)
    assert same_bank(load(hub_server, hub_cache, config="ipc10"), mem)
    with pytest.raises(HubConfigError, match=r"3 configs \(ipc1, ipc10, ipc60\).*config="):
        load(hub_server, hub_cache)
    with pytest.raises(HubConfigError, match="no config 'ipc5'; available: ipc1, ipc10, ipc60"):
        load(hub_server, hub_cache, config="ipc5")
    with pytest.raises(ValueError, match="config name"):
        load(hub_server, hub_cache, config="../x")


def test_load_memory_bank_by_hub_id_offline_in_a_fresh_process(
    hub_server: HubServer, tmp_path: Path, memory_bank: Callable[..., MemoryBank]
) -> None:
    """The public one-call API by Hub id with HF_HUB_OFFLINE=1 and HF_ENDPOINT set as a user
    would (both are read at import): served from the cache alone, no request reaches the Hub."""
    bank = memory_bank(2)
    info = push(hub_server, bank)
    cache = tmp_path / "hf-home" / "hub"  # huggingface_hub's default cache under HF_HOME
    assert same_bank(load_hub_bank(REPO, endpoint=hub_server.url, cache_dir=cache), bank)
    script = textwrap.dedent(
        f"""
        import json
        from compressdata import load_memory_bank
        out = {{str(rev): load_memory_bank({REPO!r}, revision=rev).checksum()
               for rev in (None, {info.oid!r})}}
        try:
            load_memory_bank("{USER}/never-downloaded")
        except Exception as err:
            out["error"] = type(err).__name__ + ": " + str(err)
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "HF_ENDPOINT": hub_server.url, "HF_HOME": str(tmp_path / "hf-home"),
           "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    seen = len(hub_server.requests)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, check=True)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(hub_server.requests) == seen
    assert out["None"] == out[info.oid] == bank.checksum()
    assert out["error"].startswith("HubConnectionError")
    assert "HF_HUB_OFFLINE=1" in out["error"] and "not in the cache" in out["error"]


def test_offline_constant_in_process(
    hub_server: HubServer, hub_cache: Path, pixel_bank: Callable[..., MemoryBank],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bank = pixel_bank(1)
    push(hub_server, bank, config="ipc1")
    push(hub_server, bank, config="other")
    assert same_bank(load(hub_server, hub_cache, config="ipc1"), bank)
    seen = len(hub_server.requests)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert same_bank(load(hub_server, hub_cache, config="ipc1"), bank)
    with pytest.raises(HubConnectionError, match="offline mode is on.*other/bank.safetensors"):
        load(hub_server, hub_cache, config="other")
    with pytest.raises(HubConnectionError, match="this needs the network"):
        push(hub_server, bank, config="new")
    assert len(hub_server.requests) == seen


@pytest.mark.slow
def test_unreachable_hub_uses_cache_then_explains(
    hub_server: HubServer, hub_cache: Path, pixel_bank: Callable[..., MemoryBank]
) -> None:
    bank = pixel_bank(1)
    push(hub_server, bank)
    assert same_bank(load(hub_server, hub_cache), bank)
    url = hub_server.url
    hub_server.stop()
    assert same_bank(load_hub_bank(REPO, endpoint=url, cache_dir=hub_cache), bank)
    # nothing cached for this repo: one refused probe, no retries, then a clear error
    with pytest.raises(HubConnectionError) as info:
        load_hub_bank(f"{USER}/other", endpoint=url, cache_dir=hub_cache)
    message = str(info.value)
    assert f"cannot reach the Hub at {url}" in message and "HF_HUB_OFFLINE=1" in message
    assert f"{USER}/other@main" in message
    with pytest.raises(HubConnectionError, match=f"cannot reach the Hub at {url}"):
        push_to_hub(bank, REPO, token=USER_TOKEN, endpoint=url)


def test_error_paths(hub_server: HubServer, hub_cache: Path, pixel_bank: Callable[..., MemoryBank]) -> None:
    bank = pixel_bank(1)
    api = HfApi(endpoint=hub_server.url, token=USER_TOKEN)
    with pytest.raises(HubRepoNotFoundError, match=f"{USER}/missing@main: no such dataset repo"):
        load(hub_server, hub_cache, repo_id=f"{USER}/missing")
    push(hub_server, bank)
    with pytest.raises(HubRevisionNotFoundError, match=f"{REPO}@nope: no branch, tag or commit"):
        load(hub_server, hub_cache, revision="nope")
    with pytest.raises(HubRevisionNotFoundError):
        load(hub_server, hub_cache, revision="f" * 40)
    with pytest.raises(ValueError, match="not a Hub dataset repo id"):
        load_hub_bank("not-an-id", endpoint=hub_server.url)
    # a repo with no card, then with a card that is not ours
    api.create_repo(f"{USER}/plain", repo_type="dataset")
    with pytest.raises(HubFileNotFoundError, match="no README.md dataset card"):
        load(hub_server, hub_cache, repo_id=f"{USER}/plain")
    api.upload_file(path_or_fileobj=b"---\nlicense: mit\n---\n# Mine\n", path_in_repo="README.md",
                    repo_id=f"{USER}/plain", repo_type="dataset")
    with pytest.raises(HubCardError, match="not a compressdata card"):
        load(hub_server, hub_cache, repo_id=f"{USER}/plain")
    with pytest.raises(HubCardError, match="refusing to overwrite"):
        push(hub_server, bank, repo_id=f"{USER}/plain")
    # the card lists a bank file that was deleted behind compressdata's back
    api.delete_file("default/bank.safetensors", REPO, repo_type="dataset")
    with pytest.raises(HubFileNotFoundError, match="the card lists default/bank.safetensors"):
        load(hub_server, hub_cache / "fresh")


def test_permissions_and_private_repos(
    hub_server: HubServer, hub_cache: Path, pixel_bank: Callable[..., MemoryBank]
) -> None:
    bank = pixel_bank(1)
    with pytest.raises(HubPermissionError, match="HTTP 401"):
        push(hub_server, bank, token=False)
    with pytest.raises(HubPermissionError, match="HTTP 403"):
        push(hub_server, bank, token=OTHER_TOKEN)
    push(hub_server, bank, private=True)
    assert HfApi(endpoint=hub_server.url, token=USER_TOKEN).repo_info(
        REPO, repo_type="dataset").private
    for token in (False, OTHER_TOKEN):
        with pytest.raises(HubRepoNotFoundError, match="private"):
            load(hub_server, hub_cache / str(token), token=token)
    assert same_bank(load(hub_server, hub_cache, token=USER_TOKEN), bank)


def test_tampered_file_on_the_hub_is_detected(
    hub_server: HubServer, hub_cache: Path, pixel_bank: Callable[..., MemoryBank]
) -> None:
    bank = pixel_bank(2)
    push(hub_server, bank)
    good = remote_bytes(hub_server, hub_cache, "default/bank.safetensors")
    flipped = bytearray(good)
    flipped[-5] ^= 0x40  # one bit of one pixel value
    hub_server.corrupt_file(REPO, "default/bank.safetensors", bytes(flipped))
    with pytest.raises(HubChecksumError, match=r"has sha256 [0-9a-f]{64}, the card records"):
        load(hub_server, hub_cache / "a")
    # a different bank that is valid and self-consistent is still not the one the card names
    other = pixel_bank(2, offset=5)
    other.save(hub_cache / "other.safetensors")
    hub_server.corrupt_file(REPO, "default/bank.safetensors",
                            (hub_cache / "other.safetensors").read_bytes())
    with pytest.raises(HubChecksumError, match="corrupted or modified outside compressdata"):
        load(hub_server, hub_cache / "b")
    assert MemoryBank.from_file(hub_cache / "other.safetensors").checksum() == other.checksum()


def test_corrupted_cache_heals_by_downloading_again(
    hub_server: HubServer, hub_cache: Path, pixel_bank: Callable[..., MemoryBank]
) -> None:
    bank = pixel_bank(1)
    push(hub_server, bank)
    cached = fetch_hub_bank(REPO, endpoint=hub_server.url, cache_dir=hub_cache).path
    blob = cached.resolve()
    blob.write_bytes(blob.read_bytes()[:-3] + b"xyz")
    assert same_bank(load(hub_server, hub_cache), bank)  # re-downloaded and verified
    assert blob.read_bytes() == cached.read_bytes() and cached.stat().st_size > 0


def test_load_memory_bank_keeps_local_paths(
    tmp_path: Path, pixel_bank: Callable[..., MemoryBank], monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = pixel_bank(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user").mkdir()
    bank.save(tmp_path / "user" / "name")  # a file named like a Hub id
    assert same_bank(load_memory_bank("user/name"), bank)
    assert same_bank(load_memory_bank(Path("user/name")), bank)
    yaml.safe_dump({"ok": True})  # the card writer's YAML library is importable


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="compressdata")
    add_hub_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_push_and_pull(
    hub_server: HubServer, hub_cache: Path, pixel_bank: Callable[..., MemoryBank],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    bank = pixel_bank(1)
    bank.save(tmp_path / "bank.safetensors")
    url = hub_server.url
    assert run_cli(["push", str(tmp_path / "bank.safetensors"), REPO, "--config", "ipc1",
                    "--token", USER_TOKEN, "--endpoint", url, "--license", "mit"]) == 0
    head = HfApi(endpoint=url).repo_info(REPO, repo_type="dataset").sha
    assert f"commit {head}" in capsys.readouterr().out
    assert run_cli(["pull", REPO, "--endpoint", url, "--cache-dir", str(hub_cache)]) == 0
    out = capsys.readouterr().out
    assert f"{REPO} config ipc1 at commit {head}" in out
    assert f"checksum:      {bank.checksum()}" in out
    with pytest.raises(HubConfigError):
        run_cli(["pull", REPO, "--config", "ipc9", "--endpoint", url,
                 "--cache-dir", str(hub_cache)])
