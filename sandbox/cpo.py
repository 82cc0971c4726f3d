"""A simulated CPO speaking OCPI 2.2.1 (the CPO side), for the demo day, tests and bench.dispatch.

- chargingprofiles RECEIVER: PUT / GET / DELETE /sandbox/cpo/ocpi/2.2.1/chargingprofiles/{session_id}. PUT answers
  a ChargingProfileResponse at once and later POSTs the ChargingProfileResult to the response_url: as a Celery task
  (`results=task`, default: eager in the demo, really asynchronous with workers) or from a thread pool in this
  process (`results=thread`, what a separate CPO system does; bench.dispatch uses it).
  The charger "applies" the newest profile per session; sandbox.meters reads it back. A PUT that repeats the
  active profile (same response_url: a re-send after a lost answer) is idempotent: answered, not applied twice.
- sessions SENDER: GET /sandbox/cpo/ocpi/2.2.1/sessions, paginated (date_from/date_to/offset/limit, Link,
  X-Total-Count, X-Limit), built from the portfolio's sessions at this CPO.
- Faults (configurable, for fault tests, the demo and the bench): `error_rate` (HTTP 500), `garbage_rate` (HTTP 200
  with a non-JSON body), `too_often_rate` (TOO_OFTEN), `latency_ms` (a delay before answering) and `down`
  (HTTP 503 for everything). From settings.SANDBOX_CPO_CONFIG ("error_rate=0.01,latency_ms=5,results=thread"), or
  at run time with PUT /sandbox/cpo/faults (JSON) or `configure(...)`.
- GET /sandbox/cpo/stats: receipts, injected faults, applications and duplicated applications, for bench.dispatch.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import close_old_connections, connection, models, transaction
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from aggregator.adapters.ocpi import envelope, ocpi_datetime, token_candidates, token_header
from aggregator.encryption import token_digest
from aggregator.models import ChargingSession
from aggregator.ocpi.transport import page_request, paginated_response
from common import time as clock
from common.exceptions import AdapterError
from common.http import TRANSIENT_STATUS, USER_AGENT
from sandbox.models import SandboxChargingProfile, SandboxCpoClient

logger = logging.getLogger(__name__)

RESULT_TIMEOUT_S = 30
SESSIONS_PAGE_LIMIT = 50


@dataclass(frozen=True)
class CpoConfig:
    error_rate: float = 0.0
    garbage_rate: float = 0.0
    too_often_rate: float = 0.0
    latency_ms: int = 0
    down: bool = False
    results: str = "task"  # task | thread


def parse_config(text: str) -> CpoConfig:
    """"key=value,key=value" (SANDBOX_CPO_CONFIG) into a CpoConfig; unknown keys are an error."""
    values: dict[str, Any] = {}
    types = {field.name: field.type for field in fields(CpoConfig)}
    for part in filter(None, (chunk.strip() for chunk in text.split(","))):
        key, _, raw = part.partition("=")
        key = key.strip()
        if key not in types:
            raise ValueError(f"unknown sandbox CPO setting {key!r}; known: {', '.join(types)}")
        kind = types[key]
        values[key] = (raw.strip().lower() in ("1", "true", "yes")) if kind == "bool" else (
            int(raw) if kind == "int" else float(raw) if kind == "float" else raw.strip())
    return CpoConfig(**values)


_lock = threading.Lock()
_config: CpoConfig | None = None
_stats: Counter[str] = Counter()
_pool: ThreadPoolExecutor | None = None


def current_config() -> CpoConfig:
    global _config
    with _lock:
        if _config is None:
            _config = parse_config(getattr(settings, "SANDBOX_CPO_CONFIG", ""))
        return _config


def configure(**changes: Any) -> CpoConfig:
    """Change the faults at run time (tests, the faults endpoint)."""
    global _config
    updated = replace(current_config(), **changes)
    with _lock:
        _config = updated
    return updated


def reset() -> None:
    """Back to settings.SANDBOX_CPO_CONFIG with fresh counters."""
    global _config
    with _lock:
        _config = None
        _stats.clear()
        _session_pks.clear()


def _count(key: str, amount: int = 1) -> None:
    with _lock:
        _stats[key] += amount


def _db_value(model: type[models.Model], name: str, value: Any) -> Any:
    """A value as the database backend wants it in raw SQL (uuid, datetime, JSON differ per backend)."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field.get_db_prep_value(value, connection)


