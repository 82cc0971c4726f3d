"""A tiny real HTTP server for faking another party (a CPO, a DSO) in tests.

It listens on 127.0.0.1 on a free port in a daemon thread, answers each path with a canned response, and records
every request it receives (method, path, query, headers, body), so tests go through the real outbound client
(common.http) instead of patching it.

    with StubServer() as server:
        server.respond("/cp/SES1", json={"status_code": 1000, "data": {...}})
        ...  # call server.url("/cp/SES1")
        assert server.requests[0].headers["authorization"] == "Token ..."

or with the `stub_server` pytest fixture (see `stub_server_fixture`).
"""

from __future__ import annotations

import json as jsonlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass(frozen=True)
class CannedResponse:
    """What the stub answers on one path: status, body bytes, headers, and an optional delay before answering."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stub received it. Header names are lower-cased (HTTP header names are case-insensitive)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.body.decode("utf-8"))


NOT_CONFIGURED = CannedResponse(status=599, body=b"stub server: no response configured for this path")


class StubServer:
    """A local HTTP server with canned responses per path (exact match, query ignored) and a request log."""

    def __init__(self, *, default: CannedResponse = NOT_CONFIGURED) -> None:
        self._responses: dict[tuple[str | None, str], CannedResponse] = {}
        self._default = default
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- configuration ----------------------------------------------------------------------------

    def respond(
        self,
        path: str,
        *,
        status: int = 200,
        json: Any = None,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
        method: str | None = None,
    ) -> None:
        """Answer requests to `path` (any method unless `method` is given) with this response from now on.

        `json` is serialised with Content-Type application/json; `body` is sent as is (text/plain unless
        `headers` says otherwise).
        """
        all_headers = dict(headers or {})
        if json is not None:
            payload = jsonlib.dumps(json).encode("utf-8")
            all_headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            payload = body.encode("utf-8")
            all_headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            payload = body or b""
        canned = CannedResponse(status=status, body=payload, headers=all_headers, delay_s=delay_s)
        with self._lock:
            self._responses[(method.upper() if method else None, path)] = canned

    def _response_for(self, method: str, path: str) -> CannedResponse:
        with self._lock:
            return self._responses.get((method, path)) or self._responses.get((None, path)) or self._default

    # --- inspection -------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path == path]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("stub server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str = "") -> str:
        return self.base_url + path

    def start(self) -> StubServer:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                stub._record(RecordedRequest(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=body,
                ))
                canned = stub._response_for(self.command, parts.path)
                if canned.delay_s and stub._stopping.wait(canned.delay_s):
                    return  # shutting down: drop the slow answer
                try:
                    self.send_response(canned.status)
                    for name, value in canned.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(canned.body)))
                    self.end_headers()
                    self.wfile.write(canned.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (e.g. read timeout); nothing left to tell it

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval keeps stop() quick (shutdown waits for the serve loop's next poll).
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="stub-http-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture
def stub_server() -> Iterator[StubServer]:
    """A running StubServer, stopped after the test. Import it into a test module (or conftest) to use it."""
    with StubServer() as server:
        yield server


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering with `handler` (for a test that needs its own request handling,
    e.g. watching connections): yields its base URL, stopped afterwards."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
