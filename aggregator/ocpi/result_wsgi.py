"""A WSGI front for the one endpoint every dispatched command hits: POST {response_url}, the CPO's asynchronous
ChargingProfileResult. config.wsgi wraps the Django application with it.

The usual result (a registered CPO's token, its command awaiting a result, a known result type) is recorded with
delivery.charging_profile_result_record_fast, the same single UPDATE the Django view runs first, and answered here
with the headers the Django stack would send (the OCPI echo and routing headers, the security middleware's
headers). Everything else -- another path or method, a host Django would refuse, settings that make the security
middleware redirect or add HSTS, an unknown token or command, a repeat, a bad body, a database error -- goes to
Django unchanged, body included, and gets the answers it always got.

Why: bench.dispatch posts one result per command (10,000), and Django's request cycle (request object, seven
middleware, URL resolution, view decorators, response object, signals) cost about 0.4 ms of CPU per result, twice
the UPDATE that is the actual work. sandbox.cpo_wsgi does the same for the simulated CPO's profile PUTs.
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.http.request import split_domain_port, validate_host

from aggregator.adapters.ocpi import envelope, token_candidates
from aggregator.delivery import charging_profile_result_record_fast
from aggregator.encryption import token_digest
from aggregator.ocpi.transport import echo_headers

logger = logging.getLogger(__name__)

# The path of views.charging_profile_result (ocpi_urls, mounted at /ocpi/), with Django's <uuid:> converter's pattern.
RESULT_PATH = re.compile(r"/ocpi/2\.2\.1/chargingprofiles/results/"
                         r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class EnvironHeaders(Mapping[str, str]):
    """Request headers from a WSGI environ, by their HTTP names in any case ("X-Request-ID")."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self._environ = environ

    @staticmethod
    def _key(name: str) -> str:
        key = name.upper().replace("-", "_")
        return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"

    def __getitem__(self, name: str) -> str:
        return str(self._environ[self._key(name)])

    def __iter__(self) -> Iterator[str]:
        for key in self._environ:
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").title()

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _host_allowed(environ: dict[str, Any]) -> bool:
    """HttpRequest.get_host's check (CommonMiddleware calls it on every request): else Django answers 400."""
    if settings.USE_X_FORWARDED_HOST and "HTTP_X_FORWARDED_HOST" in environ:
        host = str(environ["HTTP_X_FORWARDED_HOST"])
    elif "HTTP_HOST" in environ:
        host = str(environ["HTTP_HOST"])
    else:
        host = f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


def _security_headers() -> list[tuple[str, str]] | None:
    """What SecurityMiddleware and XFrameOptionsMiddleware add to a JSON answer; None when the middleware would do
    more (redirect to HTTPS, HSTS, refuse user agents): then Django answers."""
    if settings.SECURE_SSL_REDIRECT or settings.SECURE_HSTS_SECONDS or settings.DISALLOWED_USER_AGENTS:
        return None
    headers = [("X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY").upper())]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        values = policy.split(",") if isinstance(policy, str) else policy
        headers.append(("Referrer-Policy", ",".join(value.strip() for value in values)))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    return headers


def _recorded(environ: dict[str, Any], command_id: str, raw: bytes) -> bool:
    """Apply the result with the fast UPDATE; False: Django must answer."""
    candidates = token_candidates(environ.get("HTTP_AUTHORIZATION"))
    if not candidates:
        return False
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return False
    if not isinstance(body, dict) or not isinstance(body.get("result"), str):
        return False
    close_old_connections()  # what Django does when a request starts and ends (CONN_MAX_AGE, broken connections)
    try:
        return charging_profile_result_record_fast(command_id=uuid.UUID(command_id),
                                                   cpo_token_digest=token_digest(candidates[0]),
                                                   result=body["result"], body=body)
    except Exception:  # Django takes over; a result already stored is then a repeat, answered as one
        logger.exception("OCPI result for command %s: fast path failed, handing over to Django", command_id)
        return False
    finally:
        close_old_connections()


class ResultFastPath:
    """WSGI middleware: the usual result POST answered here, every other request by `app`."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("SCRIPT_NAME"):
            return self.app(environ, start_response)
        match = RESULT_PATH.fullmatch(str(environ.get("PATH_INFO", "")))
        security = _security_headers() if match else None
        if match is None or security is None or not _host_allowed(environ):
            return self.app(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return self.app(environ, start_response)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if length <= 0 or (limit is not None and length > limit):
            # No length (chunked, or no body) or more than Django would read: Django answers, the input untouched.
            return self.app(environ, start_response)
        raw = environ["wsgi.input"].read(length)
        if not _recorded(environ, match.group(1), raw):
            environ["wsgi.input"] = io.BytesIO(raw)  # Django reads the body again
            return self.app(environ, start_response)
        payload = json.dumps(envelope()).encode()
        headers = [("Content-Type", "application/json"),
                   *echo_headers(EnvironHeaders(environ), routed=True), *security,
                   ("Content-Length", str(len(payload)))]
        start_response("200 OK", headers)
        return [payload]
