"""Aggregator use cases: propose offers for flex requests, dispatch orders to charge points, record CPO answers.

Dispatch lifecycle:
1. flex_order.placed (market event) -> dispatch_order_task -> flex_order_dispatch: one transaction that
   optimises the congestion point's schedule for all of our orders there that day, stores a SessionSchedule
   per session and a PENDING ChargingProfileCommand per session (the outbox), supersedes older unsent
   commands, and marks the order DISPATCHED.
2. After commit, send_commands_task -> charging_profile_command_send per command: claim PENDING -> SENDING
   with a conditional UPDATE (no two workers send the same command), PUT the profile over OCPI with no
   transaction held, then store the CPO's synchronous answer.
3. The CPO POSTs the asynchronous ChargingProfileResult to the command's response_url ->
   charging_profile_result_record.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction

from aggregator import portfolio, pricing
from aggregator.adapters.base import ChargingProfileAdapter
from aggregator.adapters.ocpi import OcpiChargingProfiles, set_charging_profile_body
from aggregator.models import ChargingProfileCommand, ChargingSession, SessionSchedule
from aggregator.optimiser import dispatch_optimise, offer_optimise, profile_limits_w
from common import isp as isp_time
from common import time as clock
from common.audit import audit_record
from common.exceptions import AdapterError, ApplicationError, TransitionError
from market import services as market_services
from market.models import FlexOrder, FlexRequest, Participant
from market.services import IspPower

logger = logging.getLogger(__name__)

Command = ChargingProfileCommand
MAX_SEND_ATTEMPTS = 5
AGGREGATOR_ACTOR = "aggregator-optimiser"
PARTIAL_ACTIVATION_FROM = Decimal("0.10")


# --- offers -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferProposal:
    """What the optimiser can offer for a flex request, plus the baseline it is measured against."""

    flex_request_id: str
    congestion_point_ean: str
    period: str
    d_prognosis_isps: list[IspPower]
    offer_isps: list[IspPower]
    price_eur: Decimal
    min_activation_factor: Decimal
    expires_at: datetime
    sessions: int
    energy_shift_kwh: float

    @property
    def is_empty(self) -> bool:
        return not self.offer_isps


def flex_offer_propose(*, aggregator: Participant, flex_request: FlexRequest) -> OfferProposal:
    """The largest reduction per requested ISP our sessions behind the point can deliver, every driver still
    getting their energy by departure; with the D-prognosis (uncontrolled baseline) it is measured against.
    Reads only: submitting goes through the market (services or the bidding API)."""
    snapshot = portfolio.portfolio_snapshot(
        aggregator=aggregator, congestion_point=flex_request.congestion_point, period=flex_request.period
    )
    caps, bands = portfolio.request_caps_and_bands(snapshot, flex_request)
    result = offer_optimise(horizon=snapshot.horizon, sessions=snapshot.inputs, requested_max_reduction_kw=caps,
                            bands=bands)
    gate = timedelta(minutes=flex_request.congestion_point.market.gate_closure_minutes)
    offer_isps = [
        row for row in portfolio.slots_to_isps(snapshot, result.reduction_kw, sign=-1)
        if isp_time.isp_start(flex_request.period, row.isp) - gate > clock.now()  # past gate closure: not offerable
    ]
    shift_kwh = sum(-row.power_w for row in offer_isps) / 1000 * isp_time.ISP_HOURS
    first_isp_start = isp_time.isp_start(flex_request.period, min((r.isp for r in offer_isps), default=1))
    return OfferProposal(
        flex_request_id=str(flex_request.pk),
        congestion_point_ean=flex_request.congestion_point.ean,
        period=flex_request.period.isoformat(),
        d_prognosis_isps=portfolio.d_prognosis_isps(snapshot),
        offer_isps=offer_isps,
        price_eur=pricing.offer_price_eur(energy_shift_kwh=shift_kwh),
        # A charging portfolio can deliver any fraction of what it offers: let the DSO activate 10 % upwards.
        min_activation_factor=PARTIAL_ACTIVATION_FROM,
        expires_at=min(flex_request.expires_at, first_isp_start),
        sessions=len(snapshot.sessions),
        energy_shift_kwh=shift_kwh,
    )


# --- dispatch ---------------------------------------------------------------------------------------


def response_url_for(command_id: uuid.UUID | str) -> str:
    return f"{settings.PUBLIC_BASE_URL}/ocpi/2.2.1/chargingprofiles/results/{command_id}"


@dataclass(frozen=True)
class DispatchSummary:
    flex_order_id: str
    sessions_scheduled: int
    commands_created: int
    shortfall_kwh: float
    deficiency_kw_max: float
    peak_kw: float


@transaction.atomic
def flex_order_dispatch(*, flex_order: FlexOrder) -> DispatchSummary:
    """Schedule every session behind the order's congestion point to deliver all our orders there that day,
    and queue one SetChargingProfile per session in the outbox. Idempotent per order: an order already
    dispatched is refused with invalid_state."""
    order = FlexOrder.objects.select_for_update().get(pk=flex_order.pk)
    if order.status != FlexOrder.Status.PLACED:
        raise TransitionError(f"Order {order.order_reference} is {order.status}; only placed orders are dispatched.")
    snapshot = portfolio.portfolio_snapshot(
        aggregator=order.aggregator, congestion_point=order.congestion_point, period=order.period
    )
    # Every order of ours on this point and day must hold at the same time.
    live_orders = FlexOrder.objects.filter(
        aggregator=order.aggregator,
        congestion_point=order.congestion_point,
        period=order.period,
        status__in=[FlexOrder.Status.PLACED, FlexOrder.Status.DISPATCHED],
    ).prefetch_related("isps")
    ordered_rows = [(row.isp, row.power_w) for live in live_orders for row in live.isps.all()]
    ordered_kw = portfolio.isps_to_slots(snapshot, ordered_rows, sign=-1)
    bands: dict[int, Any] = {}
    answered_request = order.flex_offer.flex_request if order.flex_offer is not None else None
    if answered_request is not None:
        _, bands = portfolio.request_caps_and_bands(snapshot, answered_request)
    result = dispatch_optimise(horizon=snapshot.horizon, sessions=snapshot.inputs,
                               ordered_reduction_kw=ordered_kw, base_load_kw=snapshot.base_load_kw, bands=bands)

    session_ids = [session.pk for session in snapshot.sessions]
    superseded = Command.objects.filter(session_id__in=session_ids, status=Command.Status.PENDING).update(
        status=Command.Status.SUPERSEDED, updated_at=clock.now()
    )
    SessionSchedule.objects.filter(session_id__in=session_ids, is_current=True).update(is_current=False)
    schedules = SessionSchedule.objects.bulk_create(
        SessionSchedule(
            session=session,
            flex_order=order,
            start=snapshot.horizon.start,
            slot_power_w=[int(round(value * 1000)) for value in result.schedule_kw[row]],
            planned_energy_kwh=Decimal(str(round(float(result.schedule_kw[row].sum()) * isp_time.ISP_HOURS, 3))),
            # Energy the driver asked for that the plan cannot give (mostly: stays too short even at full power).
            shortfall_kwh=Decimal(str(round(float(result.shortfall_kwh[row]), 3))),
        )
        for row, session in enumerate(snapshot.sessions)
    )
    commands = [
        _profile_command(session=session, schedule=schedule, order=order, plan_kw=result.schedule_kw[row],
                         avail=snapshot.avail[row], snapshot=snapshot)
        for row, (session, schedule) in enumerate(zip(snapshot.sessions, schedules, strict=True))
    ]
    Command.objects.bulk_create(commands)
    market_services.flex_order_mark_dispatched(flex_order=order, actor_label=AGGREGATOR_ACTOR)
    audit_record(obj=order, action="flex_order.schedule_computed", actor_label=AGGREGATOR_ACTOR, after={
        "sessions": len(snapshot.sessions), "commands": len(commands), "superseded_commands": superseded,
        "shortfall_kwh": round(float(result.shortfall_kwh.sum()), 3),
        "deficiency_kw_max": round(max(result.deficiency_kw.values(), default=0.0), 3),
        "peak_kw": round(result.peak_kw, 3), "solver_status": result.status,
    })
    order_id = str(order.pk)
    transaction.on_commit(lambda: _enqueue_send(order_id))
    return DispatchSummary(
        flex_order_id=order_id,
        sessions_scheduled=len(snapshot.sessions),
        commands_created=len(commands),
        shortfall_kwh=float(result.shortfall_kwh.sum()),
        deficiency_kw_max=max(result.deficiency_kw.values(), default=0.0),
        peak_kw=result.peak_kw,
    )


def _enqueue_send(order_id: str) -> None:
    from aggregator.tasks import send_order_commands_task

    send_order_commands_task.delay(order_id)


def _profile_command(
    *, session: ChargingSession, schedule: SessionSchedule, order: FlexOrder, plan_kw: np.ndarray,
    avail: np.ndarray, snapshot: portfolio.PortfolioSnapshot,
) -> Command:
    """One SetChargingProfile covering the session's plugged-in slots (limits are instantaneous W)."""
    limits = profile_limits_w(schedule_kw_row=plan_kw, avail_row=avail, max_power_kw=session.max_power_w / 1000)
    plugged = np.flatnonzero(avail > 0)
    first, last = (int(plugged[0]), int(plugged[-1])) if plugged.size else (0, 0)
    command = Command(kind=Command.Kind.SET, cpo=session.charge_point.cpo, session=session, schedule=schedule,
                      flex_order=order)
    command.request_body = set_charging_profile_body(
        start=snapshot.horizon.slot_start(first), limits_w=limits[first:last + 1],
        response_url=response_url_for(command.id),
    )
    return command


