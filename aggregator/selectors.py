"""Reads of the EV portfolio."""

from __future__ import annotations

from datetime import date

from django.db.models import QuerySet

from aggregator.models import ChargePoint, ChargingProfileCommand, ChargingSession
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


def aggregator_has_charge_points(*, aggregator: Participant) -> bool:
    return ChargePoint.objects.filter(cpo__aggregator=aggregator).exists()


def commands_for_order(*, flex_order: FlexOrder) -> QuerySet[ChargingProfileCommand]:
    return ChargingProfileCommand.objects.filter(flex_order=flex_order).select_related("session", "cpo")
