"""Delivery that loses nothing: the dispatch outbox and the workers that empty it.

1. `outbox_put(commands)` writes commands in the caller's transaction, supersedes older unsent (PENDING) commands
   of the same sessions, and after commit enqueues `send_commands_task` (queue `dispatch`) in batches.
2. `send_batch(ids)` (in a Celery worker) claims due PENDING commands with one conditional UPDATE that stamps a
   lease (no two workers send the same command), sends them in parallel through a pooled HTTP client with no
   transaction held, and records each answer guarded by its lease (a worker that lost its lease cannot
   overwrite the newer state). Transient failures and TOO_OFTEN go back to PENDING with exponential backoff
   and full jitter (common.retry); permanent ones end FAILED; exhausted attempts end DEAD_LETTER (admin and
   `manage.py dispatch_retry` re-try them). Each batch re-schedules itself for its commands still waiting.
3. `sweep()` (Celery beat) is the safety net: it reclaims SENDING commands whose worker died (lease expired),
   re-enqueues due PENDING ones whose task was lost, and ends ACCEPTED commands whose async result did not
   arrive within the CPO's timeout as TIMED_OUT.
4. `charging_profile_result_record` stores the CPO's asynchronous result once (a repeat is a no-op).

Re-sends after a crash are at-least-once on the wire; they do not double-count because the body (and its
response_url) is the same and a ChargingProfile PUT replaces the session's profile, and our result record is
idempotent. A command whose session has a newer command in flight is not sent: the newer one wins.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import F, Q

from aggregator.adapters.base import ChargingProfileAdapter, ProfileSendResult
from aggregator.models import ChargePointOperator, ChargingProfileCommand, ChargingSession, OcpiEvse
from common import time as clock
from common.audit import audit_record
from common.exceptions import AdapterError, ApplicationError, TransitionError
from common.retry import backoff_delay_s

logger = logging.getLogger(__name__)

Command = ChargingProfileCommand
Status = ChargingProfileCommand.Status
SQL_CHUNK = 500  # ids per IN (...) list: well under SQLite's variable limit
RETRYABLE_FINAL = (Status.DEAD_LETTER, Status.FAILED, Status.TIMED_OUT)
ACTIVE_PROFILE_DURATION_S = 3600
PROFILE_CHANGING = (ChargingProfileCommand.Kind.SET, ChargingProfileCommand.Kind.CLEAR)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _db_value(model: type[models.Model], name: str, value: Any) -> Any:
    """A value as the database backend wants it in raw SQL (uuid, datetime, JSON differ per backend)."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field.get_db_prep_value(value, connection)


# --- writing --------------------------------------------------------------------------------------------


def outbox_put(commands: Sequence[Command]) -> list[Command]:
    """Write commands to the outbox in the caller's transaction; older unsent commands for the same sessions are
    SUPERSEDED; sending is enqueued when the transaction commits (nothing is sent for a rolled-back decision)."""
    if not commands:
        return []
    now = clock.now()
    with transaction.atomic():
        # A new SET or CLEAR replaces what the charger should do; a GET (read the active profile) replaces nothing.
        # Before the new rows exist, so no "but not the new ones" list of every new id in each UPDATE.
        session_ids = sorted({command.session_id for command in commands if command.kind in PROFILE_CHANGING})
        superseded = 0
        for chunk in _chunks(session_ids, SQL_CHUNK):
            superseded += Command.objects.filter(session_id__in=chunk, status=Status.PENDING,
                                                 kind__in=PROFILE_CHANGING).update(
                status=Status.SUPERSEDED, next_attempt_at=None, updated_at=now)
        created = _bulk_insert(commands)
        ids = [str(command.pk) for command in created]
        transaction.on_commit(lambda: enqueue_send(ids))
    if superseded:
        logger.info("outbox: %d new commands superseded %d unsent ones", len(created), superseded)
    return created


COPY_MIN_ROWS = 200  # below this bulk_create is as quick