def _client(request: HttpRequest) -> SandboxCpoClient | None:
    """The calling client, read fresh on every request (tests flip reject_all between calls). Raw SQL: every
    profile PUT of bench.dispatch comes through here, and the ORM's query building cost more than the query."""
    return _client_and_session(request.headers, None)[0]


def _client_and_session(headers: Headers, session_id: str | None) -> tuple[SandboxCpoClient | None, bool]:
    """The calling client and, in the same query, whether `session_id` is one of its open sessions (when the
    session is in the id -> row map already; else _session_known decides)."""
    open_statuses = (ChargingSession.Status.PENDING, ChargingSession.Status.ACTIVE)
    for candidate in token_candidates(headers.get("Authorization")):  # decoded first, raw as fallback
        with _lock:
            session_pk = _session_pks.get(candidate, {}).get(session_id) if session_id is not None else None
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, token_for_client, reject_all, (SELECT status FROM aggregator_chargingsession "
                           "WHERE id = %s) FROM sandbox_sandboxcpoclient WHERE token_from_client = %s",
                           [None if session_pk is None else _db_value(ChargingSession, "id", session_pk), candidate])
            row = cursor.fetchone()
        if row is not None:
            client = SandboxCpoClient(id=row[0], token_from_client=candidate, token_for_client=row[1],
                                      reject_all=bool(row[2]))
            if session_id is None:
                return client, False
            if session_pk is None:
                return client, _session_known(client, session_id)
            return client, row[3] in open_statuses
    return None, False


# Request headers by name, case-insensitive: Django's request.headers, or sandbox.cpo_wsgi's view of the WSGI environ.
Headers = Mapping[str, str]


