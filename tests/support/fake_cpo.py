"""A fake CPO chargingprofiles receiver on a real local HTTP server, with faults, for delivery tests.

It behaves like a CPO platform in front of OCPP chargers: a PUT replaces the session's profile (the same profile
PUT again, recognised by its response_url, is the same TxProfile: not a second application), and it counts
every receipt and every application per command, so tests can prove "none lost, none applied twice".

Faults are scripted per call with `script` (a list consumed one call at a time) or set for every call with `mode`:
    "ok", "error" (HTTP 500), "timeout" (answers after `slow_s`), "garbage" (200 with HTML), "bad_request" (HTTP 400),
    or any ChargingProfileResponseType ("REJECTED", "TOO_OFTEN", "NOT_SUPPORTED", "UNKNOWN_SESSION").
`stop()` / `start()` simulate the platform going down and coming back on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

PROFILES_PATH = "/ocpi/2.2.1/chargingprofiles/"


class FakeCpo:
    def __init__(self) -> None:
        self.mode = "ok"
        self.script: list[str] = []
        self.slow_s = 1.0
        self.apply_delay_s = 0.0  # every call: applied at once, answered this much later (a slow platform)
        self.receipts: Counter[str] = Counter()  # response_url -> PUTs received
        self.applied: Counter[str] = Counter()  # response_url -> times a charger applied it
        self.active: dict[str, str] = {}  # session id -> response_url of the active profile
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}{PROFILES_PATH}"

    def _next_mode(self) -> str:
        with self._lock:
            return self.script.pop(0) if self.script else self.mode

    def _handle_put(self, session_id: str, body: dict[str, Any]) -> tuple[int, bytes, str]:
        mode = self._next_mode()
        response_url = str(body.get("response_url", ""))
        with self._lock:
            self.receipts[response_url] += 1
        if mode == "error":
            return 500, b"internal error", "text/plain"
        if mode == "garbage":
            return 200, b"<html>maintenance</html>", "text/html"
        if mode == "bad_request":
            return 400, json.dumps({"status_code": 2001, "timestamp": "2026-01-01T00:00:00Z"}).encode(), \
                "application/json"
        result = "ACCEPTED" if mode in ("ok", "timeout") else mode
        if result == "ACCEPTED":
            with self._lock:
                if self.active.get(session_id) != response_url:
                    self.active[session_id] = response_url
                    self.applied[response_url] += 1
        if mode == "timeout":
            time.sleep(self.slow_s)  # applied, but the answer comes too late: the sender is in doubt
        elif self.apply_delay_s:
            time.sleep(self.apply_delay_s)
        payload = {"data": {"result": result, "timeout": 30}, "status_code": 1000, "timestamp": "2026-01-01T00:00:00Z"}
        return 200, json.dumps(payload).encode(), "application/json"

    def start(self) -> FakeCpo:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_PUT(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                session_id = unquote(path.removeprefix(PROFILES_PATH))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                status, payload, content_type = fake._handle_put(session_id, body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        """The platform goes down: connections are refused until start() (same port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeCpo:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
