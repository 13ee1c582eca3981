"""A Hugging Face Hub-compatible HTTP server for tests (standard library only).

It answers the endpoints the real ``huggingface_hub`` client calls to create repos, commit files
(``preupload`` answers ``uploadMode: "regular"``, so no LFS or Xet is involved), list trees, refs and
commits, create branches and tags, and download files through ``/resolve/``. Repos live in memory
with git-like history: blobs, trees and commits are hashed exactly like git objects, so commit ids
are real 40-hex ids and branches, tags and full commit ids all resolve.

Auth follows the Hub: writes need a bearer token whose user owns the namespace; private repos answer
401 ``RepoNotFound`` to anyone else. ``HubServer.requests`` records every request (method, path) so
tests can assert that a code path made no network call, and ``corrupt_file`` alters a stored blob
in place (the file's id and ETag stay the same) to simulate a tampered or bit-rotten download.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# the users a test server usually knows: bearer token -> user name
USER, USER_TOKEN = "alice", "hf_alice_token"
OTHER, OTHER_TOKEN = "bob", "hf_bob_token"
TEST_TOKENS = {USER_TOKEN: USER, OTHER_TOKEN: OTHER}

GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.tar filter=lfs diff=lfs merge=lfs -text\n"
)


class HubHTTPError(Exception):
    """An error answered as JSON with the Hub's ``X-Error-Code`` header."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.body = body


def git_object_id(kind: str, payload: bytes) -> str:
    """The git object id (sha1 of ``"<kind> <size>\\0" + payload``)."""
    return hashlib.sha1(f"{kind} {len(payload)}".encode() + b"\0" + payload).hexdigest()


def tree_id(files: dict[str, str]) -> str:
    """The git tree id of ``{relative path: blob id}``, built level by level like git does."""
    entries: dict[str, tuple[str, str]] = {}
    subdirs: dict[str, dict[str, str]] = defaultdict(dict)
    for path, oid in files.items():
        head, sep, rest = path.partition("/")
        if sep:
            subdirs[head][rest] = oid
        else:
            entries[head] = ("100644", oid)
    for name, sub in subdirs.items():
        entries[name] = ("40000", tree_id(sub))
    # git orders entries by name, comparing a directory as "name/"
    order = sorted(entries, key=lambda n: (n + "/" if entries[n][0] == "40000" else n).encode())
    payload = b"".join(
        f"{entries[n][0]} {n}".encode() + b"\0" + bytes.fromhex(entries[n][1]) for n in order
    )
    return git_object_id("tree", payload)


