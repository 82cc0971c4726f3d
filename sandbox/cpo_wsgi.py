"""The sandbox CPO served as its own WSGI application (bench.dispatch runs it so, `sandbox.cpo_wsgi:application`).

SetChargingProfile PUTs go straight from WSGI to sandbox.cpo.put_profile, the very function the Django view calls;
every other request goes through Django as usual. Why: a real CPO runs on its own machines, but in bench.dispatch
the simulated one shares two cores with the system under test, and Django's request cycle (request object,
middleware, URL resolution, response object, signals) cost about as much as the receiver itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

django_application = get_wsgi_application()

from django.conf import settings  # noqa: E402 - after django.setup() (get_wsgi_application)
from django.db import close_old_connections  # noqa: E402
from django.db.backends.base.base import BaseDatabaseWrapper  # noqa: E402
from django.db.backends.signals import connection_created  # noqa: E402

from aggregator.ocpi.result_wsgi import EnvironHeaders  # noqa: E402
from sandbox import cpo  # noqa: E402

logger = logging.getLogger(__name__)

PREFIX = "/sandbox/cpo/ocpi/2.2.1/chargingprofiles/"
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 500: "Internal Server Error",
           503: "Service Unavailable"}

StartResponse = Callable[..., Any]


def _asynchronous_commit(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """This process's own writes (the profiles the simulated CPO receives) commit without waiting for the WAL
    flush. They stand in for another company's database, whose durability is not under test, and in bench.dispatch
    the flush cost the shared PostgreSQL ~0.07 ms of CPU per profile. Only the CPO served on its own does this; our
    server and workers keep synchronous commits."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = off")


connection_created.connect(_asynchronous_commit)


def _session_id(environ: dict[str, Any]) -> str | None:
    """The session id of a profile PUT ({PREFIX}{session_id}, one path segment), else None."""
    if environ.get("REQUEST_METHOD") != "PUT" or not settings.SANDBOX_ENABLED:
        return None
    # PEP 3333: PATH_INFO is the percent-decoded path as latin-1; Django reads it back as UTF-8 the same way.
    path = str(environ.get("PATH_INFO", "")).encode("latin-1").decode("utf-8", "replace")
    if not path.startswith(PREFIX):
        return None
    session_id = path[len(PREFIX):]
    return session_id if session_id and "/" not in session_id else None


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    session_id = _session_id(environ)
    if session_id is None:
        return django_application(environ, start_response)
    close_old_connections()  # what Django does when a request starts and ends (CONN_MAX_AGE, broken connections)
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        answer = cpo.put_profile(EnvironHeaders(environ), session_id, body)
    except Exception:
        logger.exception("sandbox CPO: profile PUT for %s failed", session_id)
        answer = cpo.Answer(500, b"internal error", "text/plain")
    finally:
        close_old_connections()
    headers = [("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body))), *answer.headers]
    start_response(f"{answer.status} {REASONS.get(answer.status, 'Unknown')}", headers)
    return [answer.body]
