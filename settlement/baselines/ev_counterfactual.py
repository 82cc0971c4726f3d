"""The EV counterfactual baseline: what the sessions would have drawn uncontrolled (from session data).

baseline(ISP) = metered load - what the sessions drew under their schedules + what they would have drawn
charging at full power from arrival (aggregator.optimiser.uncontrolled_kw). The household part of the metered
load stays as it was, so the realised flex is exactly the EV load the schedules moved. The scheduled draw is
the dispatched plan (OCPI profiles are limits the CPO applied; no per-session meter values are stored yet).
`session_profiles` is also what driver rewards are allocated from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

from django.db.models import Q

from aggregator.models import ChargingSession, SessionSchedule
from aggregator.optimiser import Horizon, SessionInput, uncontrolled_kw
from common import isp as isp_time
from common.exceptions import ApplicationError
from market.models import AggregatorConnection, CongestionPoint, Participant
from settlement.baselines.base import BaselineMethod, BaselineRequest, BaselineResult, to_w


@dataclass(frozen=True)
class SessionProfile:
    session: ChargingSession
    uncontrolled_w: dict[int, Decimal]  # ISP -> average W at full power from arrival
    scheduled_w: dict[int, Decimal]  # ISP -> average W of its current schedule (= uncontrolled if never scheduled)


def delivering_sessions(*, aggregator: Participant, congestion_point: CongestionPoint,
                        period: date) -> list[ChargingSession]:
    """Sessions at the aggregator's charge points on connections it represents behind the point that overlap
    the market day (ended ones included: settlement looks back)."""
    return sessions_by_group(groups=[(aggregator.pk, congestion_point.pk)], period=period).get(
        (aggregator.pk, congestion_point.pk), [])


def sessions_by_group(*, groups: Sequence[tuple[Any, Any]], period: date) -> dict[tuple[Any, Any], list[ChargingSession]]:
    """delivering_sessions for many (aggregator id, point id) groups of one day in two queries."""
    if not groups:
        return {}
    aggregators, points = {g[0] for g in groups}, {g[1] for g in groups}
    sessions = list(
        ChargingSession.objects.filter(
            charge_point__cpo__aggregator_id__in=aggregators, charge_point__connection__congestion_point_id__in=points,
            arrival_at__lt=isp_time.day_end(period), expected_departure_at__gt=isp_time.day_start(period),
        ).exclude(status=ChargingSession.Status.INVALID)
        .select_related("charge_point__cpo", "charge_point__connection").order_by("arrival_at", "pk")
    )
    if not sessions:
        return {}
    represented = set(AggregatorConnection.objects.filter(
        Q(valid_until__isnull=True) | Q(valid_until__gt=period), valid_from__lte=period,
        connection_id__in={s.charge_point.connection_id for s in sessions},
    ).values_list("aggregator_id", "connection_id"))
    wanted = set(groups)
    found: dict[tuple[Any, Any], list[ChargingSession]] = {}
    for session in sessions:
        aggregator_id = session.charge_point.cpo.aggregator_id
        key = (aggregator_id, session.charge_point.connection.congestion_point_id)
        if key in wanted and (aggregator_id, session.charge_point.connection_id) in represented:
            found.setdefault(key, []).append(session)
    return found


def _input(session: ChargingSession) -> SessionInput:
    departure = session.expected_departure_at
    if session.ended_at is not None and session.arrival_at < session.ended_at < departure:
        departure = session.ended_at  # the car left early: it could not have drawn anything after that
    return SessionInput(key=str(session.pk), arrival=session.arrival_at, departure=departure,
                        energy_kwh=float(session.energy_requested_kwh), max_power_kw=session.max_power_w / 1000)


def session_profiles(*, aggregator: Participant, congestion_point: CongestionPoint, period: date,
                     isps: Sequence[int]) -> list[SessionProfile]:
    sessions = delivering_sessions(aggregator=aggregator, congestion_point=congestion_point, period=period)
    return profiles_of(sessions=sessions, period=period, isps=isps)


def profiles_of(*, sessions: Sequence[ChargingSession], period: date, isps: Sequence[int]) -> list[SessionProfile]:
    """Uncontrolled and scheduled W per ISP for each session (one schedule query)."""
    if not sessions:
        return []
    inputs = [_input(session) for session in sessions]
    horizon = Horizon.covering(start=min(isp_time.day_start(period), *(i.arrival for i in inputs)), sessions=inputs,
                               min_end=isp_time.day_end(period))
    uncontrolled = uncontrolled_kw(horizon=horizon, sessions=inputs)
    schedules = {s.session_id: s for s in SessionSchedule.objects.filter(session__in=sessions, is_current=True)}
    profiles = []
    for row, session in enumerate(sessions):
        free = {isp: Decimal(str(round(float(uncontrolled[row, horizon.slot_of(isp_time.isp_start(period, isp))])
                                       * 1000, 3))) for isp in isps}
        schedule = schedules.get(session.pk)
        planned = dict(free)
        if schedule is not None:
            for isp in isps:
                slot = (isp_time.isp_start(period, isp) - schedule.start) // isp_time.ISP
                planned[isp] = Decimal(schedule.slot_power_w[slot]) if 0 <= slot < len(schedule.slot_power_w) \
                    else Decimal(0)
        profiles.append(SessionProfile(session=session, uncontrolled_w=free, scheduled_w=planned))
    return profiles


class EvCounterfactual(BaselineMethod):
    default_parameters: ClassVar[dict[str, Any]] = {}

    def compute(self, request: BaselineRequest, parameters: dict[str, Any]) -> BaselineResult:
        missing = sorted(set(request.isps) - set(request.measured_w))
        if missing:
            raise ApplicationError(f"EV counterfactual needs the metered load of ISPs {missing[:10]}.",
                                   code="meter_data_incomplete", field="flex_order")
        profiles = session_profiles(aggregator=request.aggregator, congestion_point=request.congestion_point,
                                    period=request.period, isps=request.isps)
        values = {}
        for isp in request.isps:
            moved = sum((p.uncontrolled_w[isp] - p.scheduled_w[isp] for p in profiles), Decimal(0))
            values[isp] = to_w(request.measured_w[isp] + moved)
        return BaselineResult(values_w=values, inputs={
            "sessions": len(profiles), "scheduled": sum(1 for p in profiles if p.scheduled_w != p.uncontrolled_w),
            "source": "current session schedules vs uncontrolled charging from arrival"})