def _bulk_insert(commands: Sequence[Command]) -> list[Command]:
    """INSERT new commands. On PostgreSQL with COPY: for an order's 10,000 commands bulk_create spent seconds
    building and quoting parameters (bench.dispatch's clock runs meanwhile and no worker can start); COPY takes the
    rows as they are. Same rows, same transaction, no signals either way (bulk_create sends none)."""
    if connection.vendor != "postgresql" or len(commands) < COPY_MIN_ROWS:
        return Command.objects.bulk_create(commands, batch_size=1000)
    from psycopg.types.json import Jsonb

    fields = list(Command._meta.concrete_fields)
    json_fields = {field.attname for field in fields if isinstance(field, models.JSONField)}
    columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in fields)
    with connection.cursor() as cursor, cursor.cursor.copy(
            f"COPY aggregator_chargingprofilecommand ({columns}) FROM STDIN") as copy:  # noqa: S608 - model columns
        for command in commands:
            row = []
            for field in fields:
                value = field.pre_save(command, add=True)  # auto_now(_add) timestamps, like bulk_create
                row.append(Jsonb(value) if field.attname in json_fields and value is not None else value)
            copy.write_row(row)
    for command in commands:
        command._state.adding = False
        command._state.db = connection.alias
    return list(commands)


def enqueue_send(command_ids: Sequence[str], *, countdown_s: float | None = None) -> int:
    """Queue sending in batches of DISPATCH_BATCH_SIZE; returns the number of tasks queued."""
    from aggregator.tasks import send_commands_task

    tasks = 0
    for batch in _chunks(list(command_ids), settings.DISPATCH_BATCH_SIZE):
        if countdown_s:
            send_commands_task.apply_async(args=(list(batch),), countdown=countdown_s)
        else:
            send_commands_task.delay(list(batch))
        tasks += 1
    return tasks