def iso_date(timestamp: float) -> str:
    """The Hub's date format, e.g. ``2024-05-01T12:00:00.000Z``."""
    millis = int(timestamp * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{millis:03d}Z"


@dataclass
class Commit:
    """One commit: a full snapshot ``{path: blob id}`` plus its parents and message."""

    oid: str
    files: dict[str, str]
    parents: tuple[str, ...]
    title: str
    message: str
    date: str
    author: str


@dataclass
class Repo:
    """A repository: its blobs, commits, branches and tags."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    blobs: dict[str, bytes] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        """A branch, a tag or a full 40-hex commit id -> the commit (404 RevisionNotFound)."""
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and revision in self.commits:
            oid = revision
        if oid is None:
            raise HubHTTPError(
                404, f"Invalid rev id: {revision} in {self.repo_id}", "RevisionNotFound"
            )
        return self.commits[oid]

    def commit(
        self,
        branch: str,
        files: dict[str, str],
        title: str,
        description: str,
        author: str,
        parents: tuple[str, ...],
    ) -> Commit:
        """Record a commit with git's object format and move ``branch`` to it."""
        now = time.time()
        message = title + (f"\n\n{description}" if description else "")
        stamp = f"{author} <{author}@users.noreply.huggingface.co> {int(now)} +0000"
        lines = [f"tree {tree_id(files)}", *(f"parent {p}" for p in parents)]
        lines += [f"author {stamp}", f"committer {stamp}", "", message + "\n"]
        oid = git_object_id("commit", "\n".join(lines).encode())
        self.commits[oid] = Commit(oid, dict(files), parents, title, message, iso_date(now), author)
        self.branches[branch] = oid
        return self.commits[oid]


class HubState:
    """Every repo of one server, behind one lock."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self.connections: set[socket.socket] = set()


class HubServer:
    """A Hub-compatible server on 127.0.0.1 (port chosen by the OS); a context manager.

    ``tokens`` maps a bearer token to its user name; writes need one of them.
    """

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.state = HubState(dict(tokens or {}))
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint to give ``huggingface_hub`` (``endpoint=`` or ``HF_ENDPOINT``)."""
        if self._httpd is None:
            raise RuntimeError("HubServer is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request received so far."""
        return self.state.requests

    def start(self) -> HubServer:
        """Bind a free port and serve in a daemon thread."""
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.hub = self.state  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the port and every open keep-alive connection, so that later
        requests fail to connect as with an unreachable Hub."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            for conn in list(self.state.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            assert self._thread is not None
            self._thread.join()
        self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def corrupt_file(
        self,
        repo_id: str,
        path: str,
        data: bytes,
        *,
        revision: str = "main",
        repo_type: str = "dataset",
    ) -> None:
        """Replace the stored bytes of ``path`` at ``revision`` without a commit (same id, ETag)."""
        with self.state.lock:
            repo = self.state.repos[(repo_type, repo_id)]
            repo.blobs[repo.resolve(revision).files[path]] = data


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubserver/1"

    # ------------------------------------------------------------------ plumbing

    @property
    def hub(self) -> HubState:
        return self.server.hub  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        self.hub.connections.add(self.connection)

    def finish(self) -> None:
        self.hub.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Silence the default stderr access log."""

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self) -> dict:
        try:
            body = json.loads(self._read_body() or b"{}")
        except json.JSONDecodeError as err:
            raise HubHTTPError(400, f"Invalid JSON body: {err}") from err
        if not isinstance(body, dict):
            raise HubHTTPError(400, "Expected a JSON object body")
        return body

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload: object, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.hub.requests.append((method, split.path))
        self.query = parse_qs(split.query)
        # split before unquoting: a quoted "/" (%2F) stays inside its segment
        segments = [unquote(s) for s in split.path.strip("/").split("/")]
        try:
            if method in ("POST", "DELETE") and segments[:1] != ["api"]:
                raise HubHTTPError(405, f"{method} not allowed on {split.path}")
            with self.hub.lock:
                if segments[:1] == ["api"]:
                    self._api(method, segments[1:])
                else:
                    self._resolve(segments)
        except HubHTTPError as err:
            headers = dict(err.headers)
            headers["X-Error-Message"] = err.message
            if err.code:
                headers["X-Error-Code"] = err.code
            body = json.dumps(err.body or {"error": err.message}).encode()
            self._send(err.status, body, "application/json", headers)

    # ------------------------------------------------------------------ auth and lookup

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.hub.tokens:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return self.hub.tokens[token]

    def _require_writer(self, namespace: str) -> str:
        user = self._user()
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to write to the Hub")
        if user != namespace:
            raise HubHTTPError(403, f"You don't have the rights to write to {namespace}")
        return user

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is not None and repo.private and self._user() != repo_id.split("/")[0]:
            repo = None
        if repo is None:
            status = 401 if self.headers.get("Authorization") is None else 404
            raise HubHTTPError(status, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def _repo_url(self, repo: Repo) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    # ------------------------------------------------------------------ routes

    def _api(self, method: str, seg: list[str]) -> None:
        route = (method, tuple(seg[:2]))
        if route == ("POST", ("repos", "create")):
            return self._create_repo(self._json_body())
        if route == ("DELETE", ("repos", "delete")):
            return self._delete_repo(self._json_body())
        if (method, seg) == ("POST", ["validate-yaml"]):
            return self._validate_yaml(self._json_body())
        if (method, seg) == ("GET", ["whoami-v2"]):
            user = self._user()
            if user is None:
                raise HubHTTPError(401, "Invalid username or password.")
            return self._send_json({"type": "user", "name": user, "orgs": []})
        if len(seg) < 3 or seg[0] not in REPO_TYPES:
            raise HubHTTPError(404, f"Unknown API route: /api/{'/'.join(seg)}")
        repo_type, repo_id, rest = REPO_TYPES[seg[0]], f"{seg[1]}/{seg[2]}", seg[3:]
        repo = self._repo(repo_type, repo_id)
        action = rest[0] if rest else "info"
        handlers = {
            ("GET", "info"): self._info,
            ("GET", "revision"): self._info,
            ("GET", "tree"): self._tree,
            ("GET", "refs"): self._refs,
            ("GET", "commits"): self._commits,
            ("POST", "preupload"): self._preupload,
            ("POST", "commit"): self._commit,
            ("POST", "branch"): self._create_branch,
            ("DELETE", "branch"): self._delete_branch,
            ("POST", "tag"): self._create_tag,
            ("DELETE", "tag"): self._delete_tag,
        }
        handler = handlers.get((method, action))
        if handler is None:
            raise HubHTTPError(404, f"Unknown API route: {method} /api/{'/'.join(seg)}")
        handler(repo, rest[1:])

    def _create_repo(self, body: dict) -> None:
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubHTTPError(400, f"Invalid repo type {repo_type!r}")
        name = body.get("name")
        if not isinstance(name, str) or not name or "/" in name:
            raise HubHTTPError(400, f"Invalid repo name {name!r}")
        namespace = body.get("organization") or self._user()
        if namespace is None:
            raise HubHTTPError(401, "You must be authenticated to create a repo")
        user = self._require_writer(namespace)
        repo_id = f"{namespace}/{name}"
        existing = self.hub.repos.get((repo_type, repo_id))
        if existing is not None:
            raise HubHTTPError(
                409,
                f"You already created this {repo_type} repo",
                body={"error": f"You already created this {repo_type} repo",
                      "url": self._repo_url(existing)},
            )
        private = body.get("visibility") == "private" or bool(body.get("private"))
        repo = Repo(repo_type, repo_id, private, iso_date(time.time()))
        oid = git_object_id("blob", GITATTRIBUTES)
        repo.blobs[oid] = GITATTRIBUTES
        repo.commit("main", {".gitattributes": oid}, "initial commit", "", user, ())
        self.hub.repos[(repo_type, repo_id)] = repo
        self._send_json({"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _delete_repo(self, body: dict) -> None:
        repo_type = body.get("type") or "model"
        namespace = body.get("organization") or self._user() or ""
        repo_id = f"{namespace}/{body.get('name')}"
        self._repo(repo_type, repo_id)
        self._require_writer(namespace)
        del self.hub.repos[(repo_type, repo_id)]
        self._send_json({})

    def _validate_yaml(self, body: dict) -> None:
        content = body.get("content", "")
        errors = []
        if content.startswith("---"):
            head = content.split("\n", 1)[1] if "\n" in content else ""
            if "\n---" not in "\n" + head:
                errors.append({"message": "YAML front matter is not closed by a '---' line"})
            elif any(line.startswith("\t") for line in head.split("\n---")[0].splitlines()):
                errors.append({"message": "YAML front matter must not be indented with tabs"})
        self._send_json({"errors": errors, "warnings": []}, 400 if errors else 200)

    def _info(self, repo: Repo, rest: list[str]) -> None:
        commit = repo.resolve("/".join(rest) if rest else "main")
        namespace = repo.repo_id.split("/")[0]
        self._send_json(
            {
                "_id": commit.oid[:24],
                "id": repo.repo_id,
                "author": namespace,
                "sha": commit.oid,
                "createdAt": repo.created_at,
                "lastModified": commit.date,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": [
                    {"rfilename": p, "size": len(repo.blobs[o]), "blobId": o}
                    for p, o in sorted(commit.files.items())
                ],
            }
        )

    def _tree(self, repo: Repo, rest: list[str]) -> None:
        if not rest:
            raise HubHTTPError(400, "Missing revision in tree route")
        commit = repo.resolve(rest[0])
        prefix = "/".join(rest[1:]).strip("/")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        base = prefix + "/" if prefix else ""
        below = {p[len(base):]: o for p, o in commit.files.items() if p.startswith(base)}
        if prefix and not below:
            raise HubHTTPError(
                404, f"{prefix} does not exist at {rest[0]}", "EntryNotFound",
                {"X-Repo-Commit": commit.oid},
            )
        entries = []
        folders: dict[str, dict[str, str]] = defaultdict(dict)
        for rel, oid in below.items():
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                folders["/".join(parts[:depth])]["/".join(parts[depth:])] = oid
            if recursive or len(parts) == 1:
                size = len(repo.blobs[oid])
                entries.append({"type": "file", "oid": oid, "size": size, "path": base + rel})
        for rel, files in folders.items():
            if recursive or "/" not in rel:
                entries.append(
                    {"type": "directory", "oid": tree_id(files), "size": 0, "path": base + rel}
                )
        self._send_json(sorted(entries, key=lambda e: e["path"]))

    def _refs(self, repo: Repo, rest: list[str]) -> None:
        def refs(kind: str, table: dict[str, str]) -> list[dict]:
            return [
                {"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": o}
                for n, o in sorted(table.items())
            ]

        self._send_json(
            {
                "branches": refs("heads", repo.branches),
                "tags": refs("tags", repo.tags),
                "converts": [],
                "pullRequests": [],
            }
        )

    def _commits(self, repo: Repo, rest: list[str]) -> None:
        commit: Commit | None = repo.resolve("/".join(rest) if rest else "main")
        history = []
        while commit is not None:
            history.append(
                {
                    "id": commit.oid,
                    "title": commit.title,
                    "message": commit.message,
                    "date": commit.date,
                    "authors": [{"user": commit.author}],
                }
            )
            commit = repo.commits[commit.parents[0]] if commit.parents else None
        self._send_json(history)

    def _preupload(self, repo: Repo, rest: list[str]) -> None:
        self._require_writer(repo.repo_id.split("/")[0])
        commit = repo.resolve("/".join(rest))
        files = self._json_body().get("files", [])
        self._send_json(
            {
                "files": [
                    {
                        "path": f["path"],
                        "uploadMode": "regular",
                        "shouldIgnore": False,
                        "oid": commit.files.get(f["path"]),
                    }
                    for f in files
                ],
                "commitOid": commit.oid,
            }
        )

    def _commit(self, repo: Repo, rest: list[str]) -> None:
        user = self._require_writer(repo.repo_id.split("/")[0])
        if "create_pr" in self.query:
            raise HubHTTPError(400, "Pull requests are not supported by this test server")
        branch = "/".join(rest)
        if branch not in repo.branches:
            raise HubHTTPError(
                404, f"Invalid rev id: {branch} is not a branch of {repo.repo_id}",
                "RevisionNotFound",
            )
        head = repo.commits[repo.branches[branch]]
        files = dict(head.files)
        header: dict = {}
        for line in self._read_body().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                data = base64.b64decode(value["content"])
                oid = git_object_id("blob", data)
                repo.blobs.setdefault(oid, data)
                files[value["path"]] = oid
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubHTTPError(
                        404, f"A file with this name doesn't exist: {value['path']}",
                        "EntryNotFound",
                    )
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: o for p, o in files.items() if not p.startswith(folder)}
            else:
                raise HubHTTPError(400, f"Unsupported commit operation {key!r} (regular only)")
        parent = header.get("parentCommit")
        if parent is not None and not head.oid.startswith(parent):
            raise HubHTTPError(412, f"Parent commit {parent} is not the head of {branch}")
        commit = repo.commit(
            branch, files, header.get("summary") or "Update", header.get("description") or "",
            user, (head.oid,),
        )
        self._send_json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    def _create_branch(self, repo: Repo, rest: list[str]) -> None:
        self._require_writer(repo.repo_id.split("/")[0])
        branch = "/".join(rest)
        start = repo.resolve(self._json_body().get("startingPoint") or "main")
        if branch in repo.branches:
            raise HubHTTPError(409, f"Reference already exists: refs/heads/{branch}")
        repo.branches[branch] = start.oid
        self._send_json({})

    def _delete_branch(self, repo: Repo, rest: list[str]) -> None:
        self._require_writer(repo.repo_id.split("/")[0])
        branch = "/".join(rest)
        if branch == "main":
            raise HubHTTPError(403, "Cannot delete the default branch")
        if repo.branches.pop(branch, None) is None:
            raise HubHTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        self._send_json({})

    def _create_tag(self, repo: Repo, rest: list[str]) -> None:
        self._require_writer(repo.repo_id.split("/")[0])
        target = repo.resolve("/".join(rest))
        tag = self._json_body().get("tag")
        if not isinstance(tag, str) or not tag:
            raise HubHTTPError(400, "Missing tag name")
        if tag in repo.tags:
            raise HubHTTPError(409, f"Tag already exists: refs/tags/{tag}")
        repo.tags[tag] = target.oid
        self._send_json({})

    def _delete_tag(self, repo: Repo, rest: list[str]) -> None:
        self._require_writer(repo.repo_id.split("/")[0])
        if repo.tags.pop("/".join(rest), None) is None:
            raise HubHTTPError(404, f"Invalid rev id: {'/'.join(rest)}", "RevisionNotFound")
        self._send_json({})

    def _resolve(self, seg: list[str]) -> None:
        repo_type = "model"
        if seg and seg[0] in ("datasets", "spaces"):
            repo_type, seg = REPO_TYPES[seg[0]], seg[1:]
        if len(seg) < 5 or seg[2] != "resolve":
            raise HubHTTPError(404, f"Not found: {self.path}")
        repo = self._repo(repo_type, f"{seg[0]}/{seg[1]}")
        commit = repo.resolve(seg[3])
        path = "/".join(seg[4:])
        if path not in commit.files:
            raise HubHTTPError(
                404, f"Entry not found: {path} at {seg[3]}", "EntryNotFound",
                {"X-Repo-Commit": commit.oid},
            )
        oid = commit.files[path]
        data = repo.blobs[oid]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{oid}"', "Accept-Ranges": "bytes"}
        status, ranged = 200, self.headers.get("Range", "")
        if ranged.startswith("bytes="):
            first, _, last = ranged[len("bytes="):].partition("-")
            start = int(first or 0)
            stop = int(last) + 1 if last else len(data)
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
            status, data = 206, data[start:stop]
        self._send(status, data, "application/octet-stream", headers)