def _adapter() -> ChargingProfileAdapter:
    return OcpiChargingProfiles()


def charging_profile_command_send(*, command_id: uuid.UUID | str, adapter: ChargingProfileAdapter | None = None) -> Command:
    """Send one outbox command. Safe to call twice: only a PENDING command is claimed and sent.

    Transient failures put the command back to PENDING (the caller retries with backoff) until
    MAX_SEND_ATTEMPTS; permanent ones end in FAILED.
    """
    claimed = Command.objects.filter(pk=command_id, status=Command.Status.PENDING).update(
        status=Command.Status.SENDING, sent_at=clock.now(), updated_at=clock.now()
    )
    command = Command.objects.select_related("cpo", "session").get(pk=command_id)
    if claimed != 1:
        return command  # already sent, superseded, or being sent by another worker
    Command.objects.filter(pk=command_id).update(attempts=command.attempts + 1)
    command.attempts += 1
    try:
        answer = (adapter or _adapter()).set_charging_profile(
            cpo=command.cpo, session_id=command.session.cpo_session_id, body=command.request_body or {},
            correlation_id=str(command.pk),
        )
    except AdapterError as exc:
        final = exc.permanent or command.attempts >= MAX_SEND_ATTEMPTS
        next_status = Command.Status.FAILED if final else Command.Status.PENDING
        Command.objects.filter(pk=command_id, status=Command.Status.SENDING).update(
            status=next_status, last_error=exc.message[:2000], updated_at=clock.now()
        )
        logger.warning("profile command %s: %s (%s)", command_id, exc.message, next_status)
        command.refresh_from_db()
        return command
    # The async result may already have arrived (fast CPOs post it before answering the PUT).
    Command.objects.filter(pk=command_id, status=Command.Status.SENDING).update(
        status=answer.result, response_timeout_s=answer.timeout_s, last_error="", updated_at=clock.now()
    )
    command.refresh_from_db()
    return command


