"""Reads of market data, always scoped to the participant asking (tenant walls live here)."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet

from common import time as clock
from common.sql import db_value, instance_from_row, instances_from_rows, seed_prefetch_cache, select_columns
from market.models import (
    AggregatorConnection,
    CongestionPoint,
    Connection,
    DPrognosis,
    FlexOffer,
    FlexOrder,
    FlexRequest,
    FlexRequestIsp,
    Market,
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


@functools.cache
def _request_for_offer_sql() -> str:
    """SQL text of flex_request_for_aggregator, built once from the models' metadata (so it follows the schema).

    Only table and column names come from code; every value is a query parameter."""
    request, point, market = FlexRequest._meta, CongestionPoint._meta, Market._meta
    representation, connection_meta, prognosis = AggregatorConnection._meta, Connection._meta, DPrognosis._meta
    return (
        f"SELECT {select_columns(FlexRequest, 'fr')}, {select_columns(CongestionPoint, 'cp')}, "  # noqa: S608
        f"{select_columns(Market, 'mk')}, "
        # Represents a connection behind the point on the request's day: the rule of _valid_on.
        f"EXISTS (SELECT 1 FROM {representation.db_table} ac JOIN {connection_meta.db_table} c "
        f"ON c.ean = ac.connection_id WHERE ac.aggregator_id = %s AND c.congestion_point_id = fr.congestion_point_id "
        f"AND ac.valid_from <= fr.period AND (ac.valid_until IS NULL OR ac.valid_until > fr.period)), "
        # d_prognosis_current's id.
        f"(SELECT dp.id FROM {prognosis.db_table} dp WHERE dp.aggregator_id = %s "
        f"AND dp.congestion_point_id = fr.congestion_point_id AND dp.period = fr.period AND dp.status = %s "
        f"ORDER BY dp.revision DESC LIMIT 1) "
        f"FROM {request.db_table} fr JOIN {point.db_table} cp ON cp.id = fr.congestion_point_id "
        f"JOIN {market.db_table} mk ON mk.id = cp.market_id "
        f"WHERE fr.id = %s AND fr.status <> %s"
    )


@functools.cache
def _request_isps_sql() -> str:
    table = FlexRequestIsp._meta.db_table
    return f"SELECT {select_columns(FlexRequestIsp, 'ri')} FROM {table} ri WHERE ri.flex_request_id = %s ORDER BY ri.isp"  # noqa: S608


# ISPs of requests past DRAFT, per (database, request id), as instances shared by every read in the process. They
# never change once a request leaves DRAFT (the admin edits ISPs of drafts only; a revision is a new request), and
# every offer on a request reads them, so each process reads and builds them once. Read-only: their `flex_request`
# is not set (a shared instance would hold one caller's request; reading it queries). Bounded: emptied when full.
_OPEN_REQUEST_ISPS: dict[tuple[str, uuid.UUID], tuple[FlexRequestIsp, ...]] = {}
_OPEN_REQUEST_ISPS_MAX = 1024


def _open_request_isps(request_id: uuid.UUID, db_request_id: Any) -> tuple[FlexRequestIsp, ...]:
    """The ISPs of a request that is not a DRAFT (the caller has checked), read once per process."""
    key = (connection.settings_dict["NAME"], request_id)
    isps = _OPEN_REQUEST_ISPS.get(key)
    if isps is None:
        with connection.cursor() as cursor:
            cursor.execute(_request_isps_sql(), [db_request_id])
            isps = tuple(instances_from_rows(FlexRequestIsp, cursor.fetchall(), alias="ri", connection=connection))
        if len(_OPEN_REQUEST_ISPS) >= _OPEN_REQUEST_ISPS_MAX:
            _OPEN_REQUEST_ISPS.clear()
        _OPEN_REQUEST_ISPS[key] = isps
    return isps


def flex_request_for_aggregator(*, aggregator: Participant, pk: uuid.UUID | str) -> FlexRequest | None:
    """One request if the aggregator may see it (it represents connections behind the point that day), else None.

    Same rule as flex_requests_visible_to_aggregator. This runs on every offer submission, so it is ONE hand-written
    statement (common.sql: the ORM compiles this query with its two sub-selects in several times the time the
    database needs to run it). It also answers what the offer service asks next: the request comes back with its
    congestion point, market and ISPs loaded and with `seen_by` (the aggregator's representation and current
    D-prognosis id; see represents_for_request and baseline_id_for_request).
    """
    try:
        request_id = uuid.UUID(str(pk))
    except ValueError:
        return None
    params = [
        db_value(Participant, "id", aggregator.pk, connection), db_value(Participant, "id", aggregator.pk, connection),
        DPrognosis.Status.ACCEPTED, db_value(FlexRequest, "id", request_id, connection), FlexRequest.Status.DRAFT,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_request_for_offer_sql(), params)
        row = cursor.fetchone()
    if row is None:
        return None
    flex_request, offset = instance_from_row(FlexRequest, row, offset=0, alias="fr", connection=connection)
    point, offset = instance_from_row(CongestionPoint, row, offset=offset, alias="cp", connection=connection)
    point.market, offset = instance_from_row(Market, row, offset=offset, alias="mk", connection=connection)
    flex_request.congestion_point = point
    represented, baseline_id = bool(row[offset]), row[offset + 1]
    if not represented:
        return None
    if baseline_id is not None and not isinstance(baseline_id, uuid.UUID):
        baseline_id = uuid.UUID(str(baseline_id))  # SQLite answers hex text
    flex_request.seen_by = RequestView(aggregator_id=aggregator.pk, baseline_id=baseline_id)  # type: ignore[attr-defined]
    # The offer service checks every option against them.
    seed_prefetch_cache(flex_request, "isps", list(_open_request_isps(request_id, params[3])))
    return flex_request


@dataclass(frozen=True)
class RequestView:
    """What `flex_request_for_aggregator` learnt about one aggregator's position on a request, in the same read."""

    aggregator_id: uuid.UUID  # who asked: the read returns a request only to an aggregator that represents it
    baseline_id: uuid.UUID | None


def _seen_by(flex_request: FlexRequest | None, aggregator: Participant, point: CongestionPoint,
             day: date) -> RequestView | None:
    """The request's own read, if it was made for this aggregator and the request is on this point and day."""
    view = getattr(flex_request, "seen_by", None)
    if not isinstance(view, RequestView) or view.aggregator_id != aggregator.pk or flex_request is None:
        return None
    return view if flex_request.congestion_point_id == point.pk and flex_request.period == day else None


def represents_for_request(*, aggregator: Participant, flex_request: FlexRequest | None,
                           congestion_point: CongestionPoint, day: date) -> bool:
    """aggregator_represents, answered from the request's own read when that read was made for this aggregator,
    point and day (the offer hot path: that read returns a request only to an aggregator that represents it);
    otherwise one query."""
    if _seen_by(flex_request, aggregator, congestion_point, day) is not None:
        return True
    return aggregator_represents(aggregator=aggregator, congestion_point=congestion_point, day=day)


def baseline_id_for_request(*, aggregator: Participant, flex_request: FlexRequest | None,
                            congestion_point: CongestionPoint, period: date) -> uuid.UUID | None:
    """Id of d_prognosis_current, from the request's own read when it was made for this aggregator, point and day."""
    view = _seen_by(flex_request, aggregator, congestion_point, period)
    if view is not None:
        return view.baseline_id
    current = d_prognosis_current(aggregator=aggregator, congestion_point=congestion_point, period=period)
    return current.pk if current is not None else None


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
