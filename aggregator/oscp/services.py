"""OSCP peer lifecycle (Register, Handshake, Heartbeat), what peers send us, and the outbox that carries ours.

Outbox (brief 5, issue 5 "delivery that loses nothing"):
1. A decision (a Register to answer, a forecast to publish) writes an OscpOutboundMessage in its own transaction
   (`message_queue`) and, on commit, asks a Celery worker on the `dispatch` queue to send it.
2. `message_send` claims PENDING -> SENDING with a conditional UPDATE (one sender per message, however many
   workers or duplicate task deliveries), POSTs with no transaction held, then records SENT / FAILED (permanent
   4xx) / PENDING again with `next_attempt_at` = now + backoff with full jitter (common.retry) / DEAD_LETTER after
   MAX attempts.
3. `outbox_sweep` (Celery beat) re-sends PENDING messages that are due and puts SENDING messages whose worker
   died back to PENDING, so nothing is lost when a task is.
The message id is the X-Request-ID, so a re-send after a crash carries the same id and the peer can drop it.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q

from aggregator.adapters import oscp as protocol
from aggregator.models import (
    CapacityGroup,
    ComplianceError,
    GroupMeasurement,
    OscpInboundMessage,
    OscpOutboundMessage,
    OscpPeer,
)
from aggregator.models.oscp import token_digest
from common import time as clock
from common.audit import audit_record
from common.exceptions import AdapterError, ApplicationError
from common.retry import backoff_delay_s

logger = logging.getLogger(__name__)

Message = OscpOutboundMessage
Status = OscpOutboundMessage.Status
Endpoint = OscpOutboundMessage.Endpoint
ACTOR = "oscp"
# A SENDING message older than this lost its worker (killed mid-send): the sweep hands it out again.
STALE_SENDING = timedelta(minutes=5)
DEFAULT_MEASUREMENT_CONFIGURATION = ["CONTINUOUS"]
SCRUBBED = "(delivered; not kept)"  # what a delivered Register keeps in place of the token it carried


class OscpRefused(ApplicationError):
    """An inbound OSCP request we refuse; the view answers `status_code` with {"message": ...}."""


def cp_base_url() -> str:
    """Our Capacity Provider base URL for OSCP 2.0 (what we put in Register.version_url)."""
    return f"{settings.PUBLIC_BASE_URL}/oscp/cp/{protocol.OSCP_VERSION}"


def new_token() -> str:
    return secrets.token_urlsafe(32)


# --- outbox -----------------------------------------------------------------------------------------


def message_queue(
    *,
    peer: OscpPeer,
    endpoint: str,
    body: dict[str, Any] | None,
    method: str = "POST",
    correlation_id: str = "",
    auth_token: str = "",
    group: CapacityGroup | None = None,
    flex_order: Any = None,
    supersede_key: str = "",
    valid_until: datetime | None = None,
) -> Message:
    """Write one message to the outbox in the caller's transaction; it is sent after commit.

    A PENDING message with the same `supersede_key` is SUPERSEDED (only the newest forecast for a group,
    type and day is worth sending).
    """
    with transaction.atomic():
        if supersede_key:
            Message.objects.filter(peer=peer, supersede_key=supersede_key, status=Status.PENDING).update(
                status=Status.SUPERSEDED, updated_at=clock.now())
        message = Message.objects.create(
            peer=peer, endpoint=endpoint, method=method, body=body, correlation_id=correlation_id,
            auth_token=auth_token, group=group, flex_order=flex_order, supersede_key=supersede_key,
            valid_until=valid_until,
        )
        message_id = str(message.pk)
        transaction.on_commit(lambda: _enqueue_send(message_id))
    return message


def _enqueue_send(message_id: str) -> None:
    from aggregator.oscp.tasks import oscp_message_send_task

    oscp_message_send_task.delay(message_id)


def _finish(message_id: uuid.UUID, **changes: Any) -> None:
    """Record a send outcome, only if we still hold the claim (status SENDING)."""
    Message.objects.filter(pk=message_id, status=Status.SENDING).update(updated_at=clock.now(), **changes)


def message_send(*, message_id: uuid.UUID | str) -> Message:
    """Send one outbox message. Safe to call any number of times: only a due PENDING message is claimed."""
    now = clock.now()
    claimed = Message.objects.filter(pk=message_id, status=Status.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    ).update(status=Status.SENDING, attempts=F("attempts") + 1, updated_at=now)
    message = Message.objects.select_related("peer").get(pk=message_id)
    if claimed != 1:
        return message  # sent, superseded, not due yet, or another worker has it
    if message.supersede_key and Message.objects.filter(
        peer=message.peer, supersede_key=message.supersede_key, created_at__gt=message.created_at
    ).exclude(pk=message.pk).exists():
        _finish(message.pk, status=Status.SUPERSEDED)  # a newer one exists: never let an old forecast land last
        message.refresh_from_db()
        return message
    if message.valid_until is not None and message.valid_until <= now:
        _finish(message.pk, status=Status.EXPIRED, last_error="every block ended before it could be sent")
        message.refresh_from_db()
        return message
    peer = message.peer
    token = message.auth_token or peer.token_for_peer
    if not peer.base_url or not token or not peer.is_active:
        _finish(message.pk, status=Status.FAILED, last_error="peer has no base URL or token (not registered)")
        message.refresh_from_db()
        return message
    try:
        response = protocol.send(method=message.method, url=f"{peer.base_url.rstrip('/')}/{message.endpoint}",
                                 token=token, request_id=str(message.pk), body=message.body,
                                 correlation_id=message.correlation_id)
    except AdapterError as exc:
        _record_failure(message, exc)
        message.refresh_from_db()
        return message
    _finish(message.pk, status=Status.SENT, sent_at=clock.now(), http_status=response.status_code, last_error="")
    message.refresh_from_db()
    if message.status == Status.SENT:
        _after_sent(message)
    return message


def _record_failure(message: Message, exc: AdapterError) -> None:
    if exc.permanent:
        status, next_at = Status.FAILED, None
    elif message.attempts >= settings.OSCP_MAX_SEND_ATTEMPTS:
        status, next_at = Status.DEAD_LETTER, None
    else:
        status = Status.PENDING
        next_at = clock.now() + timedelta(seconds=backoff_delay_s(message.attempts))
    _finish(message.pk, status=status, next_attempt_at=next_at, http_status=exc.status_code,
            last_error=exc.message[:2000])
    log = logger.error if status in (Status.FAILED, Status.DEAD_LETTER) else logger.warning
    log("OSCP %s %s to %s attempt %s: %s -> %s", message.endpoint, message.pk, message.peer_id, message.attempts,
        exc.message, status)


def _after_sent(message: Message) -> None:
    """Protocol state that follows from a message having been delivered."""
    peer_id = message.peer_id
    if message.endpoint == Endpoint.REGISTER and message.method == "POST" and message.correlation_id:
        # Our answer to the peer's Register is delivered: the exchange is complete, token A is dead.
        with transaction.atomic():
            peer = OscpPeer.objects.select_for_update().get(pk=peer_id)
            peer.registration_status = OscpPeer.Registration.REGISTERED
            peer.initial_token_digest = ""
            peer.save(update_fields=["registration_status", "initial_token_digest", "updated_at"])
            audit_record(obj=peer, action="oscp.registered", actor_label=ACTOR, after={"base_url": peer.base_url})
            handshake_send(peer=peer)
    elif message.endpoint == Endpoint.HANDSHAKE:
        OscpPeer.objects.filter(pk=peer_id, handshake_status=OscpPeer.Handshake.NONE).update(
            handshake_status=OscpPeer.Handshake.SENT, updated_at=clock.now())
    elif message.endpoint == Endpoint.HANDSHAKE_ACKNOWLEDGE:
        _handshake_complete(peer_id=peer_id)
    elif message.endpoint == Endpoint.HEARTBEAT:
        OscpPeer.objects.filter(pk=peer_id).update(last_heartbeat_sent_at=message.sent_at, updated_at=clock.now())
    if message.endpoint == Endpoint.REGISTER and message.method == "PUT" and message.body:
        # Token rotation delivered: the peer uses the new token from now on (the old one worked until here).
        with transaction.atomic():
            peer = OscpPeer.objects.select_for_update().get(pk=peer_id)
            peer.token_from_peer_digest = token_digest(str(message.body["token"]))
            peer.save(update_fields=["token_from_peer_digest", "updated_at"])
            audit_record(obj=peer, action="oscp.token_rotated", actor_label=ACTOR)
    if message.endpoint == Endpoint.REGISTER:
        _scrub_tokens(message)


def _scrub_tokens(message: Message) -> None:
    """A delivered Register keeps no token in the outbox: the one we issued lives on only as a digest."""
    body = dict(message.body or {})
    if "token" in body:
        body["token"] = SCRUBBED
    Message.objects.filter(pk=message.pk).update(body=body, auth_token="", updated_at=clock.now())


@transaction.atomic
def peer_token_rotate(*, peer: OscpPeer, actor: Any = None) -> Message:
    """PUT register: give the peer a new token for calling us; the old one stays valid until the PUT is delivered."""
    if peer.registration_status != OscpPeer.Registration.REGISTERED:
        raise ApplicationError("Only a registered peer can get a new token.", code="invalid_state",
                               field="registration_status", status_code=409)
    audit_record(obj=peer, action="oscp.token_rotation_sent", actor=actor, actor_label="" if actor else ACTOR)
    return message_queue(peer=peer, endpoint=Endpoint.REGISTER, method="PUT", supersede_key=f"register-put:{peer.pk}",
                         body=protocol.register_body(token=new_token(), base_url=cp_base_url()))


@transaction.atomic
def message_retry(*, message: Message, actor: Any = None) -> Message:
    """Operator action: put a FAILED or DEAD_LETTER message back in the queue with a fresh attempt budget."""
    claimed = Message.objects.filter(pk=message.pk, status__in=Message.RETRIABLE_BY_OPERATOR).update(
        status=Status.PENDING, attempts=0, next_attempt_at=None, updated_at=clock.now())
    message.refresh_from_db()
    if claimed != 1:
        raise ApplicationError(f"Only failed or dead-lettered messages can be retried; this one is {message.status}.",
                               code="invalid_state", field="status", status_code=409)
    audit_record(obj=message, action="oscp.message_retried", actor=actor, actor_label="" if actor else ACTOR)
    message_id = str(message.pk)
    transaction.on_commit(lambda: _enqueue_send(message_id))
    return message


def outbox_sweep() -> int:
    """Recover what a lost task or a killed worker left behind; return how many messages were handed out."""
    now = clock.now()
    revived = Message.objects.filter(status=Status.SENDING, updated_at__lt=now - STALE_SENDING).update(
        status=Status.PENDING, next_attempt_at=None, updated_at=now)
    if revived:
        logger.warning("OSCP outbox: %s message(s) stuck in SENDING returned to PENDING", revived)
    due = list(Message.objects.filter(status=Status.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)).order_by("created_at").values_list("pk", flat=True)[:500])
    for message_id in due:
        _enqueue_send(str(message_id))
    return len(due)


# --- inbound ----------------------------------------------------------------------------------------


def peer_for_token(header_value: str | None) -> OscpPeer | None:
    for candidate in protocol.presented_tokens(header_value):
        digest = token_digest(candidate)
        peer = OscpPeer.objects.select_related("cpo").filter(
            Q(token_from_peer_digest=digest) | Q(initial_token_digest=digest), is_active=True).first()
        if peer is not None:
            return peer
    return None


def inbound_record(*, peer: OscpPeer, endpoint: str, method: str, request_id: str, correlation_id: str,
                   body: Any) -> tuple[OscpInboundMessage, bool]:
    """Log an inbound message; (row, False) when this X-Request-ID was already processed (a peer's retry)."""
    try:
        with transaction.atomic():
            row = OscpInboundMessage.objects.create(peer=peer, endpoint=endpoint, method=method, request_id=request_id,
                                                    correlation_id=correlation_id, body=body)
            return row, True
    except IntegrityError:
        return OscpInboundMessage.objects.get(peer=peer, endpoint=endpoint, request_id=request_id), False


# --- registration -------------------------------------------------------------------------------------


@transaction.atomic
def peer_initial_token_issue(*, peer: OscpPeer, actor: Any = None) -> str:
    """Token A for a peer that will register at us: returned once (to hand over out of band), stored as a digest."""
    token = new_token()
    peer.initial_token_digest = token_digest(token)
    peer.save(update_fields=["initial_token_digest", "updated_at"])
    audit_record(obj=peer, action="oscp.initial_token_issued", actor=actor, actor_label="" if actor else ACTOR)
    return token


@transaction.atomic
def peer_register(*, peer: OscpPeer, peer_token: str, actor: Any = None) -> Message:
    """We register at the peer: POST {peer base_url}/register with the token it gave us out of band, carrying a new
    token for it to use with us. Its own Register back (with the token we then use) completes the exchange."""
    if not peer.base_url:
        raise ApplicationError("Set the peer's OSCP base URL first.", code="invalid", field="base_url")
    ours = new_token()
    peer.token_from_peer_digest = token_digest(ours)
    peer.registration_status = OscpPeer.Registration.REGISTER_SENT
    peer.save(update_fields=["token_from_peer_digest", "registration_status", "updated_at"])
    audit_record(obj=peer, action="oscp.register_sent", actor=actor, actor_label="" if actor else ACTOR)
    return message_queue(peer=peer, endpoint=Endpoint.REGISTER, auth_token=peer_token,
                         supersede_key=f"register:{peer.pk}",
                         body=protocol.register_body(token=ours, base_url=cp_base_url()))


@transaction.atomic
def register_received(*, peer: OscpPeer, register: protocol.ParsedRegister, presented_token: str,
                      request_id: str, correlation_id: str) -> None:
    """POST register from the peer: either its first Register (authenticated with token A) that we answer with our
    own, or its answer to ours (authenticated with the token we sent it)."""
    if register.base_url is None:
        raise OscpRefused("No common OSCP version: we support 2.0 only.", code="unsupported_version", status_code=501)
    locked = OscpPeer.objects.select_for_update().get(pk=peer.pk)
    locked.token_for_peer = register.token
    locked.base_url = register.base_url
    answer_to_ours = (locked.registration_status == OscpPeer.Registration.REGISTER_SENT
                      and token_digest(presented_token) == locked.token_from_peer_digest)
    if answer_to_ours:
        locked.registration_status = OscpPeer.Registration.REGISTERED
        locked.initial_token_digest = ""
        locked.save(update_fields=["token_for_peer", "base_url", "registration_status", "initial_token_digest",
                                   "updated_at"])
        audit_record(obj=locked, action="oscp.registered", actor_label=ACTOR, after={"base_url": locked.base_url})
        handshake_send(peer=locked)
        return
    ours = new_token()
    # Token A stays valid until our Register is delivered (see _after_sent); the new token works from now on.
    locked.token_from_peer_digest = token_digest(ours)
    locked.save(update_fields=["token_for_peer", "base_url", "token_from_peer_digest", "updated_at"])
    audit_record(obj=locked, action="oscp.register_received", actor_label=ACTOR, after={"base_url": locked.base_url})
    # A repeated Register from the peer replaces an answer not yet sent (only the newest token may land).
    message_queue(peer=locked, endpoint=Endpoint.REGISTER, auth_token=register.token, correlation_id=request_id,
                  supersede_key=f"register:{locked.pk}",
                  body=protocol.register_body(token=ours, base_url=cp_base_url()))


@transaction.atomic
def register_update_received(*, peer: OscpPeer, register: protocol.ParsedRegister) -> None:
    """PUT register: the peer changes the token we use or its base URL."""
    if register.base_url is None:
        raise OscpRefused("No common OSCP version: we support 2.0 only.", code="unsupported_version", status_code=501)
    OscpPeer.objects.filter(pk=peer.pk).update(token_for_peer=register.token, base_url=register.base_url,
                                               updated_at=clock.now())
    audit_record(obj=peer, action="oscp.register_updated", actor_label=ACTOR, after={"base_url": register.base_url})


@transaction.atomic
def unregister_received(*, peer: OscpPeer) -> None:
    """DELETE register: forget the tokens; unsent messages to the peer are dropped."""
    OscpPeer.objects.filter(pk=peer.pk).update(
        registration_status=OscpPeer.Registration.UNREGISTERED, handshake_status=OscpPeer.Handshake.NONE,
        token_for_peer="", token_from_peer_digest="", initial_token_digest="", updated_at=clock.now())
    Message.objects.filter(peer=peer, status=Status.PENDING).update(status=Status.SUPERSEDED, updated_at=clock.now())
    audit_record(obj=peer, action="oscp.unregistered", actor_label=ACTOR)


# --- handshake and heartbeat ------------------------------------------------------------------------


def our_required_behaviour(peer: OscpPeer) -> dict[str, Any]:
    return protocol.required_behaviour(
        heartbeat_interval_s=peer.heartbeat_interval_wanted_s,
        measurement_configuration=peer.measurement_configuration or DEFAULT_MEASUREMENT_CONFIGURATION,
    )


def handshake_send(*, peer: OscpPeer) -> Message:
    return message_queue(peer=peer, endpoint=Endpoint.HANDSHAKE, supersede_key=f"handshake:{peer.pk}",
                         body={"required_behaviour": our_required_behaviour(peer)})


@transaction.atomic
def handshake_received(*, peer: OscpPeer, behaviour: dict[str, Any] | None, request_id: str) -> Message:
    """The peer's Handshake: keep what it asks of us, acknowledge with what we ask of it (X-Correlation-ID = its
    X-Request-ID). The handshake counts as complete once our acknowledge is delivered."""
    OscpPeer.objects.filter(pk=peer.pk).update(peer_required_behaviour=behaviour, updated_at=clock.now())
    return message_queue(peer=peer, endpoint=Endpoint.HANDSHAKE_ACKNOWLEDGE, correlation_id=request_id,
                         body={"required_behaviour": our_required_behaviour(peer)})


@transaction.atomic
def handshake_acknowledge_received(*, peer: OscpPeer, behaviour: dict[str, Any] | None) -> None:
    if behaviour is not None:
        OscpPeer.objects.filter(pk=peer.pk).update(peer_required_behaviour=behaviour, updated_at=clock.now())
    _handshake_complete(peer_id=peer.pk)


def _handshake_complete(*, peer_id: uuid.UUID) -> None:
    """Handshake done: capacity messages may flow; publish every group's forecasts for today and tomorrow."""
    from aggregator import oscp_dispatch

    with transaction.atomic():
        peer = OscpPeer.objects.select_for_update().get(pk=peer_id)
        was = peer.handshake_status
        peer.handshake_status = OscpPeer.Handshake.COMPLETE
        peer.save(update_fields=["handshake_status", "updated_at"])
        if was != OscpPeer.Handshake.COMPLETE:
            audit_record(obj=peer, action="oscp.handshake_complete", actor_label=ACTOR,
                         after={"peer_required_behaviour": peer.peer_required_behaviour})
        oscp_dispatch.peer_forecasts_queue(peer=peer)


def heartbeat_received(*, peer: OscpPeer, offline_mode_at: datetime) -> None:
    now = clock.now()
    OscpPeer.objects.filter(pk=peer.pk).update(last_heartbeat_received_at=now, peer_offline_mode_at=offline_mode_at,
                                               offline_alerted_at=None, updated_at=now)
    if peer.offline_alerted_at is not None:
        logger.warning("OSCP peer %s is back online (heartbeat, offline mode at %s)", peer, offline_mode_at)


def heartbeats_due_send() -> int:
    """Queue a Heartbeat to every peer whose interval has passed (brief 3.3: offline_mode_at = now + 2 x interval)."""
    now = clock.now()
    queued = 0
    peers = OscpPeer.objects.filter(is_active=True, registration_status=OscpPeer.Registration.REGISTERED,
                                    handshake_status=OscpPeer.Handshake.COMPLETE)
    for peer in peers:
        interval = peer.heartbeat_interval_s
        if interval is None:
            continue  # the peer did not ask for heartbeats
        if peer.last_heartbeat_sent_at and peer.last_heartbeat_sent_at > now - timedelta(seconds=interval):
            continue
        if Message.objects.filter(peer=peer, endpoint=Endpoint.HEARTBEAT,
                                  status__in=[Status.PENDING, Status.SENDING]).exists():
            continue
        message_queue(peer=peer, endpoint=Endpoint.HEARTBEAT, supersede_key=f"heartbeat:{peer.pk}",
                      body=protocol.heartbeat_body(offline_mode_at=now + timedelta(seconds=2 * interval)),
                      valid_until=now + timedelta(seconds=interval))
        queued += 1
    return queued


def peers_offline_check() -> list[OscpPeer]:
    """Alert (once) for every peer whose last heartbeat's offline_mode_at has passed."""
    now = clock.now()
    gone = list(OscpPeer.objects.select_related("cpo").filter(
        is_active=True, peer_offline_mode_at__lt=now, offline_alerted_at__isnull=True))
    for peer in gone:
        OscpPeer.objects.filter(pk=peer.pk, offline_alerted_at__isnull=True).update(offline_alerted_at=now)
        logger.error("OSCP peer %s is offline: no heartbeat since %s (offline mode at %s)", peer,
                     peer.last_heartbeat_received_at, peer.peer_offline_mode_at)
    return gone


# --- capacity messages from the peer ----------------------------------------------------------------


def peer_group(*, peer: OscpPeer, group_id: str) -> CapacityGroup:
    """The peer's group by OSCP group_id; a group not agreed with this peer is refused (403, as SolarNetwork)."""
    group = CapacityGroup.objects.filter(peer=peer, group_id=group_id, is_active=True).first()
    if group is None:
        raise OscpRefused(f"group_id {group_id!r} is not a capacity group agreed with this peer.",
                          code="unknown_group", status_code=403)
    return group


def require_handshake(peer: OscpPeer) -> None:
    if peer.handshake_status != OscpPeer.Handshake.COMPLETE:
        raise OscpRefused("Handshake first: capacity messages follow a completed handshake.",
                          code="handshake_required", status_code=403)


@transaction.atomic
def measurements_record(*, peer: OscpPeer, inbound: OscpInboundMessage,
                        parsed: protocol.ParsedGroupMeasurements) -> int:
    """Store UpdateGroupMeasurements readings (settlement evidence); a reading already stored is not doubled."""
    group = peer_group(peer=peer, group_id=parsed.group_id)
    rows = [
        GroupMeasurement(group=group, inbound=inbound, value=m.value, unit=m.unit, value_kwh=m.value_kwh,
                         phase=m.phase, direction=m.direction, energy_type=m.energy_type,
                         measure_time=m.measure_time, initial_measure_time=m.initial_measure_time)
        for m in parsed.measurements
    ]
    before = GroupMeasurement.objects.filter(group=group).count()
    GroupMeasurement.objects.bulk_create(rows, ignore_conflicts=True)
    return GroupMeasurement.objects.filter(group=group).count() - before


@transaction.atomic
def compliance_error_record(*, peer: OscpPeer, inbound: OscpInboundMessage,
                            parsed: protocol.ParsedComplianceError) -> ComplianceError:
    """Store a GroupCapacityComplianceError and raise the alert. X-Correlation-ID names the forecast concerned."""
    forecast = None
    try:
        forecast_id = uuid.UUID(inbound.correlation_id) if inbound.correlation_id else None
    except ValueError:
        forecast_id = None
    if forecast_id is not None:
        forecast = Message.objects.filter(pk=forecast_id, peer=peer).select_related("group").first()
    error = ComplianceError.objects.create(
        peer=peer, inbound=inbound, forecast=forecast, group=forecast.group if forecast else None,
        message=parsed.message, forecasted_blocks=[block.as_json() for block in parsed.blocks])
    audit_record(obj=error, action="oscp.compliance_error", actor_label=ACTOR,
                 after={"message": parsed.message, "forecast": str(forecast.pk) if forecast else None})
    logger.error("OSCP compliance error from %s (group %s, forecast %s): %s", peer,
                 error.group or "unknown", forecast.pk if forecast else inbound.correlation_id or "-", parsed.message)
    return error


@transaction.atomic
def compliance_error_acknowledge(*, error: ComplianceError, actor: Any = None) -> ComplianceError:
    ComplianceError.objects.filter(pk=error.pk, acknowledged_at__isnull=True).update(acknowledged_at=clock.now())
    error.refresh_from_db()
    audit_record(obj=error, action="oscp.compliance_error_acknowledged", actor=actor, actor_label="" if actor else ACTOR)
    return error