@dataclass(frozen=True)
class Answer:
    """An HTTP answer without a web framework: the PUT receiver runs under Django and, in bench.dispatch, straight
    from WSGI (sandbox.cpo_wsgi)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    def as_response(self) -> HttpResponse:
        response = HttpResponse(self.body, status=self.status, content_type=self.content_type)
        for name, value in self.headers:
            response[name] = value
        return response


def _answer(headers: Headers, body: dict[str, Any], status: int = 200,
            extra: dict[str, str] | None = None) -> Answer:
    """A JSON answer that echoes the request and correlation ids and mirrors the routing headers (OCPI-BRIEF 2.5:
    the response goes back to the requester)."""
    out: list[tuple[str, str]] = []
    for header in ("X-Request-ID", "X-Correlation-ID"):
        if headers.get(header):
            out.append((header, headers[header]))
    for ours, theirs in (("OCPI-from-country-code", "OCPI-to-country-code"), ("OCPI-from-party-id", "OCPI-to-party-id")):
        if headers.get(theirs):
            out.append((ours, headers[theirs]))
        if headers.get(ours):
            out.append((theirs, headers[ours]))
    out.extend((extra or {}).items())
    return Answer(status=status, body=json.dumps(body, cls=DjangoJSONEncoder).encode(), headers=tuple(out))


def _reply(request: HttpRequest, body: dict[str, Any], status: int = 200,
           headers: dict[str, str] | None = None) -> HttpResponse:
    return _answer(request.headers, body, status, headers).as_response()


def _injected_fault(config: CpoConfig) -> Answer | None:
    """Latency first, then at most one fault per request."""
    if config.latency_ms:
        time.sleep(config.latency_ms / 1000)
    if config.down:
        _count("fault_down")
        return Answer(503, b"CPO platform down for maintenance", "text/plain")
    roll = random.random()
    if roll < config.error_rate:
        _count("fault_error")
        return Answer(500, b"internal error", "text/plain")
    if roll < config.error_rate + config.garbage_rate:
        _count("fault_garbage")
        return Answer(200, b"<html><body>502 gateway</body></html>", "text/html")
    return None


def _valid_profile(body: Any) -> str | None:
    """Return a reason when the SetChargingProfile object is malformed."""
    if not isinstance(body, dict):
        return "body must be a SetChargingProfile object"
    profile = body.get("charging_profile")
    if not isinstance(profile, dict):
        return "charging_profile is required"
    if profile.get("charging_rate_unit") not in ("W", "A"):
        return "charging_rate_unit must be W or A"
    periods = profile.get("charging_profile_period") or []
    if not isinstance(periods, list) or not all(
        isinstance(p, dict) and isinstance(p.get("start_period"), int) and isinstance(p.get("limit"), int | float)
        for p in periods
    ):
        return "charging_profile_period entries need integer start_period and numeric limit"
    if not isinstance(body.get("response_url"), str) or not body["response_url"].startswith(("http://", "https://")):
        return "response_url is required"
    return None


_session_pks: dict[str, dict[str, Any]] = {}  # client token -> {cpo_session_id: ChargingSession pk}


def _session_known(client: SandboxCpoClient, session_id: str) -> bool:
    """Is this one of the client's open sessions? The id -> row map is loaded once per client (ChargingSession has
    no index on the session id alone) and reloaded on a miss; the status is read fresh from the row every time."""
    open_statuses = {ChargingSession.Status.PENDING, ChargingSession.Status.ACTIVE}
    with _lock:
        known = _session_pks.get(client.token_from_client)
    if known is None or session_id not in known:
        ours = ChargingSession.objects.filter(
            charge_point__cpo__token_from_cpo_digest=token_digest(client.token_for_client))
        known = dict(ours.values_list("cpo_session_id", "pk"))
        with _lock:
            _session_pks[client.token_from_client] = known
        if session_id not in known:
            # OCPI ids are CiString (case-insensitive).
            return ours.filter(cpo_session_id__iexact=session_id, status__in=open_statuses).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM aggregator_chargingsession WHERE id = %s",
                       [_db_value(ChargingSession, "id", known[session_id])])
        row = cursor.fetchone()
    return row is not None and row[0] in open_statuses


@csrf_exempt
@require_http_methods(["PUT", "GET", "DELETE"])
def charging_profile(request: HttpRequest, session_id: str) -> HttpResponse:
    if request.method == "PUT":
        return put_profile(request.headers, session_id, request.body).as_response()
    config = current_config()
    _count("receipts")
    fault = _injected_fault(config)
    if fault is not None:
        return fault.as_response()
    client, session_open = _client_and_session(request.headers, session_id)
    if client is None:
        return _reply(request, envelope(status_code=2000, status_message="Unknown token"), status=401)
    response_url = request.GET.get("response_url", "")
    if not response_url.startswith(("http://", "https://")):
        return _reply(request, envelope(status_code=2001, status_message="response_url is required"))
    if not session_open:
        return _reply(request, envelope(data={"result": "UNKNOWN_SESSION", "timeout": RESULT_TIMEOUT_S}))
    active = SandboxChargingProfile.objects.filter(client=client, session_id=session_id, is_active=True).first()
    if request.method == "DELETE":
        if active is not None:
            SandboxChargingProfile.objects.filter(pk=active.pk).update(is_active=False)
        body: dict[str, Any] = {"result": "ACCEPTED" if active is not None else "UNKNOWN"}
    else:
        profile = active.charging_profile if active is not None else {"charging_rate_unit": "W",
                                                                        "charging_profile_period": []}
        body = {"result": "ACCEPTED", "profile": {"start_date_time": ocpi_datetime(clock.now()),
                                                  "charging_profile": profile}}
    _deliver_later(lambda: _post(response_url, client.token_for_client, body), config)
    return _reply(request, envelope(data={"result": "ACCEPTED", "timeout": RESULT_TIMEOUT_S}))


def put_profile(headers: Headers, session_id: str, raw_body: bytes) -> Answer:
    """PUT {chargingprofiles}/{session_id}: SetChargingProfile. Answers the ChargingProfileResponse at once and, for
    an ACCEPTED profile, posts the ChargingProfileResult to its response_url later."""
    config = current_config()
    _count("receipts")
    fault = _injected_fault(config)
    if fault is not None:
        return fault
    try:
        body = json.loads(raw_body or b"null")
        problem = _valid_profile(body)
    except ValueError:
        body, problem = None, "Invalid JSON"
    too_often = not problem and bool(config.too_often_rate) and random.random() < config.too_often_rate
    if not problem and not too_often:
        applied = _put_in_one_statement(headers, session_id, body)
        if applied is not None:
            return _applied(headers, config, body, *applied)
    client, session_open = _client_and_session(headers, session_id)
    if client is None:
        return _answer(headers, envelope(status_code=2000, status_message="Unknown token"), status=401)
    if problem == "Invalid JSON":
        return _answer(headers, envelope(status_code=2001, status_message=problem), status=400)
    if problem:
        return _answer(headers, envelope(status_code=2001, status_message=problem))
    if too_often:
        _count("fault_too_often")
        return _answer(headers, envelope(data={"result": "TOO_OFTEN", "timeout": RESULT_TIMEOUT_S}))
    if not session_open:
        result = "UNKNOWN_SESSION"
    elif client.reject_all:
        result = "REJECTED"
    else:
        result = "ACCEPTED"
    profile_id, repeat = _apply_profile(client, session_id, body, result)
    return _applied(headers, config, body, client.token_for_client, result, profile_id, repeat)


def _applied(headers: Headers, config: CpoConfig, body: dict[str, Any], token: str, result: str, profile_id: int,
             repeat: bool) -> Answer:
    """Count what happened, post the result later for an ACCEPTED profile, and answer."""
    if repeat:
        # The same command again (its sender lost our answer): PUT replaces the profile with itself.
        _count("repeats")
    else:
        _count("applied" if result == "ACCEPTED" else f"answered_{result.lower()}")
    if result == "ACCEPTED":
        response_url = body["response_url"]
        transaction.on_commit(lambda: _deliver_later(
            lambda: _post_profile_result(profile_id, response_url, token), config, task_profile_id=profile_id))
    return _answer(headers, envelope(data={"result": result, "timeout": RESULT_TIMEOUT_S}))


# The usual PUT as one statement on PostgreSQL (bench.dispatch sends 10,000): the client by its token, the verdict
# from the session's status and the client's reject_all, then _APPLY_SQL's steps. Nothing is written when the
# token is unknown (the caller then takes the general path, which answers 401).
_PUT_SQL = """
WITH client AS (
    SELECT id, token_for_client, reject_all FROM sandbox_sandboxcpoclient WHERE token_from_client = %(token)s
), verdict AS (
    SELECT client.id AS client_id, CASE
        WHEN (SELECT status FROM aggregator_chargingsession WHERE id = %(session_pk)s) IN (%(pending)s, %(active)s)
        THEN CASE WHEN client.reject_all THEN 'REJECTED' ELSE 'ACCEPTED' END
        ELSE 'UNKNOWN_SESSION' END AS result
    FROM client
), active AS (
    SELECT profile.id, profile.response_url FROM sandbox_sandboxchargingprofile profile, verdict
    WHERE profile.client_id = verdict.client_id AND profile.session_id = %(session)s AND profile.is_active
    FOR UPDATE OF profile
), repeat AS (
    SELECT active.id FROM active, verdict WHERE verdict.result = 'ACCEPTED' AND active.response_url = %(url)s
), retired AS (
    UPDATE sandbox_sandboxchargingprofile SET is_active = FALSE
    WHERE id IN (SELECT id FROM active) AND (SELECT result FROM verdict) = 'ACCEPTED'
    AND NOT EXISTS (SELECT 1 FROM repeat)
), inserted AS (
    INSERT INTO sandbox_sandboxchargingprofile
        (client_id, session_id, charging_profile, response_url, sync_result, async_result, received_at, is_active)
    SELECT verdict.client_id, %(session)s, %(profile)s, %(url)s, verdict.result, '', %(now)s,
           verdict.result = 'ACCEPTED'
    FROM verdict WHERE NOT EXISTS (SELECT 1 FROM repeat)
    RETURNING id
)
SELECT (SELECT token_for_client FROM client), (SELECT result FROM verdict), (SELECT id FROM inserted),
       (SELECT min(id) FROM repeat)
