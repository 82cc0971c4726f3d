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
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction

from aggregator import baseload, delivery, estimates, oscp_dispatch, portfolio, pricing, selectors
from aggregator.adapters.base import ChargingProfileAdapter
from aggregator.adapters.ocpi import parse_ocpi_datetime, set_charging_profile_body
from aggregator.delivery import charging_profile_result_record, response_url_for  # noqa: F401 - re-exported
from aggregator.models import ChargePoint, ChargingProfileCommand, ChargingSession, Driver, DriverToken, SessionSchedule
from aggregator.models.portfolio import IEC_61851_MIN_CURRENT_A
from aggregator.optimiser import (
    Horizon,
    SessionInput,
    availability,
    dispatch_optimise,
    offer_optimise,
    profile_limits_w,
    uncontrolled_kw,
)
from common import isp as isp_time
from common import time as clock
from common.audit import audit_record
from common.exceptions import ApplicationError, TransitionError
from common.models import audit_payload
from market import selectors as market_selectors
from market import services as market_services
from market.models import CongestionPoint, FlexOrder, FlexRequest, Participant
from market.services import IspPower

logger = logging.getLogger(__name__)

Command = ChargingProfileCommand
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
    # The point's physical limit holds in every slot of the horizon, not only in the ordered window: no rebound peak.
    point_capacity = order.congestion_point.capacity_kw
    result = dispatch_optimise(horizon=snapshot.horizon, sessions=snapshot.inputs,
                               ordered_reduction_kw=ordered_kw, base_load_kw=snapshot.base_load_kw, bands=bands,
                               capacity_kw=float(point_capacity) if point_capacity is not None else None)

    session_ids = [session.pk for session in snapshot.sessions]
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
    commands = oscp_dispatch.order_dispatch_oscp(flex_order=order, ocpi_commands=commands)  # OSCP groups (issue 5)
    superseded = Command.objects.filter(session_id__in=session_ids, status=Command.Status.PENDING).count()
    delivery.outbox_put(commands)  # supersedes those, sends after commit
    market_services.flex_order_mark_dispatched(flex_order=order, actor_label=AGGREGATOR_ACTOR)
    audit_record(obj=order, action="flex_order.schedule_computed", actor_label=AGGREGATOR_ACTOR, after={
        "sessions": len(snapshot.sessions), "commands": len(commands), "superseded_commands": superseded,
        "shortfall_kwh": round(float(result.shortfall_kwh.sum()), 3),
        "deficiency_kw_max": round(max(result.deficiency_kw.values(), default=0.0), 3),
        "peak_kw": round(result.peak_kw, 3), "solver_status": result.status,
    })
    order_id = str(order.pk)
    return DispatchSummary(
        flex_order_id=order_id,
        sessions_scheduled=len(snapshot.sessions),
        commands_created=len(commands),
        shortfall_kwh=float(result.shortfall_kwh.sum()),
        deficiency_kw_max=max(result.deficiency_kw.values(), default=0.0),
        peak_kw=result.peak_kw,
    )


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


def charging_profile_command_send(*, command_id: uuid.UUID | str, adapter: ChargingProfileAdapter | None = None) -> Command:
    """Send one outbox command now (aggregator.delivery.send_batch). Safe to call twice: only a due PENDING command
    is claimed and sent."""
    delivery.send_batch([str(command_id)], adapter=adapter)
    return Command.objects.select_related("cpo", "session").get(pk=command_id)


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



# --- re-optimisation ----------------------------------------------------------------------------------

REOPTIMISE_ACTOR = "aggregator-reoptimiser"
# Limits that differ by less than this are the same profile: no new command for solver noise.
_LIMIT_TOLERANCE_W = 50


def charging_session_changed(*, session: ChargingSession, reason: str) -> None:
    """Something that changes a session's plan happened (arrival, early end, boost, a preference, a rejected
    profile): once the caller's transaction commits, re-optimise the session's congestion point, and only it."""
    charge_point = session.charge_point
    congestion_point_id = str(charge_point.connection.congestion_point_id)
    aggregator_id = str(charge_point.cpo.aggregator_id)
    transaction.on_commit(lambda: _enqueue_reoptimise(congestion_point_id, aggregator_id, reason))


def _enqueue_reoptimise(congestion_point_id: str, aggregator_id: str, reason: str) -> None:
    from aggregator.tasks import reoptimise_congestion_point_task

    reoptimise_congestion_point_task.delay(congestion_point_id, aggregator_id, reason)


