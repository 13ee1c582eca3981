"""The test Hub server driven by the real huggingface_hub client, on its own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import pytest
from hubserver import OTHER_TOKEN, USER, USER_TOKEN, HubServer, git_object_id, tree_id
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

pytest_plugins = ["hub_fixtures"]

REPO = f"{USER}/toy"
HEX40 = re.compile(r"[0-9a-f]{40}")


def api_for(server: HubServer, token: str | bool = USER_TOKEN) -> HfApi:
    return HfApi(endpoint=server.url, token=token)


def make_repo(server: HubServer, repo_id: str = REPO, **kwargs: object) -> HfApi:
    api = api_for(server)
    api.create_repo(repo_id, repo_type="dataset", **kwargs)
    return api


def download(server: HubServer, cache: Path, filename: str, **kwargs: object) -> bytes:
    kwargs.setdefault("repo_id", REPO)
    path = hf_hub_download(
        filename=filename, repo_type="dataset", endpoint=server.url, cache_dir=cache, **kwargs
    )
    return Path(path).read_bytes()


def test_create_repo_and_recreate_conflict(hub_server: HubServer) -> None:
    api = api_for(hub_server)
    url = api.create_repo(REPO, repo_type="dataset")
    assert url.repo_id == REPO and url.repo_type == "dataset"
    assert url == f"{hub_server.url}/datasets/{REPO}"
    assert api.list_repo_files(REPO, repo_type="dataset") == [".gitattributes"]
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo(REPO, repo_type="dataset")
    assert info.value.response.status_code == 409
    again = api.create_repo(REPO, repo_type="dataset", exist_ok=True)
    assert again == url
    # a model repo of the same name is a different repo
    assert api.create_repo(REPO).repo_type == "model"


def test_upload_file_then_download(hub_server: HubServer, hub_cache: Path) -> None:
    api = make_repo(hub_server)
    data = os.urandom(70_000)
    info = api.upload_file(
        path_or_fileobj=data, path_in_repo="dir/blob.bin", repo_id=REPO, repo_type="dataset"
    )
    assert HEX40.fullmatch(info.oid)
    assert api.repo_info(REPO, repo_type="dataset").sha == info.oid
    assert download(hub_server, hub_cache, "dir/blob.bin") == data
    # the cache layout is keyed by the commit id the server reported
    snapshot = hub_cache / f"datasets--{USER}--toy" / "snapshots" / info.oid / "dir" / "blob.bin"
    assert snapshot.read_bytes() == data
    assert (hub_cache / f"datasets--{USER}--toy" / "refs" / "main").read_text() == info.oid


def test_upload_folder_snapshot_and_tree(
    hub_server: HubServer, hub_cache: Path, tmp_path: Path
) -> None:
    api = make_repo(hub_server)
    folder = tmp_path / "folder"
    files = {"README.md": b"---\nlicense: mit\n---\nhi\n", "a/x.txt": b"x", "a/b/y.bin": b"\0y"}
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    info = api.upload_folder(folder_path=folder, repo_id=REPO, repo_type="dataset")
    assert HEX40.fullmatch(info.oid)
    assert api.list_repo_files(REPO, repo_type="dataset") == sorted([".gitattributes", *files])
    top = {e.path: type(e).__name__ for e in api.list_repo_tree(REPO, repo_type="dataset")}
    assert top == {".gitattributes": "RepoFile", "README.md": "RepoFile", "a": "RepoFolder"}
    inner = [e.path for e in api.list_repo_tree(REPO, "a", repo_type="dataset", recursive=True)]
    assert inner == ["a/b", "a/b/y.bin", "a/x.txt"]
    local = Path(
        snapshot_download(REPO, repo_type="dataset", endpoint=hub_server.url, cache_dir=hub_cache)
    )
    assert local.name == info.oid
    for rel, data in files.items():
        assert (local / rel).read_bytes() == data


def test_tree_ids_match_git(hub_server: HubServer, tmp_path: Path) -> None:
    """Blob and tree ids are the ones git itself computes for the same files."""
    files = {"a.txt": b"alpha\n", "d/b.txt": b"beta\n", "d/e/c.bin": b"\x00\x01", "d.txt": b"d"}
    work = tmp_path / "gitrepo"
    for rel, data in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
    git = ["git", "-C", str(work)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    expected = subprocess.run(
        [*git, "write-tree"], check=True, capture_output=True, text=True
    ).stdout.strip()
    blob_ids = {rel: git_object_id("blob", data) for rel, data in files.items()}
    assert tree_id(blob_ids) == expected
    hashed = subprocess.run(
        [*git, "hash-object", "a.txt"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert blob_ids["a.txt"] == hashed


def test_history_branches_tags_and_pinned_commits(
    hub_server: HubServer, hub_cache: Path
) -> None:
    api = make_repo(hub_server)
    first = api.create_commit(
        REPO,
        [CommitOperationAdd("f.txt", b"v1"), CommitOperationAdd("g.txt", b"g")],
        commit_message="first",
        repo_type="dataset",
    )
    api.create_tag(REPO, tag="v1.0", repo_type="dataset")
    api.create_branch(REPO, branch="dev", repo_type="dataset")
    second = api.create_commit(
        REPO,
        [CommitOperationAdd("f.txt", b"v2"), CommitOperationDelete("g.txt")],
        commit_message="second",
        commit_description="changes f, drops g",
        repo_type="dataset",
        parent_commit=first.oid,
    )
    assert first.oid != second.oid
    commits = api.list_repo_commits(REPO, repo_type="dataset")
    assert [c.commit_id for c in commits[:2]] == [second.oid, first.oid]
    assert [c.title for c in commits] == ["second", "first", "initial commit"]
    assert commits[0].message == "second\n\nchanges f, drops g" and commits[0].authors == [USER]
    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": second.oid,
                                                                "dev": first.oid}
    assert {t.name: t.target_commit for t in refs.tags} == {"v1.0": first.oid}
    assert download(hub_server, hub_cache, "f.txt") == b"v2"
    for pinned in ("v1.0", "dev", first.oid):
        assert download(hub_server, hub_cache, "f.txt", revision=pinned) == b"v1"
    assert download(hub_server, hub_cache, "g.txt", revision=first.oid) == b"g"
    with pytest.raises(EntryNotFoundError):
        download(hub_server, hub_cache, "g.txt")
    assert api.list_repo_files(REPO, repo_type="dataset", revision="v1.0") == [
        ".gitattributes", "f.txt", "g.txt"]
    # a commit on the branch moves only that branch
    api.upload_file(path_or_fileobj=b"dev", path_in_repo="f.txt", repo_id=REPO,
                    repo_type="dataset", revision="dev")
    assert download(hub_server, hub_cache, "f.txt", revision="dev") == b"dev"
    assert download(hub_server, hub_cache, "f.txt", revision="main") == b"v2"
    # a stale parent commit is refused
    with pytest.raises(HfHubHTTPError) as info:
        api.create_commit(REPO, [CommitOperationAdd("h.txt", b"h")], commit_message="stale",
                          repo_type="dataset", parent_commit=first.oid)
    assert info.value.response.status_code == 412


def test_unchanged_upload_makes_no_commit(hub_server: HubServer) -> None:
    """The preupload oid is git's blob id, so the client skips files that did not change."""
    api = make_repo(hub_server)
    first = api.upload_file(path_or_fileobj=b"same", path_in_repo="s.txt", repo_id=REPO,
                            repo_type="dataset")
    again = api.upload_file(path_or_fileobj=b"same", path_in_repo="s.txt", repo_id=REPO,
                            repo_type="dataset")
    assert again.oid == first.oid
    assert len(api.list_repo_commits(REPO, repo_type="dataset")) == 2