"""


def _put_in_one_statement(headers: Headers, session_id: str, body: dict[str, Any]
                          ) -> tuple[str, str, int, bool] | None:
    """(token for the client, result, profile id, repeat) of a valid PUT, or None: not PostgreSQL, a session not in
    the id -> row map yet, an unknown token, or one that is only known in its raw (not Base64) reading."""
    if connection.vendor != "postgresql":
        return None
    candidates = token_candidates(headers.get("Authorization"))
    if not candidates:
        return None
    with _lock:
        session_pk = _session_pks.get(candidates[0], {}).get(session_id)
    if session_pk is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute(_PUT_SQL, {
            "token": candidates[0], "session_pk": _db_value(ChargingSession, "id", session_pk),
            "pending": ChargingSession.Status.PENDING, "active": ChargingSession.Status.ACTIVE,
            "session": session_id, "url": body["response_url"],
            "profile": _db_value(SandboxChargingProfile, "charging_profile", body["charging_profile"]),
            "now": _db_value(SandboxChargingProfile, "received_at", clock.now())})
        token, result, inserted, repeated = cursor.fetchone()
    if token is None:
        return None
    return (token, result, int(repeated), True) if inserted is None else (token, result, int(inserted), False)


# One statement on PostgreSQL (bench.dispatch sends 10,000 PUTs; a transaction costs four round trips): lock the
# session's active profile; the same response_url again is a repeat (nothing written); else an ACCEPTED profile
# retires the active one, and the new one is stored.
_APPLY_SQL = """
WITH active AS (
    SELECT id, response_url FROM sandbox_sandboxchargingprofile
    WHERE client_id = %s AND session_id = %s AND is_active FOR UPDATE
), repeat AS (
    SELECT id FROM active WHERE %s AND response_url = %s
), retired AS (
    UPDATE sandbox_sandboxchargingprofile SET is_active = FALSE
    WHERE %s AND id IN (SELECT id FROM active) AND NOT EXISTS (SELECT 1 FROM repeat)
), inserted AS (
    INSERT INTO sandbox_sandboxchargingprofile
        (client_id, session_id, charging_profile, response_url, sync_result, async_result, received_at, is_active)
    SELECT %s, %s, %s, %s, %s, '', %s, %s WHERE NOT EXISTS (SELECT 1 FROM repeat)
    RETURNING id
)
SELECT (SELECT id FROM inserted), (SELECT min(id) FROM repeat)
"""


def _apply_profile(client: SandboxCpoClient, session_id: str, body: dict[str, Any], result: str) -> tuple[int, bool]:
    """Store a received profile; returns (profile id, whether it repeats the active one)."""
    accepted, url = result == "ACCEPTED", body["response_url"]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_APPLY_SQL, [
                client.pk, session_id, accepted, url, accepted,
                client.pk, session_id, _db_value(SandboxChargingProfile, "charging_profile", body["charging_profile"]),
                url, result, _db_value(SandboxChargingProfile, "received_at", clock.now()), accepted])
            inserted, repeated = cursor.fetchone()
        return (int(repeated), True) if inserted is None else (int(inserted), False)
    with transaction.atomic():
        active = _active_profile(client, session_id)
        if accepted and active is not None and active[1] == url:
            return active[0], True
        if accepted and active is not None:
            SandboxChargingProfile.objects.filter(pk=active[0]).update(is_active=False)
        return _profile_insert(client, session_id, body, result), False


def _active_profile(client: SandboxCpoClient, session_id: str) -> tuple[int, str] | None:
    """(id, response_url) of the session's active profile, locked until the transaction ends where the database
    can lock rows (two PUTs for one session apply one after the other)."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, response_url FROM sandbox_sandboxchargingprofile "  # noqa: S608 - constant
                       f"WHERE client_id = %s AND session_id = %s AND is_active = %s ORDER BY id{lock}",
                       [client.pk, session_id, True])
        row = cursor.fetchone()
    return (int(row[0]), str(row[1])) if row is not None else None