@dataclass(frozen=True)
class ReoptimiseSummary:
    congestion_point_id: str
    reason: str
    start: str  # ISO start of the first re-planned slot (the next ISP boundary)
    sessions_scheduled: int
    schedules_written: int
    commands_created: int
    shortfall_kwh: float
    deficiency_kw_max: float
    peak_kw: float
    status: str
    kept_plan: bool  # the old plan still did everything as well: nothing re-sent


def _delivered_by_kwh(session: ChargingSession, schedule: SessionSchedule | None, start: datetime, now: datetime
                     ) -> float:
    """Energy a session will have had by `start` (the next ISP boundary), the current ISP still going as planned.

    The CPO's meter reading if it sent one (plus the plan for the rest of the current ISP), else what the current
    plan gives up to `start`, else full power since arrival (a car never steered charges uncontrolled)."""
    def planned_until(instant: datetime) -> float:
        assert schedule is not None
        elapsed_slots = (instant - schedule.start) / isp_time.ISP
        return sum(power_w / 1000 * isp_time.ISP_HOURS * min(1.0, max(0.0, elapsed_slots - index))
                   for index, power_w in enumerate(schedule.slot_power_w))

    if session.energy_delivered_kwh is not None:
        rest = planned_until(start) - planned_until(now) if schedule is not None else 0.0
        return float(session.energy_delivered_kwh) + rest
    if schedule is not None:
        return planned_until(start)
    hours = max(0.0, (start - session.arrival_at).total_seconds() / 3600)
    return min(float(session.energy_requested_kwh), session.max_power_w / 1000 * hours)


