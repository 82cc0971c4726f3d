"""A threaded WSGI server in a background thread: the demo serves the portal, the API, our OCPI endpoints
and the sandbox CPO from one process, so the market day can talk to them over real HTTP."""

from __future__ import annotations

import threading

from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.db import connections


class QuietHandler(WSGIRequestHandler):
    # wsgiref writes headers and body in separate sends; with Nagle on, keep-alive clients wait out the
    # peer's delayed ACK (~40 ms) on every request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return  # the demo prints its own progress; access logs would drown it


class _ClosingHandler(WSGIHandler):
    """Close this thread's DB connections after each request (server threads are short-lived)."""

    def __call__(self, environ, start_response):  # type: ignore[no-untyped-def]
        try:
            return super().__call__(environ, start_response)
        finally:
            connections.close_all()


class BackgroundServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        self.httpd = ThreadedWSGIServer((host, port), QuietHandler, allow_reuse_address=True)
        self.httpd.daemon_threads = True
        self.httpd.set_app(_ClosingHandler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="demo-server", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> BackgroundServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
