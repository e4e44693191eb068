"""hf://datasets/... URIs: parsing, revisions, and reading through huggingface_hub's own
HfFileSystem against a local stand-in for the Hub (HF_ENDPOINT).

The stand-in serves the four Hub routes HfFileSystem calls to read a dataset (repo info at
a revision, the file tree, paths-info, and `resolve` with byte ranges), shaped as the
installed huggingface_hub parses them, with the Hub's X-Error-Code answers for a missing
repository, revision or path. It checks our side (URI <-> HfFileSystem paths, revisions,
listings turned back into URIs, named errors) with the real client library; it does not
stand for the live Hub: no Xet storage, CDN redirects, gated access, auth or rate limits
(README, "Reading from object stores")."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from shards import store

FIXTURES = Path(__file__).parent / "fixtures"
REPO = "gem-test/lerobot-fixture"
# revision -> the fixture the repository holds at it: main is LeRobot v3.0, the tag v2.1 the
# older layout, the PR ref a branch name with slashes of its own
REVISIONS = {"main": FIXTURES / "lerobot-v30", "v2.1": FIXTURES / "lerobot-v21", "refs/pr/1": FIXTURES / "lerobot-v21"}


class _Hub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, doc) -> None:
        self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    def _error(self, code: str) -> None:
        self._send(404, json.dumps({"error": code}).encode(), {"Content-Type": "application/json", "X-Error-Code": code})

    def _root(self, repo: str, rev: str) -> Path | None:
        if repo != REPO:
            self._error("RepoNotFound")
            return None
        if unquote(rev) not in REVISIONS:
            self._error("RevisionNotFound")
            return None
        return REVISIONS[unquote(rev)]

    @staticmethod
    def _entry(root: Path, p: Path) -> dict:
        rel = p.relative_to(root).as_posix()
        if p.is_dir():
            return {"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "path": rel}
        return {"type": "file", "oid": hashlib.sha1(p.read_bytes()).hexdigest(), "size": p.stat().st_size, "path": rel}

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/revision/([^/]+))?", url.path):
            if self._root(m[1], m[2] or "main"):
                self._json({"id": m[1], "sha": hashlib.sha1(unquote(m[2] or "main").encode()).hexdigest(), "private": False})
        elif m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(?:/([^/]+))?", url.path):
            if (root := self._root(m[1], m[2])) is None:
                return
            d = root / unquote(m[3] or "")
            if not d.is_dir():
                return self._error("EntryNotFound")
            recursive = parse_qs(url.query).get("recursive", ["False"])[0].lower() == "true"
            items = sorted(d.rglob("*") if recursive else d.iterdir())
            self._json([self._entry(root, p) for p in items])
        elif m := re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", url.path):
            if (root := self._root(m[1], m[2])) is None:
                return
            f = root / unquote(m[3])
            if not f.is_file():
                return self._error("EntryNotFound")
            data = f.read_bytes()
            if r := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")):
                a, b = int(r[1]), min(int(r[2]) + 1 if r[2] else len(data), len(data))
                if a >= len(data):
                    return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return self._send(206, data[a:b], {"Content-Range": f"bytes {a}-{b - 1}/{len(data)}", "Accept-Ranges": "bytes"})
            self._send(200, data, {"Accept-Ranges": "bytes"})
        else:
            self._error("RepoNotFound")

    def do_POST(self):
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/paths-info/([^/]+)", url.path):
            if (root := self._root(m[1], m[2])) is None:
                return
            paths = parse_qs(body).get("paths", [])
            self._json([self._entry(root, root / p) for p in paths if (root / p).exists()])
        else:
            self._error("RepoNotFound")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    old = os.environ.get("HF_ENDPOINT")
    os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield os.environ["HF_ENDPOINT"]
    server.shutdown()
    server.server_close()
    if old is None:
        os.environ.pop("HF_ENDPOINT", None)
    else:
        os.environ["HF_ENDPOINT"] = old


def _gem_data(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("gem-data")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def _episodes(input_uri: str) -> list[dict]:
    res = _gem_data("ls-episodes", "--source", "lerobot", "--input", input_uri, "--json")
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


# --- URIs (no server) --------------------------------------------------------------------


@pytest.mark.parametrize("uri, repo, revision, raw, path", [
    ("hf://datasets/lerobot/pusht", "lerobot/pusht", None, None, ""),
    ("hf://datasets/lerobot/pusht/", "lerobot/pusht", None, None, ""),
    ("hf://datasets/lerobot/pusht/meta/info.json", "lerobot/pusht", None, None, "meta/info.json"),
    ("hf://datasets/lerobot/pusht@v2.1/meta", "lerobot/pusht", "v2.1", "v2.1", "meta"),
    ("hf://datasets/lerobot/pusht@refs/pr/12/meta", "lerobot/pusht", "refs/pr/12", "refs/pr/12", "meta"),
    ("hf://datasets/lerobot/pusht@refs%2Fpr%2F12/meta", "lerobot/pusht", "refs/pr/12", "refs%2Fpr%2F12", "meta"),
    ("hf://datasets/org/name@my%2Fbranch/x", "org/name", "my/branch", "my%2Fbranch", "x"),
    ("hf://datasets/org/name@0123abcd", "org/name", "0123abcd", "0123abcd", ""),
])
def test_uri_parsing(uri, repo, revision, raw, path):
    hp = store.split_hf(uri)
    assert (hp.repo_id, hp.revision, hp.raw_revision, hp.path) == (repo, revision, raw, path)
    assert hp.uri() == uri.rstrip("/")  # a listing gives URIs back in the form they were asked in


@pytest.mark.parametrize("uri", [
    "hf://lerobot/pusht", "hf://models/org/name/x", "hf://datasets/lerobot", "hf://datasets/org/name@/x",
    "hf://datasets/org/name/a//b", "hf://datasets/org/name/../x",
])
def test_malformed_uris_are_named_errors(uri):
    with pytest.raises(store.StoreError, match=re.escape(uri) + ": not a Hugging Face dataset URI"):
        store.read_bytes(uri)


def test_offline_mode_is_a_named_error_not_a_traceback(tmp_path):
    uri = "hf://datasets/lerobot/pusht@v2.1"
    res = _gem_data("ls-episodes", "--source", "lerobot", "--input", uri, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert uri in res.stderr and "HF_HUB_OFFLINE" in res.stderr


def test_an_unreachable_endpoint_is_a_named_error(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    uri = "hf://datasets/lerobot/pusht/meta/info.json"
    with pytest.raises(store.StoreError, match=f"GET {re.escape(uri)}: .*(ConnectError|onnect)"):
        store.read_bytes(uri)


# --- through HfFileSystem, against the stand-in --------------------------------------------


def test_ls_episodes_reads_the_revision_asked_for(hub):
    base = f"hf://datasets/{REPO}"
    for rev, fixture in (("", "lerobot-v30"), ("@v2.1", "lerobot-v21"), ("@refs/pr/1", "lerobot-v21")):
        remote = _episodes(base + rev)
        local = _episodes(str(FIXTURES / fixture))
        assert len(remote) == 2
        assert [{k: v for k, v in e.items() if k != "file"} for e in remote] == [{k: v for k, v in e.items() if k != "file"} for e in local]
        assert all(e["file"].startswith(f"{base}{rev}/data/") for e in remote)


def test_frames_decode_from_the_hub_as_from_disk(hub):
    import numpy as np

    from pipelines.sources import get_reader

    reader = get_reader("lerobot")

    def first(uri):
        ep = next(iter(reader.read(reader.partitions(uri)[0])))
        return ep.cameras[ep.primary_camera].decode(5)

    assert np.array_equal(first(f"hf://datasets/{REPO}@v2.1"), first(str(FIXTURES / "lerobot-v21")))


def test_listing_and_ranged_reads(hub):
    base = f"hf://datasets/{REPO}@v2.1"
    local = FIXTURES / "lerobot-v21"
    assert store.list_files(f"{base}/meta") == sorted(f"{base}/meta/{p.name}" for p in (local / "meta").iterdir())
    assert store.list_files(f"{base}/nothing-here") == []
    mp4 = "videos/chunk-000/observation.images.front/episode_000000.mp4"
    data = (local / mp4).read_bytes()
    assert store.size(f"{base}/{mp4}") == len(data)
    assert store.read_bytes(f"{base}/{mp4}", 100, 900) == data[100:900]
    assert b"".join(store.iter_range(f"{base}/{mp4}", 7, len(data) + 50, piece=333)) == data[7:]
    assert store.exists(f"{base}/meta/info.json") and not store.exists(f"{base}/meta/none.json")


def test_missing_repository_revision_and_file_are_named(hub):
    for uri, says in (
        ("hf://datasets/gem-test/no-such-dataset/meta/info.json", "repository not found"),
        (f"hf://datasets/{REPO}@v9.9/meta/info.json", "revision not found"),
        (f"hf://datasets/{REPO}/meta/no-such.json", "no such file"),
    ):
        with pytest.raises(store.NotFound, match=f"GET {re.escape(uri)}: {says}"):
            store.read_bytes(uri)
    res = _gem_data("ls-episodes", "--source", "lerobot", "--input", "hf://datasets/gem-test/no-such-dataset")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "hf://datasets/gem-test/no-such-dataset" in res.stderr and "repository not found" in res.stderr