def _merged_slots(old: SessionSchedule | None, start: datetime, new_kw: np.ndarray, session: ChargingSession,
                  delivered_kwh: float) -> tuple[datetime, list[int]]:
    """Keep the past and the ISP in progress: the old plan's slots before `start`, then the new plan. A car that
    arrived with no plan is shown as what _delivered_by_kwh assumed: full power from arrival."""
    new_w = [int(round(value * 1000)) for value in new_kw]
    if old is None and session.arrival_at < start and delivered_kwh > 0:
        first = isp_time.floor_to_isp(session.arrival_at)
        past_w: list[int] = []
        remaining = delivered_kwh
        slot_start = first
        while slot_start < start:
            plugged_h = (min(slot_start + isp_time.ISP, start) - max(slot_start, session.arrival_at)
                         ).total_seconds() / 3600
            kwh = min(remaining, session.max_power_w / 1000 * max(0.0, plugged_h))
            past_w.append(int(round(kwh / isp_time.ISP_HOURS * 1000)))
            remaining -= kwh
            slot_start += isp_time.ISP
        return first, past_w + new_w
    if old is None or old.start >= start:
        return start, new_w
    kept_count = int((start - old.start) // isp_time.ISP)
    kept = list(old.slot_power_w[:kept_count]) + [0] * max(0, kept_count - len(old.slot_power_w))
    return old.start, kept + new_w


def _profile_limit_at(body: dict[str, Any] | None, instant: datetime) -> float:
    """The W limit a sent charging profile sets at `instant`; NaN where it sets none."""
    profile = (body or {}).get("charging_profile")
    if not profile:
        return float("nan")
    offset = (instant - parse_ocpi_datetime(profile["start_date_time"])).total_seconds()
    if offset < 0 or offset >= (profile.get("duration") or 10**9):
        return float("nan")
    limit = float("nan")
    for period in profile["charging_profile_period"]:
        if period["start_period"] <= offset:
            limit = float(period["limit"])
    return limit


def _old_plan_if_still_good(
    *, old_schedules: dict[Any, SessionSchedule], sessions: list[ChargingSession], inputs: list[SessionInput],
    horizon: Horizon, avail: np.ndarray, uncontrolled: np.ndarray, ordered_now: dict[int, float],
    base_load_kw: np.ndarray, capacity_kw: float | None, new_peak_kw: float, new_shortfall_kwh: float,
) -> np.ndarray | None:
    """The old plan from `horizon.start` on, if it still does everything the new one does, as well.

    The dispatch LP has many equally good solutions (which night slot fills a valley is a tie), so a fresh solve
    after a small change may pick another one and re-send every profile at the point for nothing. The old plan is
    kept when every session has one, it still gives each session its remaining energy and deadlines, stays within
    the cars' plugged-in power, charges inflexible sessions uncontrolled, meets the orders and the capacity, and
    its peak is no higher than the new plan's, and it plans no more energy than a session still needs."""
    tolerance_kw, tolerance_kwh = 0.05, 0.01
    if not sessions or any(session.pk not in old_schedules for session in sessions):
        return None
    plan = np.zeros((len(sessions), horizon.slots))
    for row, session in enumerate(sessions):
        old = old_schedules[session.pk]
        offset = int((horizon.start - old.start) // isp_time.ISP)
        values = old.slot_power_w[max(0, offset):offset + horizon.slots] if offset >= 0 else []
        plan[row, :len(values)] = np.array(values, dtype=float) / 1000
    caps = np.array([i.max_power_kw for i in inputs])[:, None] * avail
    if np.any(plan > caps + tolerance_kw):
        return None
    energy = plan.sum(axis=1) * isp_time.ISP_HOURS
    shortfall = sum(max(0.0, i.energy_kwh - e) for i, e in zip(inputs, energy, strict=True))
    if shortfall > new_shortfall_kwh + tolerance_kwh:
        return None
    # Nor more than a session still needs: a plan made before the car drew what it has now over-plans it (the
    # minimum-current repair may round up by one minimum-power slot, so that much is allowed).
    allowance = np.array([max(tolerance_kwh, i.min_power_kw * isp_time.ISP_HOURS) for i in inputs])
    if np.any(energy - np.array([i.energy_kwh for i in inputs]) > allowance + tolerance_kwh):
        return None
    cumulative = np.cumsum(plan, axis=1) * isp_time.ISP_HOURS
    for row, session_input in enumerate(inputs):
        if not session_input.flexible and np.any(np.abs(plan[row] - uncontrolled[row]) > tolerance_kw):
            return None
        for due, kwh in session_input.min_energy_by:
            slot = min(horizon.slot_of(due), horizon.slots) - 1
            if slot >= 0 and cumulative[row, slot] < kwh - tolerance_kwh:
                return None
    load = plan.sum(axis=0)
    uncontrolled_load = uncontrolled.sum(axis=0)
    for slot, reduction_kw in ordered_now.items():
        if load[slot] > uncontrolled_load[slot] - reduction_kw + tolerance_kw:
            return None
    total = base_load_kw + load
    if capacity_kw is not None and np.any(total > max(capacity_kw, new_peak_kw) + tolerance_kw):
        return None
    if horizon.slots and float(total.max()) > new_peak_kw + tolerance_kw:
        return None
    return plan


def _outbox_put(commands: list[Command]) -> None:
    """Through the dispatch outbox (aggregator.delivery): supersedes older unsent commands of these sessions and
    sends after commit."""
    from aggregator.delivery import outbox_put

    outbox_put(commands)


def _reoptimised_command(*, session: ChargingSession, schedule: SessionSchedule, order: FlexOrder | None,
                         limits: list[int], profile_start: datetime) -> Command:
    plugged = [index for index, limit in enumerate(limits) if limit > 0]
    last = plugged[-1] if plugged else 0
    command = Command(kind=Command.Kind.SET, cpo=session.charge_point.cpo, session=session, schedule=schedule,
                      flex_order=order)
    command.request_body = set_charging_profile_body(
        start=profile_start, limits_w=limits[:last + 1], response_url=response_url_for(command.id),
    )
    return command


@transaction.atomic
def congestion_point_reoptimise(
    *, aggregator: Participant, congestion_point: CongestionPoint, reason: str
) -> ReoptimiseSummary:
    """Re-plan our sessions behind ONE congestion point from the next ISP on (the ISP in progress keeps its plan,
    except that a boosted or opted-out car is let go at once).

    1. Lock the point (one re-optimisation per point at a time; other points run in parallel).
    2. Sessions still expected after the next ISP boundary; a running one plans only its missing energy.
    3. Orders already placed on the point hold for the remaining ISPs: the EV load may not exceed the
       uncontrolled baseline of the whole sessions minus the order, re-expressed against the remaining plan.
    4. New current SessionSchedules (old ones kept, is_current False) that keep the old plan's past slots.
    5. A SET command (from the ISP in progress) for each session whose limits changed, if it has a profile at its
       CPO or an order on the point needs steering; then one audit event on the point.
    """
    CongestionPoint.objects.select_for_update().filter(pk=congestion_point.pk).first()
    now = clock.now()
    current_isp = isp_time.floor_to_isp(now)
    start = isp_time.ceil_to_isp(now)
    candidates = list(selectors.reoptimisable_sessions(aggregator=aggregator, congestion_point=congestion_point,
                                                       now=start))
    old_schedules = selectors.current_schedules(session_ids=[s.pk for s in candidates])
    sessions: list[ChargingSession] = []
    inputs: list[SessionInput] = []
    delivered_by: dict[Any, float] = {}
    for session in candidates:
        delivered = delivered_by[session.pk] = _delivered_by_kwh(session, old_schedules.get(session.pk), start, now)
        remaining = portfolio.remaining_session_input(session, now=start, delivered_kwh=delivered)
        if remaining is not None:
            sessions.append(session)
            inputs.append(remaining)
    horizon = Horizon.covering(start=start, sessions=inputs, min_end=start + isp_time.ISP)
    avail = availability(horizon=horizon, sessions=inputs)
    uncontrolled_rows = uncontrolled_kw(horizon=horizon, sessions=inputs, avail=avail)
    uncontrolled_now = uncontrolled_rows.sum(axis=0)

    orders = selectors.live_orders_from(aggregator=aggregator, congestion_point=congestion_point, start=start)
    ordered: dict[int, float] = {}
    for order in orders:
        for isp_row in order.isps.all():
            slot = horizon.slot_of(isp_time.isp_start(order.period, isp_row.isp))
            if 0 <= slot < horizon.slots and isp_row.power_w < 0:
                ordered[slot] = ordered.get(slot, 0.0) - isp_row.power_w / portfolio.W_PER_KW
    ordered_now: dict[int, float] = {}
    if ordered:
        # The order is a reduction below the baseline of the whole sessions (full energy from arrival).
        whole = [portfolio.session_input(session) for session in sessions]
        whole_horizon = Horizon.covering(start=min([start, *(w.arrival for w in whole)]), sessions=whole,
                                         min_end=horizon.end)
        baseline_whole = uncontrolled_kw(horizon=whole_horizon, sessions=whole).sum(axis=0)
        offset = whole_horizon.slot_of(horizon.start)
        for slot, reduction_kw in ordered.items():
            allowed_kw = float(baseline_whole[offset + slot]) - reduction_kw
            ordered_now[slot] = max(0.0, float(uncontrolled_now[slot]) - allowed_kw)

    slot_starts = [horizon.slot_start(i) for i in range(horizon.slots)]
    connections = market_selectors.represented_connections(
        aggregator=aggregator, congestion_point=congestion_point, day=isp_time.market_day_of(now))
    base_load = baseload.household_profile_kw(
        annual_kwh=sum(c.annual_consumption_kwh for c in connections), slot_starts=slot_starts)
    capacity = float(congestion_point.capacity_kw) if congestion_point.capacity_kw is not None else None
    result = dispatch_optimise(horizon=horizon, sessions=inputs, ordered_reduction_kw=ordered_now,
                               base_load_kw=base_load, capacity_kw=capacity)

    kept = _old_plan_if_still_good(
        old_schedules=old_schedules, sessions=sessions, inputs=inputs, horizon=horizon, avail=avail,
        uncontrolled=uncontrolled_rows, ordered_now=ordered_now, base_load_kw=base_load, capacity_kw=capacity,
        new_peak_kw=result.peak_kw, new_shortfall_kwh=float(result.shortfall_kwh.sum()))
    plan_kw = kept if kept is not None else result.schedule_kw
    shortfall_kwh = result.shortfall_kwh if kept is None else np.array(
        [max(0.0, i.energy_kwh - float(kept[row].sum()) * isp_time.ISP_HOURS) for row, i in enumerate(inputs)])

    latest_order = orders[-1] if orders else None
    profiles = selectors.latest_profiles(session_ids=[s.pk for s in sessions])
    SessionSchedule.objects.filter(session_id__in=[s.pk for s in sessions], is_current=True).update(
        is_current=False)
    new_schedules: list[SessionSchedule] = []
    for row, session in enumerate(sessions):
        old = old_schedules.get(session.pk)
        schedule_start, slots_w = _merged_slots(old, horizon.start, plan_kw[row], session, delivered_by[session.pk])
        new_schedules.append(SessionSchedule(
            session=session, flex_order=old.flex_order if old is not None else latest_order, start=schedule_start,
            slot_power_w=slots_w,
            planned_energy_kwh=Decimal(str(round(sum(slots_w) / 1000 * isp_time.ISP_HOURS, 3))),
            shortfall_kwh=Decimal(str(round(float(shortfall_kwh[row]), 3))),
        ))
    SessionSchedule.objects.bulk_create(new_schedules)

    commands: list[Command] = []
    in_progress = start > current_isp  # `now` lies inside an ISP: the profile starts there
    for row, (session, schedule) in enumerate(zip(sessions, new_schedules, strict=True)):
        profile = profiles.get(session.pk)
        if profile is None and not ordered_now:
            continue  # never steered and nothing to deliver: leave the car alone
        sent_body = profile.request_body if profile is not None else None
        full_w = float(session.max_power_w)
        if session.is_flexible:
            new_limits = profile_limits_w(schedule_kw_row=plan_kw[row], avail_row=avail[row],
                                          max_power_kw=full_w / 1000)
        else:  # opted out or boosted: no cap at all while plugged in, even past the energy we expected
            new_limits = [int(full_w) if plugged else 0 for plugged in avail[row] > 0]
        # Where the CPO has no profile the car may draw its full power.
        sent = [_profile_limit_at(sent_body, horizon.slot_start(slot)) for slot in range(horizon.slots)]
        changed = any(abs(new - (full_w if np.isnan(old) else old)) > _LIMIT_TOLERANCE_W
                      for new, old, plugged in zip(new_limits, sent, avail[row] > 0, strict=True) if plugged)
        limits = list(new_limits)
        if in_progress:
            sent_now = _profile_limit_at(sent_body, now)
            keep_w = full_w if np.isnan(sent_now) or not session.is_flexible else sent_now
            changed = changed or abs(keep_w - (full_w if np.isnan(sent_now) else sent_now)) > _LIMIT_TOLERANCE_W
            limits = [int(keep_w), *limits]
        if changed:
            commands.append(_reoptimised_command(session=session, schedule=schedule, order=latest_order,
                                                 limits=limits, profile_start=current_isp if in_progress else start))
    _outbox_put(commands)

    summary = ReoptimiseSummary(
        congestion_point_id=str(congestion_point.pk),
        reason=reason,
        start=start.isoformat(),
        sessions_scheduled=len(sessions),
        schedules_written=len(new_schedules),
        commands_created=len(commands),
        shortfall_kwh=round(float(shortfall_kwh.sum()), 3),
        deficiency_kw_max=round(max(result.deficiency_kw.values(), default=0.0), 3),
        peak_kw=round(result.peak_kw, 3),
        status=result.status,
        kept_plan=kept is not None,
    )
    audit_record(obj=congestion_point, action="portfolio.reoptimised", actor_label=REOPTIMISE_ACTOR,
                 after={**summary.__dict__, "aggregator": str(aggregator.pk)})
    return summary


# --- sessions, drivers, boost -------------------------------------------------------------------------

OPEN_SESSION_STATUSES = (ChargingSession.Status.PENDING, ChargingSession.Status.ACTIVE)
DRIVER_PREFERENCE_FIELDS = ("usual_departure_time", "min_energy_kwh", "min_energy_by_time", "flex_opt_out",
                            "v2g_allowed", "battery_capacity_kwh")


def driver_for_token(*, aggregator: Participant, token_uid: str) -> Driver | None:
    if not token_uid:
        return None
    token = DriverToken.objects.select_related("driver").filter(aggregator=aggregator, uid=token_uid.upper()).first()
    return token.driver if token is not None else None


def _apply_driver_preferences(session: ChargingSession, driver: Driver | None) -> None:
    """Copy the driver's standing preferences onto one session (in memory; the caller validates and saves)."""
    if driver is None:
        return
    session.flex_opt_out = driver.flex_opt_out
    if session.battery_capacity_kwh is None and driver.battery_capacity_kwh is not None:
        session.battery_capacity_kwh = driver.battery_capacity_kwh
    session.min_energy_kwh, session.min_energy_by = None, None
    if driver.min_energy_kwh is not None and driver.min_energy_by_time is not None:
        due = estimates.next_local_time(after=session.arrival_at, at=driver.min_energy_by_time, min_gap=timedelta(0))
        if due <= session.expected_departure_at:
            # The minimum can never ask for more than the session itself.
            session.min_energy_kwh = min(driver.min_energy_kwh, session.energy_requested_kwh).quantize(
                Decimal("0.001"))
            session.min_energy_by = due


def _validated(session: ChargingSession) -> ChargingSession:
    try:
        session.full_clean(validate_unique=False, validate_constraints=False)
    except DjangoValidationError as error:
        field, messages = next(iter(error.message_dict.items()))
        raise ApplicationError(messages[0], code="invalid_session", field=field) from error
    return session


@transaction.atomic
def charging_session_create(
    *,
    charge_point: ChargePoint,
    cpo_session_id: str,
    arrival_at: datetime,
    max_power_w: int,
    expected_departure_at: datetime | None = None,
    energy_requested_kwh: Decimal | None = None,
    token_uid: str = "",
    battery_capacity_kwh: Decimal | None = None,
    arrival_soc_pct: Decimal | None = None,
    target_soc_pct: Decimal | None = None,
    phases: int | None = None,
    min_current_a: Decimal | None = None,
    v2g_capable: bool = False,
    max_discharge_power_w: int = 0,
    v2g_min_soc_pct: Decimal | None = None,
    status: str = ChargingSession.Status.PENDING,
    source: str = ChargingSession.Source.DRIVER,
) -> ChargingSession:
    """Register a session as a CPO or eMSP reports it, with whatever it knows.

    The driver is found by `token_uid`; energy is taken as given, else derived from a target state of charge
    (battery capacity from the session or the driver's car), else estimated; the departure is taken as given,
    else estimated (aggregator.estimates). The driver's preferences (opt-out, minimum energy by a time) are
    applied. `source` says where given values come from (DRIVER or MEASURED). Estimated values are recorded on
    the session. Does not re-optimise: call charging_session_changed when the session should be planned now.
    """
    aggregator = charge_point.cpo.aggregator
    driver = driver_for_token(aggregator=aggregator, token_uid=token_uid)
    capacity = battery_capacity_kwh if battery_capacity_kwh is not None else (
        driver.battery_capacity_kwh if driver is not None else None)
    energy_source = source
    if energy_requested_kwh is None and target_soc_pct is not None:
        if capacity is None or arrival_soc_pct is None:
            raise ApplicationError("A target state of charge needs the battery capacity and the arrival SoC.",
                                   code="soc_incomplete", field="target_soc_pct")
        energy_requested_kwh = ChargingSession.energy_for_soc(
            battery_capacity_kwh=capacity, arrival_soc_pct=arrival_soc_pct, target_soc_pct=target_soc_pct)
    estimate = estimates.session_estimate(arrival=arrival_at, charge_point=charge_point, driver=driver,
                                          departure=expected_departure_at, energy_kwh=energy_requested_kwh)
    session = ChargingSession(
        charge_point=charge_point, cpo_session_id=cpo_session_id, driver=driver, token_uid=token_uid,
        arrival_at=arrival_at, expected_departure_at=estimate.departure,
        departure_source=source if expected_departure_at is not None else estimate.departure_source,
        energy_requested_kwh=estimate.energy_kwh,
        energy_source=energy_source if energy_requested_kwh is not None else estimate.energy_source,
        battery_capacity_kwh=capacity, arrival_soc_pct=arrival_soc_pct, target_soc_pct=target_soc_pct,
        max_power_w=max_power_w, phases=phases,
        min_current_a=min_current_a if min_current_a is not None else IEC_61851_MIN_CURRENT_A,
        v2g_capable=v2g_capable, max_discharge_power_w=max_discharge_power_w, v2g_min_soc_pct=v2g_min_soc_pct,
        status=status,
    )
    _apply_driver_preferences(session, driver)
    _validated(session).save()
    audit_record(obj=session, action="charging_session.created", actor_label=AGGREGATOR_ACTOR,
                 after={"driver": str(driver.pk) if driver else None, "estimated": session.estimated_values,
                        "expected_departure_at": session.expected_departure_at.isoformat(),
                        "energy_requested_kwh": str(session.energy_requested_kwh)})
    return session


def _is_open(session: ChargingSession, now: datetime) -> bool:
    return session.status in OPEN_SESSION_STATUSES and session.expected_departure_at > now


@transaction.atomic
def charging_session_boost(*, session: ChargingSession, actor: Any = None, actor_label: str = "") -> ChargingSession:
    """The driver's boost button: the session leaves flexibility at once (charges at full power from now on) and
    its congestion point is re-optimised and re-dispatched. Pressing it again changes nothing."""
    locked = ChargingSession.objects.select_for_update(of=("self",)).select_related(
        "charge_point__connection", "charge_point__cpo").get(pk=session.pk)
    now = clock.now()
    if not _is_open(locked, now):
        raise TransitionError(f"Session {locked.cpo_session_id} is {locked.status.lower()} and no longer charging; "
                              "there is nothing to boost.", code="session_not_open")
    if locked.boosted_at is not None:
        return locked
    locked.boosted_at = now
    locked.save(update_fields=["boosted_at", "updated_at"])
    audit_record(obj=locked, action="charging_session.boosted", actor=actor, actor_label=actor_label,
                 before={"boosted_at": None}, after={"boosted_at": now.isoformat()})
    charging_session_changed(session=locked, reason="boost")
    return locked


@transaction.atomic
def driver_create(
    *, aggregator: Participant, reference: str, token_uids: list[str] | None = None, actor: Any = None,
    actor_label: str = "", **preferences: Any,
) -> Driver:
    """A driver of `aggregator` with standing preferences and the tokens that identify their sessions."""
    unknown = sorted(set(preferences) - set(DRIVER_PREFERENCE_FIELDS))
    if unknown:
        raise ApplicationError(f"Unknown preference {unknown[0]}.", code="unknown_field", field=unknown[0])
    if Driver.objects.filter(aggregator=aggregator, reference=reference).exists():
        raise ApplicationError("A driver with this reference exists.", code="duplicate_reference", field="reference")
    driver = Driver(aggregator=aggregator, reference=reference, **preferences)
    _validated_driver(driver).save()
    _tokens_add(driver, token_uids or [])
    audit_record(obj=driver, action="driver.created", actor=actor, actor_label=actor_label,
                 after={**audit_payload(driver, list(DRIVER_PREFERENCE_FIELDS)),
                        "tokens": sorted(t.upper() for t in token_uids or [])})
    return driver


def _validated_driver(driver: Driver) -> Driver:
    try:
        driver.full_clean(validate_unique=False, validate_constraints=False)
    except DjangoValidationError as error:
        field, messages = next(iter(error.message_dict.items()))
        raise ApplicationError(messages[0], code="invalid_preferences", field=field) from error
    return driver


def _tokens_add(driver: Driver, token_uids: list[str]) -> None:
    uids = sorted({uid.strip().upper() for uid in token_uids})
    if any(not uid or len(uid) > 36 for uid in uids):
        raise ApplicationError("A token uid has 1 to 36 characters.", code="invalid_token", field="token_uids")
    taken = DriverToken.objects.filter(aggregator=driver.aggregator, uid__in=uids).exclude(driver=driver)
    if taken.exists():
        raise ApplicationError(f"Token {taken.first().uid} belongs to another driver.",  # type: ignore[union-attr]
                               code="token_in_use", field="token_uids")
    existing = set(driver.tokens.values_list("uid", flat=True))
    DriverToken.objects.bulk_create([DriverToken(aggregator=driver.aggregator, driver=driver, uid=uid)
                                     for uid in uids if uid not in existing])


@transaction.atomic
def driver_preferences_update(
    *, driver: Driver, changes: dict[str, Any], token_uids: list[str] | None = None, actor: Any = None,
    actor_label: str = "",
) -> Driver:
    """Change standing preferences (only the given fields) and add tokens. The new preferences apply to the
    driver's open sessions too: an opt-out, a minimum energy or a usual departure that replaces an estimated one
    takes effect now, and each affected congestion point is re-optimised (once)."""
    unknown = sorted(set(changes) - set(DRIVER_PREFERENCE_FIELDS))
    if unknown:
        raise ApplicationError(f"Unknown preference {unknown[0]}.", code="unknown_field", field=unknown[0])
    locked = Driver.objects.select_for_update().get(pk=driver.pk)
    before = audit_payload(locked, list(DRIVER_PREFERENCE_FIELDS))
    for name, value in changes.items():
        setattr(locked, name, value)
    _validated_driver(locked).save()
    if token_uids:
        _tokens_add(locked, token_uids)
    after = audit_payload(locked, list(DRIVER_PREFERENCE_FIELDS))
    audit_record(obj=locked, action="driver.preferences_changed", actor=actor, actor_label=actor_label,
                 before=before, after={**after, "tokens_added": sorted(t.upper() for t in token_uids or [])})
    if before != after:
        _driver_sessions_refresh(locked, v2g_changed=before["v2g_allowed"] != after["v2g_allowed"])
    return locked


def _driver_sessions_refresh(driver: Driver, *, v2g_changed: bool = False) -> None:
    now = clock.now()
    open_sessions = ChargingSession.objects.select_for_update(of=("self",)).select_related(
        "charge_point__connection", "charge_point__cpo").filter(
        driver=driver, status__in=OPEN_SESSION_STATUSES, expected_departure_at__gt=now)
    points_done: set[Any] = set()
    for session in open_sessions:
        before = audit_payload(session, ["expected_departure_at", "departure_source", "flex_opt_out",
                                         "min_energy_kwh", "min_energy_by", "battery_capacity_kwh"])
        if session.departure_source in ChargingSession.ESTIMATED_SOURCES and driver.usual_departure_time:
            # The next such time from now: a car still plugged in after its usual time leaves the day after.
            session.expected_departure_at = estimates.next_local_time(after=max(session.arrival_at, now),
                                                                      at=driver.usual_departure_time)
            session.departure_source = ChargingSession.Source.DRIVER
        _apply_driver_preferences(session, driver)
        after = audit_payload(session, list(before))
        if after == before and not (v2g_changed and session.v2g_capable):
            continue  # nothing this session's plan depends on changed
        _validated(session).save()
        audit_record(obj=session, action="charging_session.preferences_applied", actor_label=AGGREGATOR_ACTOR,
                     before=before, after=after)
        point = session.charge_point.connection.congestion_point_id
        if point not in points_done:
            points_done.add(point)
            charging_session_changed(session=session, reason="driver_preferences")


@transaction.atomic
def charging_session_targets_set(
    *, session: ChargingSession, expected_departure_at: datetime | None = None,
    energy_requested_kwh: Decimal | None = None, target_soc_pct: Decimal | None = None,
    arrival_soc_pct: Decimal | None = None, battery_capacity_kwh: Decimal | None = None, actor: Any = None,
    actor_label: str = "",
) -> ChargingSession:
    """The driver (through the eMSP app) says when the car leaves and/or how much it needs, in kWh or as a
    target state of charge. Given values replace estimates (source DRIVER); the driver's minimum energy is
    re-applied; the session's congestion point is re-optimised."""
    locked = ChargingSession.objects.select_for_update(of=("self",)).select_related(
        "charge_point__connection", "charge_point__cpo", "driver").get(pk=session.pk)
    now = clock.now()
    if not _is_open(locked, now):
        raise TransitionError(f"Session {locked.cpo_session_id} is {locked.status.lower()} and no longer charging.",
                              code="session_not_open")
    if energy_requested_kwh is not None and target_soc_pct is not None:
        raise ApplicationError("Give the energy in kWh or as a target state of charge, not both.",
                               code="energy_twice", field="target_soc_pct")
    before = audit_payload(locked, ["expected_departure_at", "departure_source", "energy_requested_kwh",
                                    "energy_source", "target_soc_pct", "arrival_soc_pct", "battery_capacity_kwh"])
    if expected_departure_at is not None:
        if expected_departure_at <= now:
            raise ApplicationError("The departure must lie in the future.", code="departure_in_past",
                                   field="expected_departure_at")
        locked.expected_departure_at, locked.departure_source = expected_departure_at, ChargingSession.Source.DRIVER
    if battery_capacity_kwh is not None:
        locked.battery_capacity_kwh = battery_capacity_kwh
    if arrival_soc_pct is not None:
        locked.arrival_soc_pct = arrival_soc_pct
    if target_soc_pct is not None:
        capacity = locked.battery_capacity_kwh or (locked.driver.battery_capacity_kwh if locked.driver else None)
        if capacity is None or locked.arrival_soc_pct is None:
            raise ApplicationError("A target state of charge needs the battery capacity and the arrival SoC.",
                                   code="soc_incomplete", field="target_soc_pct")
        locked.battery_capacity_kwh, locked.target_soc_pct = capacity, target_soc_pct
        energy_requested_kwh = ChargingSession.energy_for_soc(
            battery_capacity_kwh=capacity, arrival_soc_pct=locked.arrival_soc_pct, target_soc_pct=target_soc_pct)
    elif energy_requested_kwh is not None:
        locked.target_soc_pct = None  # a kWh figure replaces an earlier target
    if energy_requested_kwh is not None:
        locked.energy_requested_kwh, locked.energy_source = energy_requested_kwh, ChargingSession.Source.DRIVER
    _apply_driver_preferences(locked, locked.driver)
    _validated(locked).save()
    after = audit_payload(locked, list(before))
    audit_record(obj=locked, action="charging_session.targets_set", actor=actor, actor_label=actor_label,
                 before=before, after=after)
    if after != before:
        charging_session_changed(session=locked, reason="driver_targets")
    return locked
