"""A loopback Hugging Face Hub: serves files the way ``hf_hub_download`` expects, records requests.

What huggingface_hub 2.x does for ``hf_hub_download(repo_id, filename, revision=...)``:

1. ``HEAD {endpoint}/{repo_id}/resolve/{revision}/{filename}`` (redirects followed only while they
   stay on the same origin). It needs ``X-Repo-Commit`` (the commit the revision points to), an
   ``ETag`` or ``X-Linked-Etag`` (names the blob in the cache) and ``Content-Length`` or
   ``X-Linked-Size``. Errors are told apart by ``X-Error-Code`` (``RepoNotFound``,
   ``RevisionNotFound``, ``EntryNotFound``); a bare 404 reads as "Hub down".
2. ``GET`` on the URL the HEAD ended on (for LFS files: the CDN ``Location``), with a ``Range``
   header when it resumes a broken download.

So this server has two origins, like the real Hub: the Hub itself, and a "CDN" on a second port
that LFS-style files redirect to. Both append a ``Request`` (method, path, origin, Range, headers)
to ``HubServer.requests``. ``HubServer.outage = 503`` makes it answer like a Hub that is down;
``HubServer.stop()`` makes it refuse connections like a host that is gone.

Usage::

    with serve_hub({("facebook/sam2.1-hiera-tiny", "main", "sam2.1_hiera_tiny.pt"): data}) as hub:
        hub.use(monkeypatch, tmp_path)   # HF_ENDPOINT + an isolated HF_HOME/cache
        ...
        assert ("GET", "/facebook/sam2.1-hiera-tiny/resolve/main/sam2.1_hiera_tiny.pt") in hub.requests
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RESOLVE = re.compile(r"^/(?P<repo>.+?)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")
_MODEL_API = re.compile(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)?)(?:/revision/(?P<revision>[^/]+))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

FileKey = tuple[str, str, str]  # (repo_id, revision, filename)


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str  # unquoted, without the query string
    origin: str  # "hub" or "cdn"
    range: str | None = None
    headers: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


class _Requests(list):
    """The request log; ``(method, path) in log`` works as well as matching ``Request`` objects."""

    def __contains__(self, item: object) -> bool:
        if isinstance(item, tuple):
            return any((request.method, request.path) == item for request in self)
        return super().__contains__(item)

    def paths(self, method: str | None = None) -> list[str]:
        """Paths of the logged requests, optionally only those with ``method``."""
        return [request.path for request in self if method is None or request.method == method]


def commit_for(repo_id: str, revision: str) -> str:
    """The commit hash the server reports for ``revision`` (itself if it already is a commit)."""
    if _COMMIT.match(revision):
        return revision
    return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()


@dataclass
class HubServer:
    """A running loopback Hub. ``files`` may be edited while it runs (tests add revisions)."""

    files: dict[FileKey, bytes]
    lfs: bool = False  # serve files through a redirect to the CDN origin, as the Hub does for LFS
    outage: int | None = None  # answer every request with this HTTP status (e.g. 503), as a Hub that is down
    requests: _Requests = field(default_factory=_Requests)
    endpoint: str = ""
    cdn_endpoint: str = ""
    _servers: list[ThreadingHTTPServer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _connections: set[socket.socket] = field(default_factory=set)

    # -- what the handler asks -------------------------------------------------------------
    def log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def repo_exists(self, repo_id: str) -> bool:
        return any(key[0] == repo_id for key in self.files)

    def resolve_revision(self, repo_id: str, revision: str) -> str | None:
        """The branch/tag/commit name under which ``files`` stores ``revision``, or None."""
        for repo, stored, _ in self.files:
            if repo == repo_id and revision in (stored, commit_for(repo, stored)):
                return stored
        return None

    def blob(self, sha256: str) -> bytes | None:
        for data in self.files.values():
            if hashlib.sha256(data).hexdigest() == sha256:
                return data
        return None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> HubServer:
        for origin in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self, origin))
            server.daemon_threads = True
            # A short poll keeps stop() quick: shutdown() waits for the loop to notice.
            loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
            loop.start()
            self._servers.append(server)
        self.endpoint = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn_endpoint = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def stop(self) -> None:
        """Shut both origins down; later requests get "connection refused", as from a dead host.

        Open keep-alive connections are cut too: httpx pools them, and a pooled connection would
        otherwise keep talking to a handler thread after the listening socket is gone.
        """
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by the client
                pass

    def use(self, monkeypatch, tmp_path: Path) -> Path:
        """Point huggingface_hub (and sam2_web.hub) at this server with a fresh cache under ``tmp_path``.

        huggingface_hub copies HF_ENDPOINT/HF_HOME/HF_HUB_CACHE/HF_HUB_OFFLINE into
        ``huggingface_hub.constants`` at import, so the environment alone is not enough for code
        in this process: the constants are patched too. ``ENDPOINT`` is left alone on purpose: the
        URL template was built from it at import, and ``hf_hub_url`` only swaps the prefix when an
        ``endpoint=`` is passed (sam2_web.hub passes the ``HF_ENDPOINT`` it reads at call time).

        Returns:
            The hub cache folder (``HF_HUB_CACHE``).
        """
        from huggingface_hub import constants

        home = tmp_path / "hf_home"
        cache = home / "hub"
        cache.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("HF_ENDPOINT", self.endpoint)
        monkeypatch.setenv("HF_HOME", str(home))
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HOME", str(home))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        # A token of the person running the tests has no business going to a test server.
        monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
        return cache


def _headers_for(repo_id: str, revision: str, data: bytes) -> dict[str, str]:
    sha256 = hashlib.sha256(data).hexdigest()
    return {"X-Repo-Commit": commit_for(repo_id, revision), "ETag": f'"{sha256}"', "Accept-Ranges": "bytes"}


def _handler_for(hub: HubServer, origin: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects from a real server

        def log_message(self, format, *args):  # keep test output clean
            return

        def setup(self) -> None:
            super().setup()
            hub.track(self.connection, True)

        def finish(self) -> None:
            hub.track(self.connection, False)
            super().finish()

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

        # -- routing ------------------------------------------------------------------------
        def _answer(self, send_body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.log(Request(self.command, path, origin, self.headers.get("Range"), dict(self.headers.items())))
            if hub.outage is not None:
                return self._error(hub.outage, None, "Service Unavailable", send_body)
            if origin == "cdn":
                blob = hub.blob(path.rsplit("/", 1)[-1])
                if blob is None:
                    return self._error(404, "EntryNotFound", "no such blob", send_body)
                return self._send_bytes(blob, {"ETag": f'"{hashlib.sha256(blob).hexdigest()}"'}, send_body)
            if match := _RESOLVE.match(path):
                return self._resolve(match["repo"], match["revision"], match["filename"], send_body)
            if match := _MODEL_API.match(path):
                return self._model_info(match["repo"], match["revision"] or "main", send_body)
            self._error(404, None, f"not a Hub route: {path}", send_body)

        def _resolve(self, repo_id: str, revision: str, filename: str, send_body: bool) -> None:
            if not hub.repo_exists(repo_id):
                return self._error(404, "RepoNotFound", "Repository not found", send_body)
            stored = hub.resolve_revision(repo_id, revision)
            if stored is None:
                return self._error(404, "RevisionNotFound", "Invalid rev id", send_body)
            data = hub.files.get((repo_id, stored, filename))
            commit = {"X-Repo-Commit": commit_for(repo_id, stored)}
            if data is None:
                return self._error(404, "EntryNotFound", "Entry not found", send_body, commit)
            headers = _headers_for(repo_id, stored, data)
            if hub.lfs:
                sha256 = hashlib.sha256(data).hexdigest()
                headers.update(
                    {
                        "Location": f"{hub.cdn_endpoint}/lfs/{sha256}",
                        "X-Linked-Etag": f'"{sha256}"',
                        "X-Linked-Size": str(len(data)),
                    }
                )
                return self._send_bytes(b"", headers, send_body, status=302)
            self._send_bytes(data, headers, send_body)

        def _model_info(self, repo_id: str, revision: str, send_body: bool) -> None:
            stored = hub.resolve_revision(repo_id, revision)
            if stored is None:
                code = "RevisionNotFound" if hub.repo_exists(repo_id) else "RepoNotFound"
                return self._error(404, code, "not found", send_body)
            siblings = [{"rfilename": name} for repo, rev, name in hub.files if (repo, rev) == (repo_id, stored)]
            body = json.dumps({"id": repo_id, "sha": commit_for(repo_id, stored), "siblings": siblings}).encode()
            self._send_bytes(body, {"Content-Type": "application/json"}, send_body)

        # -- writing ------------------------------------------------------------------------
        def _send_bytes(self, data: bytes, headers: Mapping[str, str], send_body: bool, status: int = 200) -> None:
            start, end = 0, len(data)
            wanted = self.headers.get("Range")
            if status == 200 and wanted and (match := re.match(r"bytes=(\d+)-(\d*)$", wanted)):
                start = int(match[1])
                end = int(match[2]) + 1 if match[2] else len(data)
                status = 206
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            if send_body:
                self.wfile.write(data[start:end])

        def _error(self, status: int, code: str | None, message: str, send_body: bool, extra=None) -> None:
            headers = {"X-Error-Message": message, "Content-Type": "text/plain", **(extra or {})}
            if code:
                headers["X-Error-Code"] = code
            self._send_bytes(message.encode(), headers, send_body, status=status)

    return Handler


@contextmanager
def serve_hub(files: Mapping[FileKey, bytes], *, lfs: bool = False) -> Iterator[HubServer]:
    """Run a loopback Hub serving ``files`` ({(repo_id, revision, filename): bytes}) until the block ends."""
    server = HubServer(files=dict(files), lfs=lfs).start()
    try:
        yield server
    finally:
        server.stop()