def test_error_codes(hub_server: HubServer, hub_cache: Path) -> None:
    api = make_repo(hub_server)
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        download(hub_server, hub_cache, "x.txt", repo_id=f"{USER}/missing")
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(f"{USER}/missing", repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):  # the model repo of that name does not exist
        api.repo_info(REPO)
    with pytest.raises(RevisionNotFoundError):
        download(hub_server, hub_cache, "x.txt", revision="nope")
    with pytest.raises(RevisionNotFoundError):
        download(hub_server, hub_cache, "x.txt", revision="0" * 40)
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(REPO, repo_type="dataset", revision="nope")
    with pytest.raises(EntryNotFoundError):
        download(hub_server, hub_cache, "absent.txt")
    with pytest.raises(HfHubHTTPError) as info:
        api.create_tag(REPO, tag="t", repo_type="dataset")
        api.create_tag(REPO, tag="t", repo_type="dataset")
    assert info.value.response.status_code == 409
    api.create_tag(REPO, tag="t", repo_type="dataset", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as info:
        api.create_branch(REPO, branch="main", repo_type="dataset")
    assert info.value.response.status_code == 409
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=b"---\nlicense: mit\nno end\n", path_in_repo="README.md",
                        repo_id=REPO, repo_type="dataset")


def test_write_permissions_and_private_repos(hub_server: HubServer, hub_cache: Path) -> None:
    with pytest.raises(HfHubHTTPError) as info:
        api_for(hub_server, token=False).create_repo(REPO, repo_type="dataset")
    assert info.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as info:
        api_for(hub_server, token=OTHER_TOKEN).create_repo(REPO, repo_type="dataset")
    assert info.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as info:
        api_for(hub_server, token="hf_wrong").create_repo(REPO, repo_type="dataset")
    assert info.value.response.status_code == 401
    api = make_repo(hub_server, private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=REPO,
                    repo_type="dataset")
    assert api.repo_info(REPO, repo_type="dataset").private is True
    assert download(hub_server, hub_cache, "s.txt", token=USER_TOKEN) == b"secret"
    for token in (False, OTHER_TOKEN):
        with pytest.raises(RepositoryNotFoundError):
            api_for(hub_server, token=token).repo_info(REPO, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        download(hub_server, hub_cache / "other", "s.txt", token=OTHER_TOKEN)
    with pytest.raises(HfHubHTTPError) as info:
        api_for(hub_server, token=OTHER_TOKEN).upload_file(
            path_or_fileobj=b"x", path_in_repo="x", repo_id=REPO, repo_type="dataset")
    assert info.value.response.status_code == 404


def test_offline_mode_serves_the_cache_without_requests(
    hub_server: HubServer, hub_cache: Path
) -> None:
    api = make_repo(hub_server)
    info = api.upload_file(path_or_fileobj=b"cached", path_in_repo="c.txt", repo_id=REPO,
                           repo_type="dataset")
    assert download(hub_server, hub_cache, "c.txt") == b"cached"
    snapshot_download(REPO, repo_type="dataset", endpoint=hub_server.url, cache_dir=hub_cache)
    seen = len(hub_server.requests)
    script = textwrap.dedent(
        f"""
        import json, sys
        from huggingface_hub import constants, hf_hub_download, snapshot_download
        assert constants.HF_HUB_OFFLINE and constants.ENDPOINT == {hub_server.url!r}
        out = {{}}
        for rev in ("main", {info.oid!r}):
            p = hf_hub_download({REPO!r}, "c.txt", repo_type="dataset", revision=rev,
                                cache_dir={str(hub_cache)!r})
            out[rev] = open(p).read()
        out["snapshot"] = snapshot_download({REPO!r}, repo_type="dataset",
                                            cache_dir={str(hub_cache)!r})
        try:
            hf_hub_download({REPO!r}, "nope.txt", repo_type="dataset",
                            cache_dir={str(hub_cache)!r})
        except Exception as err:
            out["missing"] = type(err).__name__
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": hub_server.url}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, check=True)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["main"] == out[info.oid] == "cached"
    assert Path(out["snapshot"]).name == info.oid
    assert out["missing"] == "LocalEntryNotFoundError"
    assert len(hub_server.requests) == seen  # offline mode made no request at all


def test_offline_constant_patched_in_process(
    hub_server: HubServer, hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make_repo(hub_server)
    api.upload_file(path_or_fileobj=b"c", path_in_repo="c.txt", repo_id=REPO, repo_type="dataset")
    assert download(hub_server, hub_cache, "c.txt") == b"c"
    seen = len(hub_server.requests)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert huggingface_hub.constants.is_offline_mode()
    assert download(hub_server, hub_cache, "c.txt") == b"c"
    assert len(hub_server.requests) == seen


def test_unreachable_server_falls_back_to_cache(hub_server: HubServer, hub_cache: Path) -> None:
    api = make_repo(hub_server)
    api.upload_file(path_or_fileobj=b"c", path_in_repo="c.txt", repo_id=REPO, repo_type="dataset")
    assert download(hub_server, hub_cache, "c.txt") == b"c"
    url = hub_server.url
    hub_server.stop()
    path = hf_hub_download(REPO, "c.txt", repo_type="dataset", endpoint=url, cache_dir=hub_cache)
    assert Path(path).read_bytes() == b"c"


def test_corrupt_file_keeps_id_and_changes_bytes(hub_server: HubServer, hub_cache: Path) -> None:
    api = make_repo(hub_server)
    info = api.upload_file(path_or_fileobj=b"good", path_in_repo="f", repo_id=REPO,
                           repo_type="dataset")
    hub_server.corrupt_file(REPO, "f", b"evil")
    assert api.repo_info(REPO, repo_type="dataset").sha == info.oid
    assert download(hub_server, hub_cache, "f") == b"evil"
    entries = {e.path: e.blob_id for e in api.list_repo_tree(REPO, repo_type="dataset")}
    assert entries["f"] == git_object_id("blob", b"good")


def test_request_log_and_json_routes(hub_server: HubServer) -> None:
    make_repo(hub_server)
    assert ("POST", "/api/repos/create") in hub_server.requests
    who = api_for(hub_server).whoami()
    assert who["name"] == USER
    assert json.loads(json.dumps(who))  # plain JSON
