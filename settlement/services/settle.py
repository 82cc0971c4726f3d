"""Settlement writes: meter data in, and orders settled into per-ISP lines and statements.

Per order and ISP (reduction orders; USEF D-prognosis baseline, see UFTP-BRIEF 9):
    measured_w   = (sum of kWh imported - exported by the aggregator's connections on the point) / ISP hours
    realised_w   = flex realised in the ordered direction = baseline_w - measured_w for a reduction
    delivered_w  = realised_w x this order's share of all flex the aggregator was ordered on that ISP
    paid_eur     = min(max(0, delivered), |ordered|) in kWh x unit price,
    unit price   = order price / ordered kWh (the order price buys the whole ordered energy).
Money is Decimal, rounded to cents per line; a settlement's total is the sum of its lines and a
statement's total the sum of its settlements, so nothing is lost to rounding between levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction
from django.db.models import Count, Sum

from common import isp as isp_time
from common import time as clock
from common.exceptions import ApplicationError
from market import selectors as market_selectors
from market import services as market_services
from market.models import FlexOrder, Participant
from settlement.models import MeterReading, OrderSettlement, SettlementLine, Statement

CENT = Decimal("0.01")
KWH_PER_WH = Decimal("0.001")
ISP_HOURS = Decimal(isp_time.ISP_MINUTES) / Decimal(60)
SETTLEABLE = (FlexOrder.Status.PLACED, FlexOrder.Status.DISPATCHED, FlexOrder.Status.SETTLED)



def _measured_w_by_isp(*, flex_order: FlexOrder, isps: list[int]) -> dict[int, Decimal]:
    """Average net power (W) per ISP of the aggregator's connections on the point; error if any reading is missing."""
    connections = list(
        market_selectors.represented_connections(
            aggregator=flex_order.aggregator, congestion_point=flex_order.congestion_point, day=flex_order.period
        ).values_list("ean", flat=True)
    )
    if not connections:
        raise ApplicationError("The aggregator represents no connection on this point that day.",
                               code="no_connections", field="flex_order")
    starts = {isp_time.isp_start(flex_order.period, isp): isp for isp in isps}
    rows = (
        MeterReading.objects.filter(connection_id__in=connections, isp_start__in=list(starts))
        .values("isp_start")
        .annotate(kwh_in=Sum("kwh_import"), kwh_out=Sum("kwh_export"), readings=Count("id"))
    )
    measured: dict[int, Decimal] = {}
    for row in rows:
        if row["readings"] != len(connections):
            continue  # incomplete ISP: reported below
        net_kwh = row["kwh_in"] - row["kwh_out"]
        measured[starts[row["isp_start"]]] = net_kwh / ISP_HOURS / KWH_PER_WH
    missing = sorted(set(isps) - set(measured))
    if missing:
        raise ApplicationError(
            f"Meter data incomplete for order {flex_order.order_reference}: ISPs {missing[:10]} lack readings "
            f"for some of its {len(connections)} connections.",
            code="meter_data_incomplete",
            field="flex_order",
        )
    return measured


def _ordered_w_by_isp(*, flex_order: FlexOrder) -> dict[tuple[int, int], int]:
    """|Ordered W| per (ISP, direction) over every live order of this aggregator on the point and day."""
    totals: dict[tuple[int, int], int] = {}
    orders = FlexOrder.objects.filter(
        aggregator=flex_order.aggregator, congestion_point=flex_order.congestion_point, period=flex_order.period,
        status__in=SETTLEABLE,
    ).prefetch_related("isps")
    for order in orders:
        for row in order.isps.all():
            key = (row.isp, -1 if row.power_w < 0 else 1)
            totals[key] = totals.get(key, 0) + abs(row.power_w)
    return totals


def _order_settlement_build(*, flex_order: FlexOrder, statement: Statement) -> OrderSettlement:
    if flex_order.d_prognosis is None:
        raise ApplicationError("The order has no D-prognosis baseline.", code="no_baseline", field="flex_order")
    ordered = {row.isp: row.power_w for row in flex_order.isps.all()}
    baseline = {row.isp: row.power_w for row in flex_order.d_prognosis.isps.filter(isp__in=list(ordered))}
    measured = _measured_w_by_isp(flex_order=flex_order, isps=list(ordered))
    ordered_on_isp = _ordered_w_by_isp(flex_order=flex_order)
    ordered_kwh_total = sum((abs(Decimal(w)) * ISP_HOURS * KWH_PER_WH for w in ordered.values()), Decimal(0))
    if ordered_kwh_total == 0:
        raise ApplicationError("The order has no ordered energy.", code="empty_order", field="flex_order")
    unit_price = flex_order.price_eur / ordered_kwh_total
    settlement = OrderSettlement.objects.create(
        statement=statement, flex_order=flex_order, d_prognosis=flex_order.d_prognosis,
        ordered_kwh=Decimal(0), delivered_kwh=Decimal(0), unit_price_eur_per_kwh=unit_price.quantize(Decimal("1e-6")),
        total_eur=Decimal(0),
    )
    lines: list[SettlementLine] = []
    delivered_total = Decimal(0)
    for isp, ordered_w in sorted(ordered.items()):
        direction = -1 if ordered_w < 0 else 1
        measured_w = measured[isp]
        realised_w = direction * (measured_w - Decimal(baseline[isp]))
        # Orders overlapping on an ISP share what was realised there, pro rata to what each ordered,
        # so the same delivered flex is never paid twice (UFTP-BRIEF 9.3: F is the flex ordered on the ISP).
        delivered_w = realised_w * Decimal(abs(ordered_w)) / Decimal(ordered_on_isp[(isp, direction)])
        ordered_kwh = abs(Decimal(ordered_w)) * ISP_HOURS * KWH_PER_WH
        delivered_kwh = max(Decimal(0), delivered_w) * ISP_HOURS * KWH_PER_WH
        paid = (min(delivered_kwh, ordered_kwh) * unit_price).quantize(CENT, rounding=ROUND_HALF_UP)
        delivered_total += min(delivered_kwh, ordered_kwh)
        lines.append(SettlementLine(
            order_settlement=settlement, isp=isp, isp_start=isp_time.isp_start(flex_order.period, isp),
            baseline_w=baseline[isp], measured_w=int(measured_w.to_integral_value(rounding=ROUND_HALF_UP)),
            ordered_w=ordered_w, delivered_w=int(delivered_w.to_integral_value(rounding=ROUND_HALF_UP)),
            paid_eur=paid,
        ))
    SettlementLine.objects.bulk_create(lines)
    settlement.ordered_kwh = ordered_kwh_total.quantize(Decimal("0.001"))
    settlement.delivered_kwh = delivered_total.quantize(Decimal("0.001"))
    settlement.total_eur = sum((line.paid_eur for line in lines), Decimal(0))
    settlement.save(update_fields=["ordered_kwh", "delivered_kwh", "total_eur", "updated_at"])
    return settlement


