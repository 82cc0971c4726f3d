"""Reads of market data, always scoped to the participant asking (tenant walls live here)."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from django.db.models import Exists, OuterRef, Q, QuerySet

from common import time as clock
from market.models import (
    AggregatorConnection,
    CongestionPoint,
    Connection,
    DPrognosis,
    FlexOffer,
    FlexOrder,
    FlexRequest,
    Participant,
)

OPEN_REQUEST_STATUSES = (FlexRequest.Status.OPEN, FlexRequest.Status.PARTIALLY_ORDERED)


def _valid_on(day: date | object, prefix: str = "") -> Q:
    """Representation rows valid on `day` (a date or an F() expression)."""
    return Q(**{f"{prefix}valid_from__lte": day}) & (
        Q(**{f"{prefix}valid_until__isnull": True}) | Q(**{f"{prefix}valid_until__gt": day})
    )


def represented_connections(*, aggregator: Participant, congestion_point: CongestionPoint, day: date) -> QuerySet[Connection]:
    """Connections on the congestion point that the aggregator represents on the day."""
    representations = AggregatorConnection.objects.filter(_valid_on(day), aggregator=aggregator)
    return Connection.objects.filter(
        congestion_point=congestion_point, ean__in=representations.values("connection_id")
    ).order_by("ean")


def aggregator_represents(*, aggregator: Participant, congestion_point: CongestionPoint, day: date) -> bool:
    return represented_connections(aggregator=aggregator, congestion_point=congestion_point, day=day).exists()


def congestion_points_for_dso(*, dso: Participant) -> QuerySet[CongestionPoint]:
    return CongestionPoint.objects.filter(dso=dso).order_by("name")


def congestion_points_for_aggregator(*, aggregator: Participant, day: date) -> QuerySet[CongestionPoint]:
    representations = AggregatorConnection.objects.filter(_valid_on(day), aggregator=aggregator)
    return CongestionPoint.objects.filter(
        connections__ean__in=representations.values("connection_id")
    ).distinct().order_by("name")


def flex_requests_visible_to_aggregator(*, aggregator: Participant) -> QuerySet[FlexRequest]:
    """Requests (any status) on congestion points where the aggregator represents connections on the request's day."""
    represented = AggregatorConnection.objects.filter(
        _valid_on(OuterRef("period")),
        aggregator=aggregator,
        connection__congestion_point=OuterRef("congestion_point"),
    )
    return (
        FlexRequest.objects.exclude(status=FlexRequest.Status.DRAFT)
        .filter(Exists(represented))
        .select_related("congestion_point__market", "congestion_point__dso", "dso")
        .prefetch_related("isps")
    )


def flex_request_for_aggregator(*, aggregator: Participant, pk: uuid.UUID | str) -> FlexRequest | None:
    """One request if the aggregator may see it (it represents connections behind the point that day), else None.

    Same rule as flex_requests_visible_to_aggregator, as two plain indexed lookups: this runs on every offer
    submission, where the correlated EXISTS costs more to build and plan than it saves.
    """
    flex_request = (
        FlexRequest.objects.exclude(status=FlexRequest.Status.DRAFT)
        .select_related("congestion_point__market", "congestion_point__dso", "dso")
        .filter(pk=pk)
        .first()
    )
    if flex_request is None or not aggregator_represents(
        aggregator=aggregator, congestion_point=flex_request.congestion_point, day=flex_request.period
    ):
        return None
    return flex_request


def flex_requests_open_for_aggregator(*, aggregator: Participant, at: datetime | None = None) -> QuerySet[FlexRequest]:
    """Open, unexpired requests the aggregator can answer."""
    return flex_requests_visible_to_aggregator(aggregator=aggregator).filter(
        status__in=OPEN_REQUEST_STATUSES, expires_at__gt=at or clock.now()
    )


def flex_requests_for_dso(*, dso: Participant) -> QuerySet[FlexRequest]:
    return FlexRequest.objects.filter(dso=dso).select_related("congestion_point").prefetch_related("isps")


OFFER_RELATED = ("congestion_point", "aggregator", "flex_request", "contract")
OFFER_PREFETCH = ("options__isps",)


def flex_offers_for_aggregator(*, aggregator: Participant) -> QuerySet[FlexOffer]:
    return FlexOffer.objects.filter(aggregator=aggregator).select_related(*OFFER_RELATED).prefetch_related(
        *OFFER_PREFETCH)


def flex_offers_for_dso(*, dso: Participant) -> QuerySet[FlexOffer]:
    """Offers a DSO may see: those on its own congestion points."""
    return FlexOffer.objects.filter(congestion_point__dso=dso).select_related(*OFFER_RELATED).prefetch_related(
        *OFFER_PREFETCH)


def flex_orders_for_aggregator(*, aggregator: Participant) -> QuerySet[FlexOrder]:
    return FlexOrder.objects.filter(aggregator=aggregator).select_related("congestion_point", "dso").prefetch_related(
        "isps")


def flex_orders_for_dso(*, dso: Participant) -> QuerySet[FlexOrder]:
    return FlexOrder.objects.filter(dso=dso).select_related("congestion_point", "aggregator").prefetch_related("isps")


def d_prognoses_for_aggregator(*, aggregator: Participant) -> QuerySet[DPrognosis]:
    return DPrognosis.objects.filter(aggregator=aggregator).select_related("congestion_point").prefetch_related("isps")


def d_prognosis_current(*, aggregator: Participant, congestion_point: CongestionPoint, period: date) -> DPrognosis | None:
    """The aggregator's latest accepted D-prognosis for the point and day (the default settlement baseline)."""
    return (
        DPrognosis.objects.filter(
            aggregator=aggregator,
            congestion_point=congestion_point,
            period=period,
            status=DPrognosis.Status.ACCEPTED,
        )
        .order_by("-revision")
        .first()
    )


def flex_request_ordered_power_by_isp(*, flex_request: FlexRequest) -> dict[int, int]:
    """Sum of ordered power (W) per ISP over all orders placed on offers answering the request."""
    totals: dict[int, int] = {}
    orders = FlexOrder.objects.filter(flex_offer__flex_request=flex_request).prefetch_related("isps")
    for order in orders:
        for row in order.isps.all():
            totals[row.isp] = totals.get(row.isp, 0) + row.power_w
    return totals
