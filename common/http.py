"""The one outbound HTTP client. Every call to another party goes through `http_request`.

It sets timeouts, a User-Agent, and turns transport failures into AdapterError with `permanent`
telling callers whether a retry can help: connection errors, timeouts, 5xx, 408 and 429 are
transient; any other 4xx is permanent (the same request will be refused again).
Tests fake other parties with a real local server, or patch this module's `http_request`.

The transport is the standard library's http.client with one keep-alive connection per thread and host, not an
httpx.Client: httpx spent 1.0-1.6 ms of CPU per call (bench.dispatch sends one call per charging profile, and the
workers share two cores with everything else), http.client about a fifth of that. What callers get back is still
an httpx.Response (status_code, headers, content, text, json()), built from the bytes read, so the adapters'
contract is unchanged. Like the httpx client before: no redirects followed, certificates verified against certifi's
bundle (httpx.create_ssl_context); unlike it, no proxy from the environment and no compressed responses asked for.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import select
import ssl
import threading
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from django.conf import settings

from common.exceptions import AdapterError

USER_AGENT = "flexmarket/0.1 (+https://github.com/flexmarket)"
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
# A reused connection that the server closed while it idled fails before any answer; only a method that may be
# repeated is then sent once more on a fresh connection (a POST is left to the caller's retry, which knows more).
IDEMPOTENT = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                           ConnectionAbortedError)

_local = threading.local()
_tls_lock = threading.Lock()
_tls: ssl.SSLContext | None = None

Key = tuple[str, str, int]


class Response(httpx.Response):
    """An httpx.Response whose `request` (an httpx.Request: URL parsing and header normalisation, about a third of
    the call's CPU) is only built when someone asks for it (raise_for_status, .url); the adapters never do."""

    def __init__(self, status: int, headers: list[tuple[str, str]], content: bytes, *, method: str, url: str,
                 params: dict[str, str] | None) -> None:
        super().__init__(status, headers=headers, content=content)
        self._request_args = (method, url, params)

    @property  # type: ignore[override]
    def request(self) -> httpx.Request:
        if self._request is None:
            method, url, params = self._request_args
            self._request = httpx.Request(method, url, params=params)
        return self._request

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request = value


def _tls_context() -> ssl.SSLContext:
    global _tls
    with _tls_lock:
        if _tls is None:
            _tls = httpx.create_ssl_context()  # what httpx.Client verified with (certifi's bundle)
        return _tls


def _connections() -> dict[Key, http.client.HTTPConnection]:
    """This thread's open connections by (scheme, host, port): one request at a time on each, so no lock."""
    pool: dict[Key, http.client.HTTPConnection] | None = getattr(_local, "connections", None)
    if pool is None:
        pool = _local.connections = {}
    return pool


def _idle_connection_closed(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive socket that is readable has been closed by the server (or sent junk): not reusable."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _connection(key: Key, connect_timeout_s: float) -> tuple[http.client.HTTPConnection, bool]:
    """(connection, reused): this thread's open connection to the host, or a new one connected now."""
    pool = _connections()
    conn = pool.get(key)
    if conn is not None:
        if not _idle_connection_closed(conn):
            return conn, True
        conn.close()
        del pool[key]
    scheme, host, port = key
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=connect_timeout_s, context=_tls_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=connect_timeout_s)
    conn.connect()
    pool[key] = conn
    return conn, False


def _drop(key: Key) -> None:
    conn = _connections().pop(key, None)
    if conn is not None:
        conn.close()


def _target(url: str, params: dict[str, str] | None) -> tuple[Key, str]:
    """((scheme, host, port), path with query) of a URL; params are appended to its query, form-encoded as httpx
    did (urlencode)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise AdapterError(f"{url!r} is not an http(s) URL", permanent=False)
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise AdapterError(f"{url!r} has an invalid port", permanent=False) from exc
    query = parts.query
    if params:
        query = f"{query}&{urlencode(params)}" if query else urlencode(params)
    path = (parts.path or "/") + (f"?{query}" if query else "")
    return (scheme, parts.hostname, port), path


def _exchange(method: str, key: Key, path: str, body: bytes | None, headers: dict[str, str],
              read_timeout_s: float, connect_timeout_s: float) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send one request over this thread's connection to the host; (status, headers, body)."""
    for attempt in (1, 2):
        conn, reused = _connection(key, connect_timeout_s)
        if conn.sock is not None:
            conn.sock.settimeout(read_timeout_s)  # per request: a changed setting applies to open connections too
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            content = response.read()
        except STALE_CONNECTION_ERRORS:
            _drop(key)
            if reused and attempt == 1 and method in IDEMPOTENT:
                continue
            raise
        except BaseException:
            _drop(key)  # half-read or timed out: the connection's state is unknown
            raise
        if response.will_close:
            _drop(key)
        return response.status, response.getheaders(), content
    raise AssertionError("unreachable")


def http_request(
    method: str,
    url: str,
    *,
    json: Any = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> httpx.Response:
    """Send one request and return the response; raise AdapterError for transport failures and HTTP >= 400."""
    # Timeouts are read per request, so a settings change applies to pooled connections too.
    read_timeout = timeout_s if timeout_s is not None else settings.HTTP_READ_TIMEOUT_S
    method = method.upper()
    key, path = _target(url, params)
    out = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    body: bytes | None = None
    if json is not None:
        # As httpx encoded it.
        body = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        out["Content-Type"] = "application/json"
    elif method in ("POST", "PUT", "PATCH"):
        body = b""  # Content-Length: 0, as servers expect on a body-carrying method
    out.update(headers or {})
    try:
        status, response_headers, content = _exchange(method, key, path, body, out, read_timeout,
                                                      settings.HTTP_CONNECT_TIMEOUT_S)
    except TimeoutError as exc:  # socket.timeout is TimeoutError: connect or read
        raise AdapterError(f"{method} {url} timed out: {exc}", permanent=False) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise AdapterError(f"{method} {url} failed: {exc!r}", permanent=False) from exc
    response = Response(status, response_headers, content, method=method, url=url, params=params)
    if status >= 400:
        permanent = status not in TRANSIENT_STATUS and status < 500
        raise AdapterError(
            f"{method} {url} answered HTTP {status}: {response.text[:300]}",
            permanent=permanent,
            status_code=status,
        )
    return response