def _profile_insert(client: SandboxCpoClient, session_id: str, body: dict[str, Any], result: str) -> int:
    """Store a received profile (one INSERT without the ORM's per-call query building; bench.dispatch does this
    10,000 times)."""
    values = [client.pk, session_id, _db_value(SandboxChargingProfile, "charging_profile", body["charging_profile"]),
              body["response_url"], result, "", _db_value(SandboxChargingProfile, "received_at", clock.now()),
              result == "ACCEPTED"]
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO sandbox_sandboxchargingprofile (client_id, session_id, charging_profile, "
                       "response_url, sync_result, async_result, received_at, is_active) "
                       "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id", values)
        return int(cursor.fetchone()[0])


def _deliver_later(send: Any, config: CpoConfig, *, task_profile_id: int | None = None) -> None:
    """Post an async result: as a Celery task (profile results only) or from this process's thread pool."""
    global _pool
    if config.results == "task" and task_profile_id is not None:
        from sandbox.tasks import post_profile_result_task

        post_profile_result_task.delay(task_profile_id)
        return
    global _results_in_flight
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sandbox-cpo-results")
        _results_in_flight += 1
    _pool.submit(_in_thread, send)


_results_in_flight = 0
_posted: list[int] = []  # profiles whose result was posted, not yet marked so in the database
POSTED_BATCH = 50