@dataclass(frozen=True)
class StatementIssueResult:
    statement: Statement | None
    settled_orders: int
    waiting_orders: dict[str, str]  # order reference -> why it could not be settled yet


@transaction.atomic
def statement_issue(
    *, dso: Participant, aggregator: Participant, period_start: date, period_end: date
) -> StatementIssueResult:
    """Settle every order between the pair in [period_start, period_end] whose meter data is complete and
    issue a statement. An earlier statement for the same pair and period is superseded by a new version
    (e.g. when late meter data lets more orders settle); orders with incomplete data wait for the next run."""
    if period_end < period_start:
        raise ApplicationError("period_end is before period_start.", code="period_out_of_bounds", field="period_end")
    orders = list(
        FlexOrder.objects.filter(dso=dso, aggregator=aggregator, period__gte=period_start, period__lte=period_end,
                                 status__in=SETTLEABLE)
        .select_related("aggregator", "congestion_point", "d_prognosis")
        .prefetch_related("isps")
        .order_by("period", "order_reference")
    )
    previous = (
        Statement.objects.select_for_update()
        .filter(dso=dso, aggregator=aggregator, period_start=period_start, period_end=period_end)
        .order_by("-version")
        .first()
    )
    statement = Statement.objects.create(
        dso=dso, aggregator=aggregator, period_start=period_start, period_end=period_end,
        version=(previous.version + 1) if previous else 1, total_eur=Decimal(0), issued_at=clock.now(),
    )
    waiting: dict[str, str] = {}
    settled: list[OrderSettlement] = []
    for order in orders:
        try:
            with transaction.atomic():
                settled.append(_order_settlement_build(flex_order=order, statement=statement))
        except ApplicationError as exc:
            waiting[order.order_reference] = exc.message
    if not settled:
        transaction.set_rollback(True)
        return StatementIssueResult(statement=None, settled_orders=0, waiting_orders=waiting)
    statement.total_eur = sum((item.total_eur for item in settled), Decimal(0))
    statement.save(update_fields=["total_eur", "updated_at"])
    if previous is not None:
        Statement.objects.filter(pk=previous.pk).update(status=Statement.Status.SUPERSEDED, updated_at=clock.now())
    for item in settled:
        if item.flex_order.status != FlexOrder.Status.SETTLED:
            market_services.flex_order_mark_settled(flex_order=item.flex_order)
    return StatementIssueResult(statement=statement, settled_orders=len(settled), waiting_orders=waiting)


def settle_day(*, period: date) -> list[StatementIssueResult]:
    """Issue statements for every DSO-aggregator pair with orders on the day (the nightly job)."""
    pairs = (
        FlexOrder.objects.filter(period=period, status__in=[FlexOrder.Status.PLACED, FlexOrder.Status.DISPATCHED])
        .values_list("dso_id", "aggregator_id")
        .distinct()
    )
    results = []
    for dso_id, aggregator_id in sorted(set(pairs), key=str):
        results.append(statement_issue(
            dso=Participant.objects.get(pk=dso_id), aggregator=Participant.objects.get(pk=aggregator_id),
            period_start=period, period_end=period,
        ))
    return results


SETTLEMENT_LOOKBACK_DAYS = 30


def settle_due(*, up_to: date, lookback_days: int = SETTLEMENT_LOOKBACK_DAYS) -> list[StatementIssueResult]:
    """The nightly job: settle `up_to` (yesterday) and every earlier day in the look-back window that still
    has unsettled orders, e.g. because its meter data arrived late."""
    days = set(
        FlexOrder.objects.filter(
            status__in=[FlexOrder.Status.PLACED, FlexOrder.Status.DISPATCHED],
            period__lte=up_to, period__gte=up_to - timedelta(days=lookback_days),
        ).values_list("period", flat=True)
    )
    results: list[StatementIssueResult] = []
    for day in sorted(days):
        results += settle_day(period=day)
    return results
