"""Reads of the EV portfolio."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import QuerySet

from aggregator.models import ChargePoint, ChargingProfileCommand, ChargingSession, Driver, SessionSchedule
from common import isp as isp_time
from market import selectors as market_selectors
from market.models import CongestionPoint, FlexOrder, Participant

PLANNABLE_STATUSES = (ChargingSession.Status.PENDING, ChargingSession.Status.ACTIVE)


def portfolio_sessions(
    *, aggregator: Participant, congestion_point: CongestionPoint, period: date
) -> QuerySet[ChargingSession]:
    """Sessions we may steer that overlap the market day: at our CPOs' charge points on connections we
    represent on that day behind the congestion point, not yet ended."""
    connections = market_selectors.represented_connections(
        aggregator=aggregator, congestion_point=congestion_point, day=period
    )
    return (
        ChargingSession.objects.filter(
            charge_point__cpo__aggregator=aggregator,
            charge_point__cpo__is_active=True,
            charge_point__connection__in=connections,
            status__in=PLANNABLE_STATUSES,
            arrival_at__lt=isp_time.day_end(period),
            expected_departure_at__gt=isp_time.day_start(period),
        )
        .select_related("charge_point", "charge_point__cpo")
        .order_by("arrival_at", "pk")
    )


def reoptimisable_sessions(
    *, aggregator: Participant, congestion_point: CongestionPoint, now: datetime
) -> QuerySet[ChargingSession]:
    """Sessions behind the point a re-optimisation from `now` plans: ours, not ended, still expected after `now`
    and arriving within the next two market days (what orders and prognoses can cover)."""
    day = isp_time.market_day_of(now)
    connections = market_selectors.represented_connections(
        aggregator=aggregator, congestion_point=congestion_point, day=day
    )
    return (
        ChargingSession.objects.filter(
            charge_point__cpo__aggregator=aggregator,
            charge_point__cpo__is_active=True,
            charge_point__connection__in=connections,
            status__in=PLANNABLE_STATUSES,
            arrival_at__lt=isp_time.day_end(day + timedelta(days=1)),
            expected_departure_at__gt=now,
        )
        .select_related("charge_point", "charge_point__cpo", "driver")
        .order_by("arrival_at", "pk")
    )


def current_schedules(*, session_ids: list[Any]) -> dict[Any, SessionSchedule]:
    return {schedule.session_id: schedule
            for schedule in SessionSchedule.objects.filter(session_id__in=session_ids, is_current=True)}


def latest_profiles(*, session_ids: list[Any]) -> dict[Any, ChargingProfileCommand]:
    """Per session, the newest SET command that is (or is about to be) the profile at its CPO."""
    gone = [ChargingProfileCommand.Status.FAILED, ChargingProfileCommand.Status.SUPERSEDED,
            ChargingProfileCommand.Status.REJECTED, ChargingProfileCommand.Status.NOT_SUPPORTED,
            ChargingProfileCommand.Status.UNKNOWN_SESSION, ChargingProfileCommand.Status.RESULT_REJECTED]
    latest: dict[Any, ChargingProfileCommand] = {}
    for command in (ChargingProfileCommand.objects.filter(session_id__in=session_ids,
                                                          kind=ChargingProfileCommand.Kind.SET)
                    .exclude(status__in=gone).order_by("created_at")):
        latest[command.session_id] = command
    return latest


def live_orders_from(
    *, aggregator: Participant, congestion_point: CongestionPoint, start: datetime
) -> list[FlexOrder]:
    """Our placed or dispatched orders on the point for the market days from `start`'s on."""
    return list(
        FlexOrder.objects.filter(
            aggregator=aggregator, congestion_point=congestion_point,
            period__gte=isp_time.market_day_of(start),
            status__in=[FlexOrder.Status.PLACED, FlexOrder.Status.DISPATCHED],
        ).prefetch_related("isps").order_by("created_at")
    )


def aggregator_has_charge_points(*, aggregator: Participant) -> bool:
    return ChargePoint.objects.filter(cpo__aggregator=aggregator).exists()


def commands_for_order(*, flex_order: FlexOrder) -> QuerySet[ChargingProfileCommand]:
    return ChargingProfileCommand.objects.filter(flex_order=flex_order).select_related("session", "cpo")


def drivers_of(*, aggregator: Participant) -> QuerySet[Driver]:
    return Driver.objects.filter(aggregator=aggregator).prefetch_related("tokens")


def sessions_of(*, aggregator: Participant) -> QuerySet[ChargingSession]:
    """Every session at our CPOs' charge points (the tenant wall of the sessions API)."""
    return ChargingSession.objects.filter(charge_point__cpo__aggregator=aggregator).select_related(
        "charge_point", "charge_point__connection__congestion_point")