def _in_thread(send: Any) -> None:
    global _results_in_flight
    close_old_connections()
    try:
        send()
    except Exception:
        logger.exception("sandbox CPO: posting a result failed")
    finally:
        # Mark posted results in batches (one UPDATE per POSTED_BATCH, not per result), and always when the last
        # result in flight is done, so none stays unmarked.
        with _lock:
            _results_in_flight -= 1
            batch: list[int] = []
            if _posted and (_results_in_flight == 0 or len(_posted) >= POSTED_BATCH):
                batch = _posted[:]
                _posted.clear()
        if batch:
            _mark_posted(batch)
        close_old_connections()


def _mark_posted(profile_ids: list[int]) -> None:
    try:
        SandboxChargingProfile.objects.filter(pk__in=profile_ids).update(async_result="ACCEPTED",
                                                                         result_posted_at=clock.now())
    except Exception:
        logger.exception("sandbox CPO: marking %d posted results failed", len(profile_ids))


_http = threading.local()


def _send_result(url: str, token: str, body: dict[str, Any]) -> None:
    """POST one result over this thread's keep-alive connection to the host (http.client, not common.http: the
    simulated CPO stands in for another company's system, and in bench.dispatch it shares the cores with the system
    under test, so its side is kept lean). Failures raise AdapterError like common.http.http_request."""
    parts = urlsplit(url)
    connections: dict[tuple[str, str], http.client.HTTPConnection] = _http.__dict__.setdefault("connections", {})
    key = (parts.scheme, parts.netloc)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    payload = json.dumps(body).encode()
    headers = {"Authorization": token_header(token), "Content-Type": "application/json", "User-Agent": USER_AGENT}
    for fresh in (False, True):
        conn = connections.get(key)
        reused = conn is not None
        if conn is None:
            kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = connections[key] = kind(parts.netloc, timeout=settings.HTTP_READ_TIMEOUT_S)
        try:
            conn.request("POST", target, body=payload, headers=headers)
            response = conn.getresponse()
            text = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            connections.pop(key, None)
            if reused and not fresh:
                continue  # the server closed the idle connection: once more on a new one
            raise AdapterError(f"POST {url} failed: {exc!r}", permanent=False) from exc
        if response.will_close:
            conn.close()
            connections.pop(key, None)
        if response.status >= 400:
            raise AdapterError(f"POST {url} answered HTTP {response.status}: {text[:300]!r}",
                               permanent=response.status < 500 and response.status not in TRANSIENT_STATUS,
                               status_code=response.status)
        return