# --- sending --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What happened to one claimed command: the CPO's answer, or the error."""

    command: Command
    answer: ProfileSendResult | None = None
    error: AdapterError | None = None


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    """One thread pool per process, made lazily (after a Celery prefork child forked: threads do not survive fork)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=settings.DISPATCH_CONCURRENCY, thread_name_prefix="dispatch")
        return _pool


def default_adapter() -> ChargingProfileAdapter:
    from aggregator.adapters.ocpi import OcpiChargingProfiles

    return OcpiChargingProfiles()


def response_url_for(command_id: uuid.UUID | str) -> str:
    return f"{settings.PUBLIC_BASE_URL}/ocpi/2.2.1/chargingprofiles/results/{command_id}"


def _claim(command_ids: Sequence[str], now: datetime) -> list[Command]:
    """PENDING and due -> SENDING under a fresh lease; one UPDATE, so of two workers only one gets each row."""
    lease = uuid.uuid4()
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    claimed = Command.objects.filter(due, pk__in=command_ids, status=Status.PENDING).update(
        status=Status.SENDING, lease_id=lease, lease_until=now + timedelta(seconds=settings.DISPATCH_LEASE_S),
        attempts=F("attempts") + 1, sent_at=now, updated_at=now,
    )
    if not claimed:
        return []
    commands = list(Command.objects.filter(lease_id=lease, status=Status.SENDING)
                    .select_related("session__charge_point__ocpi_evse").defer("result_body")
                    .order_by("created_at"))
    # One CPO object per CPO, not one per row: its tokens are decrypted on every load.
    cpos = ChargePointOperator.objects.in_bulk({command.cpo_id for command in commands})
    for command in commands:
        command.cpo = cpos[command.cpo_id]
    return commands


def _send_one(adapter: ChargingProfileAdapter, command: Command) -> Outcome:
    session_id = command.session.cpo_session_id
    try:
        if command.kind == Command.Kind.SET:
            answer = adapter.set_charging_profile(cpo=command.cpo, session_id=session_id,
                                                  body=command.request_body or {}, correlation_id=str(command.pk))
        elif command.kind == Command.Kind.GET:
            answer = adapter.get_active_profile(cpo=command.cpo, session_id=session_id,
                                                duration_s=int((command.request_body or {}).get(
                                                    "duration", ACTIVE_PROFILE_DURATION_S)),
                                                response_url=response_url_for(command.pk),
                                                correlation_id=str(command.pk))
        else:
            answer = adapter.clear_profile(cpo=command.cpo, session_id=session_id,
                                           response_url=response_url_for(command.pk), correlation_id=str(command.pk))
    except AdapterError as exc:
        return Outcome(command=command, error=exc)
    except Exception as exc:  # a bug in an adapter must not strand the command in SENDING until the lease ends
        logger.exception("profile command %s: adapter crashed", command.pk)
        return Outcome(command=command, error=AdapterError(f"adapter error: {exc!r}", permanent=False))
    return Outcome(command=command, answer=answer)


def _profiles_unsupported(command: Command) -> bool:
    if not command.cpo.profiles_supported:
        return True
    evse = getattr(command.session.charge_point, "ocpi_evse", None)
    return evse is not None and not evse.profiles_supported


def _newer_in_flight(commands: Sequence[Command]) -> set[uuid.UUID]:
    """Commands of ours that a newer command for the same session has overtaken (sent or being sent by another
    claim). One query keyed by the claim's lease: it joins each claimed command to its session's other commands
    through the (session, status) index, instead of listing every id and session of the chunk."""
    leases = {command.lease_id for command in commands}
    if not commands or len(leases) != 1:
        return set()
    lease = _db_value(Command, "lease_id", leases.pop())
    in_flight = (Status.SENDING, Status.ACCEPTED, Status.RESULT_ACCEPTED)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT mine.id FROM aggregator_chargingprofilecommand mine "
            "JOIN aggregator_chargingprofilecommand newer ON newer.session_id = mine.session_id "
            "AND newer.created_at > mine.created_at "
            "WHERE mine.status = %s AND mine.lease_id = %s AND mine.kind IN (%s, %s) "
            "AND newer.status IN (%s, %s, %s) AND newer.kind IN (%s, %s) "
            "AND (newer.lease_id IS NULL OR newer.lease_id <> %s)",
            [Status.SENDING, lease, *PROFILE_CHANGING, *in_flight, *PROFILE_CHANGING, lease])
        rows = cursor.fetchall()
    field = Command._meta.pk
    assert field is not None
    return {field.to_python(row[0]) for row in rows}


def send_batch(command_ids: Sequence[str], *, adapter: ChargingProfileAdapter | None = None) -> dict[str, int]:
    """Send the due PENDING commands among `command_ids`; returns counts per resulting status.

    Claims and sends in chunks of DISPATCH_CONCURRENCY, so a worker killed mid-batch strands at most one
    chunk in SENDING (reclaimed by the sweeper when the lease ends); the rest stay PENDING for another worker.
    """
    adapter = adapter or default_adapter()
    counts: dict[str, int] = defaultdict(int)
    ids = [str(command_id) for command_id in command_ids]
    chunk_size = max(1, settings.DISPATCH_CONCURRENCY * 4)
    for chunk in _chunks(ids, chunk_size):
        now = clock.now()
        claimed = _claim(chunk, now)
        if not claimed:
            continue
        overtaken = _newer_in_flight(claimed)
        to_send, outcomes = [], []
        for command in claimed:
            if command.pk in overtaken:
                outcomes.append(Outcome(command=command, answer=ProfileSendResult(result=Status.SUPERSEDED)))
            elif _profiles_unsupported(command):
                outcomes.append(Outcome(command=command, answer=ProfileSendResult(
                    result="NOT_SUPPORTED", detail={"local": "EVSE or CPO marked as not supporting profiles"})))
            else:
                to_send.append(command)
        if len(to_send) == 1:
            outcomes.append(_send_one(adapter, to_send[0]))
        elif to_send:
            outcomes.extend(_executor().map(lambda command: _send_one(adapter, command), to_send))
        for status, number in _record(outcomes).items():
            counts[status] += number
    _reschedule_waiting(ids)
    return dict(counts)


def _record(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """Store the answers. Each write is guarded by the command's lease: if the sweeper reclaimed it meanwhile (or
    the async result already arrived), the stale answer is dropped."""
    now = clock.now()
    counts: dict[str, int] = defaultdict(int)
    accepted: dict[int, list[uuid.UUID]] = defaultdict(list)
    rejected_sessions: list[ChargingSession] = []
    release: dict[str, Any] = {"lease_id": None, "lease_until": None, "updated_at": now}
    for outcome in outcomes:
        command = outcome.command
        if outcome.error is None and outcome.answer is not None and outcome.answer.result == "ACCEPTED":
            # The usual case, recorded in bulk below: no per-command query to build.
            accepted[outcome.answer.timeout_s or settings.DISPATCH_DEFAULT_RESULT_TIMEOUT_S].append(command.pk)
            counts["ACCEPTED"] += 1
            continue
        guard = Command.objects.filter(pk=command.pk, lease_id=command.lease_id, status=Status.SENDING)
        if outcome.error is not None:
            error = outcome.error
            extra: dict[str, Any] = {}
            if error.permanent:
                status = Status.FAILED
            elif command.attempts >= settings.DISPATCH_MAX_ATTEMPTS:
                status = Status.DEAD_LETTER
            else:
                status = Status.PENDING
                extra = {"next_attempt_at": now + timedelta(seconds=backoff_delay_s(command.attempts))}
            guard.update(status=status, last_error=error.message[:2000], **release, **extra)
            logger.warning("profile command %s attempt %d: %s -> %s", command.pk, command.attempts, error.message,
                           status)
            counts[status] += 1
            continue
        answer = outcome.answer
        assert answer is not None
        result = answer.result
        if result == "TOO_OFTEN":
            # The CPO rate-limits us: not a failure of the command, send it again later (counts as an attempt).
            final = command.attempts >= settings.DISPATCH_MAX_ATTEMPTS
            guard.update(status=Status.DEAD_LETTER if final else Status.PENDING, last_error="TOO_OFTEN",
                         next_attempt_at=None if final else now + timedelta(seconds=backoff_delay_s(command.attempts)),
                         **release)
        else:
            if guard.update(status=result, last_error=answer.detail.get("local", ""), **release) and \
                    result == Status.REJECTED:
                rejected_sessions.append(command.session)
            if result == Status.NOT_SUPPORTED and "local" not in answer.detail:
                _mark_profiles_unsupported(command)
        counts[result] += 1
    leases = {outcome.command.lease_id for outcome in outcomes}
    for timeout_s, ids in accepted.items():
        Command.objects.filter(pk__in=ids, status=Status.SENDING, lease_id__in=leases).update(
            status=Status.ACCEPTED, response_timeout_s=timeout_s, result_due_at=now + timedelta(seconds=timeout_s),
            last_error="", lease_id=None, lease_until=None, updated_at=now,
        )
    for session in {session.pk: session for session in rejected_sessions}.values():
        _session_rejected(session)
    return counts


def _session_rejected(session: ChargingSession) -> None:
    """Re-optimise on a session's first rejection only: the re-planned profile for a session the CPO refuses is
    refused again, and re-optimising on every refusal would ping-pong forever."""
    rejections = Command.objects.filter(session_id=session.pk,
                                        status__in=[Status.REJECTED, Status.RESULT_REJECTED]).count()
    if rejections <= 1:
        _session_changed(session, reason="profile_rejected")
    else:
        logger.info("session %s: profile rejected again; not re-optimising a second time", session.pk)


def _mark_profiles_unsupported(command: Command) -> None:
    """NOT_SUPPORTED from the CPO: this EVSE cannot take profiles; later commands for it are not sent."""
    point = command.session.charge_point
    evse = OcpiEvse.objects.filter(cpo=command.cpo, evse_uid__iexact=point.evse_uid).first()
    if evse is None:
        evse = OcpiEvse.objects.create(cpo=command.cpo, evse_uid=point.evse_uid, charge_point=point,
                                       last_updated=clock.now(), profiles_supported=False)
    elif evse.profiles_supported:
        OcpiEvse.objects.filter(pk=evse.pk).update(profiles_supported=False, updated_at=clock.now())
    audit_record(obj=evse, action="ocpi.evse.profiles_not_supported", actor_label=f"cpo:{command.cpo.party_id}",
                 after={"command": str(command.pk)})


def _session_changed(session: ChargingSession, *, reason: str) -> None:
    """Hand the session to re-optimisation (aggregator.services.charging_session_changed)."""
    from aggregator import services

    try:
        services.charging_session_changed(session=session, reason=reason)
    except Exception:  # re-optimisation must not undo a recorded CPO answer
        logger.exception("re-optimisation after %s for session %s failed", reason, session.pk)


def _reschedule_waiting(command_ids: Sequence[str]) -> None:
    """Queue one follow-up task for this batch's commands still waiting for their backoff to end.

    Not when tasks run eagerly (demo, tests): a countdown would run at once, again and again; the sweeper and
    explicit sends pick the commands up there."""
    from aggregator.tasks import send_commands_task

    if send_commands_task.app.conf.task_always_eager:
        return
    waiting = Command.objects.filter(pk__in=command_ids, status=Status.PENDING, next_attempt_at__isnull=False)
    first_due = waiting.order_by("next_attempt_at").values_list("next_attempt_at", flat=True).first()
    if first_due is None:
        return
    ids = [str(pk) for pk in waiting.values_list("pk", flat=True)]
    countdown = max(0.0, (first_due - clock.now()).total_seconds())
    enqueue_send(ids, countdown_s=countdown or None)


# --- the sweeper ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    reclaimed: int
    dead_lettered: int
    requeued: int
    timed_out: int


def sweep() -> SweepResult:
    """Reclaim expired leases, re-enqueue due PENDING commands, and time out ACCEPTED commands past their timeout."""
    now = clock.now()
    expired = Command.objects.filter(status=Status.SENDING, lease_until__lte=now)
    dead = expired.filter(attempts__gte=settings.DISPATCH_MAX_ATTEMPTS).update(
        status=Status.DEAD_LETTER, lease_id=None, lease_until=None, updated_at=now,
        last_error="attempts exhausted; the last sending worker was lost")
    lost = [str(pk) for pk in expired.values_list("pk", flat=True)]
    reclaimed = 0
    for chunk in _chunks(lost, SQL_CHUNK):
        reclaimed += Command.objects.filter(pk__in=chunk, status=Status.SENDING, lease_until__lte=now).update(
            status=Status.PENDING, lease_id=None, lease_until=None, next_attempt_at=None, updated_at=now,
            last_error="reclaimed: the sending worker was lost")
    # Created or backed off more than one sweep interval ago and still PENDING: its task is lost or stuck.
    stale = now - timedelta(seconds=settings.DISPATCH_SWEEP_INTERVAL_S)
    due = [str(pk) for pk in Command.objects.filter(
        Q(next_attempt_at__isnull=True, updated_at__lte=stale) | Q(next_attempt_at__lte=stale),
        status=Status.PENDING).values_list("pk", flat=True)[:50_000]]
    requeue = list(dict.fromkeys(lost + due))
    if requeue:
        enqueue_send(requeue)
    timed_out = Command.objects.filter(status=Status.ACCEPTED, result_due_at__lte=now).update(
        status=Status.TIMED_OUT, updated_at=now, last_error="no result within the CPO's timeout")
    if reclaimed or dead or requeue or timed_out:
        logger.info("dispatch sweep: %d reclaimed, %d dead-lettered, %d re-queued, %d timed out",
                    reclaimed, dead, len(requeue), timed_out)
    return SweepResult(reclaimed=reclaimed, dead_lettered=dead, requeued=len(requeue), timed_out=timed_out)


# --- operators' re-try ------------------------------------------------------------------------------------


@transaction.atomic
def commands_retry(*, command_ids: Sequence[str | uuid.UUID], actor: Any = None, actor_label: str = "") -> dict[str, int]:
    """DEAD_LETTER / FAILED / TIMED_OUT commands back to PENDING with fresh attempts, and queued.

    A command that a newer one for the same session has since replaced is SUPERSEDED instead: re-sending it
    would overwrite the newer profile at the charger.
    """
    requeued: list[str] = []
    superseded: list[str] = []
    for command in Command.objects.select_for_update().filter(pk__in=list(command_ids)).order_by("created_at"):
        if command.status not in RETRYABLE_FINAL:
            raise TransitionError(f"Command {command.pk} is {command.status}; only {', '.join(RETRYABLE_FINAL)} "
                                  "commands can be re-tried.")
        before = {"status": command.status, "attempts": command.attempts}
        newer = command.kind in PROFILE_CHANGING and Command.objects.filter(
            session_id=command.session_id, created_at__gt=command.created_at, kind__in=PROFILE_CHANGING).exclude(
            status=Status.SUPERSEDED).exists()
        command.status = Status.SUPERSEDED if newer else Status.PENDING
        command.attempts = command.attempts if newer else 0
        command.next_attempt_at = None
        command.last_error = "" if not newer else "re-try refused: a newer command replaced it"
        command.save(update_fields=["status", "attempts", "next_attempt_at", "last_error", "updated_at"])
        audit_record(obj=command, action="dispatch.command.retried", actor=actor, actor_label=actor_label,
                     before=before, after={"status": command.status})
        (superseded if newer else requeued).append(str(command.pk))
    transaction.on_commit(lambda: enqueue_send(requeued))
    return {"requeued": len(requeued), "superseded": len(superseded)}


# --- asynchronous results ---------------------------------------------------------------------------------

RESULT_STATUS = {
    "ACCEPTED": Status.RESULT_ACCEPTED,
    "REJECTED": Status.RESULT_REJECTED,
    "UNKNOWN": Status.RESULT_UNKNOWN,
}
AWAITING_RESULT = (Status.SENDING, Status.ACCEPTED, Status.TIMED_OUT)


def charging_profile_result_record(*, command: Command, result: str, body: dict[str, Any]) -> Command:
    """Store the CPO's asynchronous result (ChargingProfileResult / ClearProfileResult /
    ActiveChargingProfileResult) for a command we sent, once.

    Accepted while the command is SENDING (the result overtook the PUT's answer), ACCEPTED, or TIMED_OUT (late
    but still the truth); a repeated identical result is a no-op; anything else is refused. A charger's REJECTED
    hands the session to re-optimisation.
    """
    if result not in RESULT_STATUS:
        raise ApplicationError(f"Unknown ChargingProfileResultType {result!r}.", code="invalid_result", field="result")
    target = RESULT_STATUS[result]
    now = clock.now()
    # One conditional UPDATE: two deliveries of the same result cannot both apply it.
    updated = Command.objects.filter(pk=command.pk, status__in=AWAITING_RESULT).update(
        status=target, result_at=now, result_body=body, lease_id=None, lease_until=None, updated_at=now)
    if not updated:
        current = Command.objects.filter(pk=command.pk).values_list("status", flat=True).first()
        if current == target:
            return command
        raise TransitionError(f"Command is {current}; no result expected.")
    command.status, command.result_at, command.result_body = target, now, body
    if target == Status.RESULT_REJECTED:
        session = ChargingSession.objects.get(pk=command.session_id)
        transaction.on_commit(lambda: _session_rejected(session))
    return command



def charging_profile_result_record_fast(*, command_id: uuid.UUID, cpo_token_digest: str, result: str,
                                        body: dict[str, Any]) -> bool:
    """The result receiver's hot path: one UPDATE that both authenticates and records. It applies the result when
    the command belongs to the active CPO whose registered token has this digest and is awaiting a result, and
    returns True. False means "take the full path" (unknown token or command, a repeat, a late or refused
    result, an unknown result type): charging_profile_result_record then answers exactly as always.

    Raw SQL because the ORM's query building cost more CPU than the rest of the request (bench.dispatch posts
    one result per command)."""
    target = RESULT_STATUS.get(result)
    if target is None:
        return False
    now = clock.now()
    params = [
        target,
        _db_value(Command, "result_at", now),
        _db_value(Command, "result_body", body),
        _db_value(Command, "updated_at", now),
        _db_value(Command, "id", command_id),
        *AWAITING_RESULT,
        cpo_token_digest,
        True,
    ]
    sql = ("UPDATE aggregator_chargingprofilecommand SET status = %s, result_at = %s, result_body = %s, "
           "lease_id = NULL, lease_until = NULL, updated_at = %s WHERE id = %s AND status IN (%s, %s, %s) AND cpo_id = "
           "(SELECT id FROM aggregator_chargepointoperator WHERE token_from_cpo_digest = %s AND is_active = %s) "
           "RETURNING session_id")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    if target == Status.RESULT_REJECTED:
        session = ChargingSession.objects.get(pk=row[0])
        transaction.on_commit(lambda: _session_rejected(session))
    return True
