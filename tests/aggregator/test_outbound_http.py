"""common.http's transport (http.client, one keep-alive connection per thread and host) against a real local server:
connections are reused, a connection the server closed while idle is replaced without losing the request, and the
answer is the httpx.Response the adapters read."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from common.exceptions import AdapterError
from common.http import http_request
from tests.support.stub_server import serving


class _Peer(BaseHTTPRequestHandler):
    """Echoes each request as JSON. "/close" answers with Connection: close; "/drop" answers and then closes the
    connection without saying so (what a server does to a keep-alive connection it times out)."""

    protocol_version = "HTTP/1.1"
    connections: set[tuple[str, int]] = set()  # client (host, port): one per TCP connection
    requests: list[dict[str, Any]] = []
    dropped = threading.Event()

    def _answer(self) -> None:
        type(self).connections.add(self.client_address)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        seen = {"method": self.command, "path": parts.path, "query": parse_qs(parts.query),
                "headers": {name.lower(): value for name, value in self.headers.items()}, "body": body.decode()}
        type(self).requests.append(seen)
        payload = json.dumps(seen).encode()
        status = int(parts.path.strip("/")) if parts.path.strip("/").isdigit() else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if parts.path == "/close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        if parts.path == "/drop":
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            type(self).dropped.set()

    do_GET = do_PUT = do_POST = do_DELETE = _answer  # noqa: N815 - http.server's naming

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def peer() -> Iterator[str]:
    _Peer.connections, _Peer.requests, _Peer.dropped = set(), [], threading.Event()
    with serving(_Peer) as base_url:
        yield base_url


def test_calls_from_one_thread_share_one_keep_alive_connection(peer):
    for _ in range(3):
        http_request("PUT", f"{peer}/cp/SES1", json={"a": 1})
    assert len(_Peer.requests) == 3
    assert len(_Peer.connections) == 1


def test_a_connection_the_server_closed_while_idle_is_replaced(peer):
    http_request("POST", f"{peer}/drop", json={"n": 1})  # the server closes this connection after answering
    assert _Peer.dropped.wait(10)
    answer = http_request("POST", f"{peer}/cp/SES1", json={"n": 2})
    assert answer.json()["body"] == '{"n":2}'
    assert [json.loads(seen["body"])["n"] for seen in _Peer.requests] == [1, 2]  # each sent once
    assert len(_Peer.connections) == 2


def test_connection_close_is_honoured(peer):
    http_request("GET", f"{peer}/close")
    http_request("GET", f"{peer}/cp")
    assert len(_Peer.connections) == 2


def test_the_request_as_sent(peer):
    answer = http_request("PUT", f"{peer}/cp/SES%201?fixed=1", json={"limit": 7.5, "name": "é"},
                          params={"response_url": "http://us/r?x=1&y=2"}, headers={"X-Request-ID": "r-1"})
    seen = answer.json()
    assert seen["method"] == "PUT"
    assert seen["path"] == "/cp/SES%201"
    assert seen["query"] == {"fixed": ["1"], "response_url": ["http://us/r?x=1&y=2"]}
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["headers"]["x-request-id"] == "r-1"
    assert seen["headers"]["user-agent"].startswith("flexmarket/")
    assert json.loads(seen["body"]) == {"limit": 7.5, "name": "é"}


def test_the_answer_is_an_httpx_response(peer):
    answer = http_request("GET", f"{peer}/cp", params={"a": "b c"})
    assert isinstance(answer, httpx.Response)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["method"] == "GET"
    assert answer.text.startswith("{")
    assert str(answer.url) == f"{peer}/cp?a=b+c"
    answer.raise_for_status()


@pytest.mark.parametrize(("status", "permanent"), [(400, True), (404, True), (408, False), (429, False),
                                                   (500, False), (503, False)])
def test_refusals_are_adapter_errors_classified_by_status(peer, status, permanent):
    with pytest.raises(AdapterError) as caught:
        http_request("POST", f"{peer}/{status}", json={})
    assert caught.value.permanent is permanent
    assert caught.value.status_code == status
    # The connection stays usable after an error answer.
    http_request("GET", f"{peer}/cp")
    assert len(_Peer.connections) == 1


def test_a_url_that_is_not_http_is_a_transient_adapter_error():
    with pytest.raises(AdapterError) as caught:
        http_request("GET", "ftp://127.0.0.1/file")
    assert caught.value.permanent is False