def _post(url: str, token: str, body: dict[str, Any]) -> None:
    for attempt in range(5):
        try:
            _send_result(url, token, body)
            _count("results_posted")
            return
        except AdapterError as exc:
            if exc.permanent:
                logger.warning("sandbox CPO: result to %s refused: %s", url, exc.message)
                return
            time.sleep(0.2 * 2 ** attempt)


def _post_profile_result(profile_id: int, response_url: str, token: str) -> None:
    """Thread mode: POST the result, then queue the profile to be marked posted (_in_thread marks in batches)."""
    _post(response_url, token, {"result": "ACCEPTED"})
    with _lock:
        _posted.append(profile_id)


# --- sessions SENDER (paginated) --------------------------------------------------------------------------------


def _ocpi_session(session: ChargingSession) -> dict[str, Any]:
    cpo = session.charge_point.cpo
    status = session.status if session.status != ChargingSession.Status.PENDING else "PENDING"
    body: dict[str, Any] = {
        "country_code": cpo.country_code, "party_id": cpo.party_id, "id": session.cpo_session_id,
        "start_date_time": ocpi_datetime(session.arrival_at),
        "kwh": float(session.energy_delivered_kwh or 0),
        "cdr_token": {"country_code": cpo.country_code, "party_id": cpo.party_id,
                      "uid": session.token_uid or "SANDBOX", "type": "RFID", "contract_id": "NL-SBX-C00000001"},
        "auth_method": "WHITELIST", "location_id": f"LOC-{session.charge_point.evse_uid}",
        "evse_uid": session.charge_point.evse_uid, "connector_id": "1", "currency": "EUR",
        "status": status, "last_updated": ocpi_datetime(session.updated_at),
    }
    if session.ended_at:
        body["end_date_time"] = ocpi_datetime(session.ended_at)
    return body


@csrf_exempt
@require_http_methods(["GET"])
def sessions(request: HttpRequest) -> HttpResponse:
    fault = _injected_fault(current_config())
    if fault is not None:
        return fault.as_response()
    client = _client(request)
    if client is None:
        return _reply(request, envelope(status_code=2000, status_message="Unknown token"), status=401)
    page = page_request(request, max_limit=SESSIONS_PAGE_LIMIT)
    rows = ChargingSession.objects.filter(
        charge_point__cpo__token_from_cpo_digest=token_digest(client.token_for_client)).select_related(
        "charge_point__cpo").order_by("arrival_at", "id")  # stable while last_updated moves under a crawler
    if page.date_from:
        rows = rows.filter(updated_at__gte=page.date_from)
    if page.date_to:
        rows = rows.filter(updated_at__lt=page.date_to)
    total = rows.count()
    items = [_ocpi_session(session) for session in rows[page.offset:page.offset + page.limit]]
    return paginated_response(request, items=items, total=total, page=page, max_limit=SESSIONS_PAGE_LIMIT)


# --- operations: faults and counters -----------------------------------------------------------------------------


@csrf_exempt
@require_http_methods(["GET", "PUT"])
def faults(request: HttpRequest) -> JsonResponse:
    """GET the fault settings; PUT {"error_rate": 0.01, ...} to change them (sandbox only, like everything here)."""
    if request.method == "PUT":
        try:
            changes = json.loads(request.body or b"{}")
            updated = configure(**changes)
        except (ValueError, TypeError) as exc:
            return JsonResponse({"error": str(exc)}, status=400)
        return JsonResponse(asdict(updated))
    return JsonResponse(asdict(current_config()))


@require_http_methods(["GET"])
def stats(request: HttpRequest) -> JsonResponse:
    """This process's counters, and from the database: applications per command (response_url) and duplicates."""
    applied = SandboxChargingProfile.objects.filter(sync_result="ACCEPTED").values("response_url").annotate(
        n=Count("id"))
    duplicated = sum(1 for row in applied if row["n"] > 1)
    with _lock:
        counters = dict(_stats)
    return JsonResponse({"counters": counters, "applied_commands": len(applied), "duplicated_commands": duplicated})