RESULT_STATUS = {
    "ACCEPTED": Command.Status.RESULT_ACCEPTED,
    "REJECTED": Command.Status.RESULT_REJECTED,
    "UNKNOWN": Command.Status.RESULT_UNKNOWN,
}


@transaction.atomic
def charging_profile_result_record(*, command: Command, result: str, body: dict[str, Any]) -> Command:
    """Store the CPO's asynchronous ChargingProfileResult for a command we sent.

    Accepted while the command is SENDING (the result overtook the PUT's answer) or ACCEPTED; a repeated
    identical result is a no-op (idempotent); anything else is refused.
    """
    if result not in RESULT_STATUS:
        raise ApplicationError(f"Unknown ChargingProfileResultType {result!r}.", code="invalid_result", field="result")
    target = RESULT_STATUS[result]
    locked = Command.objects.select_for_update().get(pk=command.pk)
    if locked.status == target:
        return locked
    if locked.status not in (Command.Status.SENDING, Command.Status.ACCEPTED):
        raise TransitionError(f"Command is {locked.status}; no result expected.")
    locked.status = target
    locked.result_at = clock.now()
    locked.result_body = body
    locked.save(update_fields=["status", "result_at", "result_body", "updated_at"])
    return locked


# --- sessions ---------------------------------------------------------------------------------------


@transaction.atomic
def charging_session_complete(
    *, session: ChargingSession, ended_at: datetime, energy_delivered_kwh: Decimal
) -> ChargingSession:
    """PENDING/ACTIVE -> COMPLETED with the energy the CPO reports."""
    claimed = ChargingSession.objects.filter(
        pk=session.pk, status__in=[ChargingSession.Status.PENDING, ChargingSession.Status.ACTIVE]
    ).update(status=ChargingSession.Status.COMPLETED, ended_at=ended_at,
             energy_delivered_kwh=energy_delivered_kwh, updated_at=clock.now())
    session.refresh_from_db()
    if claimed != 1:
        raise TransitionError(f"Session {session.cpo_session_id} is {session.status}; it cannot complete again.")
    return session

