"""Settlement: flex orders settled per ISP against a baseline and metered load, into versioned statements.

Per order and ISP (UFTP-BRIEF 9.3; consumption-positive W; s = sign of the ordered change F):
    measured A  = (kWh imported - exported by the aggregator's connections on the point) / ISP hours
    realised    = s x (A - B)                       (flex in the ordered direction; may be negative)
    delivered D = min(|F|, max(0, realised))        (over-delivery and the wrong direction earn nothing)
    deficiency  = max(0, -s x (A - (B + F)))        (one-sided: only the congestion-worsening direction)
    payment     = D x ISP hours x unit price,  unit price = order price / ordered kWh (the price buys it all)
    penalty     = deficiency x ISP hours x penalty rate (EUR/kWh: the contract's, else the market's)
    paid (net)  = payment - penalty
Orders of one aggregator overlapping on an ISP in the same direction share D and the deficiency pro rata to
what each ordered (F is the flex ordered on the ISP), so nothing is paid or penalised twice.

Money is Decimal, rounded half-up to cents per line; an order's totals are sums of its lines and a statement's
the sums of its orders, so nothing is lost between levels.

Statements: one per DSO-aggregator pair and calendar month (the FlexSettlement period). Settling a day
recomputes that day's orders; if any order's settlement differs from the current version (first settlement,
late or corrected meter data), a new version is issued: unchanged orders are carried over by a set-based copy,
the version is appended to the ledger and the previous one is superseded. Nothing changed: no new version
(running twice changes nothing).
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import connection as db_connection
from django.db import transaction
from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import TruncDate

from common import isp as isp_time
from common import time as clock
from common.audit import audit_record
from common.exceptions import ApplicationError
from market import services as market_services
from market.models import AggregatorConnection, DPrognosisIsp, FlexOrder, Participant
from settlement.baselines import BaselineRequest, baseline_method_load, baseline_terms_for
from settlement.baselines.base import W_PER_KWH_PER_ISP
from settlement.models import (
    BaselineRecord,
    MeterReading,
    OrderSettlement,
    SessionReward,
    SettlementLine,
    SettlementRun,
    Statement,
)
from settlement.services import ledger

CENT = Decimal("0.01")
KWH_PER_W_ISP = Decimal(1) / W_PER_KWH_PER_ISP  # average W over one ISP -> kWh
SETTLEABLE = (FlexOrder.Status.PLACED, FlexOrder.Status.DISPATCHED, FlexOrder.Status.SETTLED,
              FlexOrder.Status.DISPUTED)
SETTLEMENT_LOOKBACK_DAYS = 30


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _w(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def month_of(day: date) -> tuple[date, date]:
    """First and last day of the calendar month: the statement period."""
    return day.replace(day=1), day.replace(day=calendar.monthrange(day.year, day.month)[1])


# --- the USEF arithmetic ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IspOutcome:
    """USEF per-ISP quantities in W (unrounded), for the flex ordered on the ISP in one direction."""

    realised_w: Decimal
    delivered_w: Decimal
    deficiency_w: Decimal


def usef_isp(*, baseline_w: Decimal, ordered_w: Decimal, actual_w: Decimal) -> IspOutcome:
    """UFTP-BRIEF 9.3: D = min(|F|, max(0, s x R)), PD = max(0, -s x (A - B')), B' = B + F, R = A - B."""
    sign = Decimal(-1) if ordered_w < 0 else Decimal(1)
    realised = sign * (actual_w - baseline_w)
    delivered = min(abs(ordered_w), max(Decimal(0), realised))
    deficiency = max(Decimal(0), -sign * (actual_w - (baseline_w + ordered_w)))
    return IspOutcome(realised_w=realised, delivered_w=delivered, deficiency_w=deficiency)


def isp_money(*, delivered_w: Decimal, deficiency_w: Decimal, unit_price: Decimal,
              penalty_rate: Decimal) -> tuple[Decimal, Decimal]:
    """(payment, penalty) in EUR, each rounded half-up to cents."""
    return (_cents(delivered_w * KWH_PER_W_ISP * unit_price), _cents(deficiency_w * KWH_PER_W_ISP * penalty_rate))


# --- computing settlements ----------------------------------------------------------------------------------------


@dataclass
class ComputedSettlement:
    order: FlexOrder
    settlement: OrderSettlement  # unsaved; statement is set when issued
    lines: list[SettlementLine]


@dataclass
class Computation:
    settled: dict[Any, ComputedSettlement] = field(default_factory=dict)  # order pk -> settlement
    waiting: dict[str, str] = field(default_factory=dict)  # order reference -> why not (yet)


GroupKey = tuple[Any, Any]  # (aggregator_id, congestion_point_id)


def _connections_by_group(orders: Sequence[FlexOrder], period: date) -> dict[GroupKey, list[str]]:
    rows = AggregatorConnection.objects.filter(
        Q(valid_until__isnull=True) | Q(valid_until__gt=period),
        aggregator_id__in={o.aggregator_id for o in orders},
        connection__congestion_point_id__in={o.congestion_point_id for o in orders},
        valid_from__lte=period,
    ).values_list("aggregator_id", "connection__congestion_point_id", "connection_id")
    found: dict[GroupKey, list[str]] = defaultdict(list)
    for aggregator_id, point_id, ean in rows.iterator(chunk_size=10_000):
        found[(aggregator_id, point_id)].append(ean)
    return found


@dataclass
class GroupMeter:
    measured_w: dict[int, Decimal]  # only ISPs where every connection has a reading
    newest: datetime | None


def _metered_by_group(orders: Sequence[FlexOrder], period: date,
                      connections: dict[GroupKey, list[str]]) -> dict[GroupKey, GroupMeter]:
    """One aggregate query for all orders of the day: net kWh, readings and the newest reading per
    (aggregator, point, ISP) over the ordered ISPs."""
    isps = sorted({row.isp for order in orders for row in order.isps.all()})
    starts = {isp_time.isp_start(period, isp): isp for isp in isps}
    rows = (
        MeterReading.objects.filter(
            Q(connection__representations__valid_until__isnull=True)
            | Q(connection__representations__valid_until__gt=period),
            connection__representations__valid_from__lte=period,
            connection__representations__aggregator_id__in={o.aggregator_id for o in orders},
            connection__congestion_point_id__in={o.congestion_point_id for o in orders},
            isp_start__in=list(starts),
        )
        .values("connection__representations__aggregator_id", "connection__congestion_point_id", "isp_start")
        .annotate(kwh_in=Sum("kwh_import"), kwh_out=Sum("kwh_export"), readings=Count("id"), newest=Max("received_at"))
        .order_by()
    )
    found: dict[GroupKey, GroupMeter] = defaultdict(lambda: GroupMeter(measured_w={}, newest=None))
    for row in rows:
        key = (row["connection__representations__aggregator_id"], row["connection__congestion_point_id"])
        meter = found[key]
        if row["newest"] is not None and (meter.newest is None or row["newest"] > meter.newest):
            meter.newest = row["newest"]
        if row["readings"] == len(connections.get(key, ())):
            instant = isp_time.floor_to_isp(row["isp_start"])
            meter.measured_w[starts[instant]] = (row["kwh_in"] - row["kwh_out"]) * W_PER_KWH_PER_ISP
    return found


def _baseline_records(keys: dict[tuple[Any, ...], tuple[FlexOrder, str, dict[str, Any], Any, dict[int, int],
                                                        dict[str, Any]]]) -> dict[tuple[Any, ...], BaselineRecord]:
    """One BaselineRecord per distinct baseline; an identical earlier record is reused (idempotent runs)."""
    if not keys:
        return {}
    sample = next(iter(keys.values()))[0]
    existing = BaselineRecord.objects.filter(
        period=sample.period, aggregator_id__in={v[0].aggregator_id for v in keys.values()},
        congestion_point_id__in={v[0].congestion_point_id for v in keys.values()},
    )
    by_content = {
        (r.aggregator_id, r.congestion_point_id, r.method, ledger.canonical_json(r.parameters), r.d_prognosis_id,
         ledger.canonical_json(r.values_w)): r for r in existing
    }
    records: dict[tuple[Any, ...], BaselineRecord] = {}
    new: list[tuple[tuple[Any, ...], BaselineRecord]] = []
    for key, (order, method, parameters, prognosis_id, values, inputs) in keys.items():
        values_json = {str(isp): w for isp, w in sorted(values.items())}
        content = (order.aggregator_id, order.congestion_point_id, method, ledger.canonical_json(parameters),
                   prognosis_id, ledger.canonical_json(values_json))
        if content in by_content:
            records[key] = by_content[content]
            continue
        record = BaselineRecord(aggregator_id=order.aggregator_id, congestion_point_id=order.congestion_point_id,
                                period=order.period, method=method, parameters=parameters, inputs=inputs,
                                values_w=values_json, d_prognosis_id=prognosis_id)
        by_content[content] = record
        new.append((key, record))
        records[key] = record
    BaselineRecord.objects.bulk_create([record for _, record in new])
    return records


def _prognosis_values(wanted: dict[tuple[Any, ...], list[FlexOrder]]) -> dict[Any, dict[int, int]]:
    """The referenced D-prognoses' W on the ordered ISPs, in one query (not 96 rows per prognosis)."""
    isps_by_prognosis: dict[Any, set[int]] = defaultdict(set)
    for (_, _, _, prognosis_id), members in wanted.items():
        if prognosis_id is not None:
            isps_by_prognosis[prognosis_id] |= {row.isp for order in members for row in order.isps.all()}
    if not isps_by_prognosis:
        return {}
    values: dict[Any, dict[int, int]] = defaultdict(dict)
    rows = DPrognosisIsp.objects.filter(
        d_prognosis_id__in=list(isps_by_prognosis),
        isp__in={isp for isps in isps_by_prognosis.values() for isp in isps},
    ).values_list("d_prognosis_id", "isp", "power_w")
    for prognosis_id, isp, power_w in rows.iterator(chunk_size=20_000):
        values[prognosis_id][isp] = power_w
    return values


def settlements_compute(*, orders: Sequence[FlexOrder], period: date) -> Computation:
    """Settle every order of one market day (set-based reads; nothing is written but baseline records)."""
    result = Computation()
    if not orders:
        return result
    connections = _connections_by_group(orders, period)
    meters = _metered_by_group(orders, period, connections)

    # |F| per (group, ISP, direction) over every order of the day: overlapping orders share the outcome.
    ordered_total: dict[tuple[GroupKey, int, int], int] = defaultdict(int)
    for order in orders:
        for row in order.isps.all():
            ordered_total[((order.aggregator_id, order.congestion_point_id), row.isp, -1 if row.power_w < 0 else 1)] \
                += abs(row.power_w)

    # Baselines, one per (group, method, parameters, prognosis), over the union of those orders' ISPs.
    wanted: dict[tuple[Any, ...], list[FlexOrder]] = defaultdict(list)
    terms: dict[Any, tuple[str, dict[str, Any]]] = {}
    for order in orders:
        group = (order.aggregator_id, order.congestion_point_id)
        if not connections.get(group):
            result.waiting[order.order_reference] = "The aggregator represents no connection on this point that day."
            continue
        ordered_isps = {row.isp for row in order.isps.all()}
        missing = sorted(ordered_isps - set(meters[group].measured_w))
        if missing:
            result.waiting[order.order_reference] = (
                f"Meter data incomplete for order {order.order_reference}: ISPs {missing[:10]} lack readings for "
                f"some of its {len(connections[group])} connections.")
            continue
        method, parameters = baseline_terms_for(order)
        terms[order.pk] = (method, parameters)
        wanted[(group, method, ledger.canonical_json(parameters), order.d_prognosis_id)].append(order)

    prognosis_w = _prognosis_values(wanted)
    baselines: dict[tuple[Any, ...], tuple[FlexOrder, str, dict[str, Any], Any, dict[int, int], dict[str, Any]]] = {}
    for key, members in wanted.items():
        group, method, _, prognosis_id = key
        first = members[0]
        isps = sorted({row.isp for order in members for row in order.isps.all()})
        try:
            implementation = baseline_method_load(method)
            parameters = implementation.parameters(terms[first.pk][1])
            computed = implementation.compute(BaselineRequest(
                aggregator=first.aggregator, congestion_point=first.congestion_point, period=period, isps=isps,
                connections=connections[group], d_prognosis=first.d_prognosis,
                measured_w={isp: meters[group].measured_w[isp] for isp in isps},
                d_prognosis_w=prognosis_w.get(prognosis_id, {}) if prognosis_id else None), parameters)
        except ApplicationError as exc:
            for order in members:
                result.waiting[order.order_reference] = exc.message
            continue
        baselines[key] = (first, implementation.path(), parameters, prognosis_id, computed.values_w, computed.inputs)
    records = _baseline_records(baselines)

    for key, members in wanted.items():
        if key not in records:
            continue
        record = records[key]
        group = key[0]
        for order in members:
            result.settled[order.pk] = _order_settle(
                order=order, record=record, baseline_w=baselines[key][4], meter=meters[group],
                ordered_total=ordered_total)
    return result


def _penalty_rate(order: FlexOrder) -> Decimal:
    if order.contract is not None and order.contract.penalty_eur_per_kwh is not None:
        return order.contract.penalty_eur_per_kwh
    return order.congestion_point.market.penalty_eur_per_kwh


def _order_settle(*, order: FlexOrder, record: BaselineRecord, baseline_w: dict[int, int], meter: GroupMeter,
                  ordered_total: dict[tuple[GroupKey, int, int], int]) -> ComputedSettlement:
    group = (order.aggregator_id, order.congestion_point_id)
    rows = sorted(order.isps.all(), key=lambda row: row.isp)
    ordered_kwh = sum((abs(Decimal(row.power_w)) * KWH_PER_W_ISP for row in rows), Decimal(0))
    unit_price = order.price_eur / ordered_kwh if ordered_kwh else Decimal(0)
    penalty_rate = _penalty_rate(order)
    settlement = OrderSettlement(
        flex_order=order, d_prognosis_id=order.d_prognosis_id, baseline=record, baseline_method=record.method,
        unit_price_eur_per_kwh=unit_price.quantize(Decimal("1e-6"), rounding=ROUND_HALF_UP),
        penalty_eur_per_kwh=penalty_rate, meter_data_as_of=meter.newest,
    )
    lines: list[SettlementLine] = []
    delivered_kwh = deficiency_kwh = Decimal(0)
    for row in rows:
        direction = -1 if row.power_w < 0 else 1
        total_w = Decimal(ordered_total[(group, row.isp, direction)])
        share = abs(Decimal(row.power_w)) / total_w if total_w else Decimal(0)
        outcome = usef_isp(baseline_w=Decimal(baseline_w[row.isp]), ordered_w=total_w * direction,
                           actual_w=meter.measured_w[row.isp])
        delivered, deficiency = outcome.delivered_w * share, outcome.deficiency_w * share
        payment, penalty = isp_money(delivered_w=delivered, deficiency_w=deficiency, unit_price=unit_price,
                                     penalty_rate=penalty_rate)
        delivered_kwh += delivered * KWH_PER_W_ISP
        deficiency_kwh += deficiency * KWH_PER_W_ISP
        lines.append(SettlementLine(
            isp=row.isp, isp_start=isp_time.isp_start(order.period, row.isp), baseline_w=baseline_w[row.isp],
            measured_w=_w(meter.measured_w[row.isp]), ordered_w=row.power_w, realised_w=_w(outcome.realised_w * share),
            delivered_w=_w(delivered), deficiency_w=_w(deficiency), payment_eur=payment, penalty_eur=penalty,
            paid_eur=payment - penalty,
        ))
    settlement.ordered_kwh = ordered_kwh.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
    settlement.delivered_kwh = delivered_kwh.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
    settlement.deficiency_kwh = deficiency_kwh.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
    settlement.payment_eur = sum((line.payment_eur for line in lines), Decimal(0))
    settlement.penalty_eur = sum((line.penalty_eur for line in lines), Decimal(0))
    settlement.total_eur = settlement.payment_eur - settlement.penalty_eur
    settlement.content_sha256 = ledger.order_settlement_hash(settlement, lines)
    return ComputedSettlement(order=order, settlement=settlement, lines=lines)


# --- statement versions -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatementIssueResult:
    statement: Statement | None  # the version now current (new or unchanged); None if nothing is settled yet
    settled_orders: int  # orders (re)settled into a new version by this call
    waiting_orders: dict[str, str]  # order reference -> why it could not be settled yet
    issued: bool = False  # a new version was issued
    unchanged_orders: int = 0


def _copy_sql(model: Any, *, set_values: dict[str, Any], set_columns: dict[str, str], where: str
              ) -> tuple[str, list[Any]]:
    """INSERT ... SELECT copying rows of `model`: every concrete column but the key, some set to a parameter
    (`set_values`) or an expression (`set_columns`). Returns the SQL and the parameters of its SELECT list."""
    columns = [f.column for f in model._meta.concrete_fields if not f.primary_key]
    table = model._meta.db_table
    select, params = [], []
    for column in columns:
        if column in set_values:
            select.append("%s")
            params.append(set_values[column])
        else:
            select.append(set_columns.get(column, f"src.{column}"))
    # Note: table and column names come from the model's own metadata; every value is a query parameter.
    sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(select)} FROM {table} src {where}"  # noqa: S608
    return sql, params


def _db(model: Any, pk: Any) -> Any:
    """A primary key as the database stores it (UUIDs are hex text on SQLite) for raw SQL parameters."""
    return model._meta.pk.get_db_prep_value(pk, db_connection)


def _carry_over(*, previous: Statement, new: Statement, exclude_order_ids: Iterable[Any]) -> int:
    """Copy the previous version's order settlements (with their lines and rewards) that are not being replaced
    into the new version, in three INSERT ... SELECT statements."""
    excluded = [_db(FlexOrder, pk) for pk in exclude_order_ids]
    now = OrderSettlement._meta.get_field("created_at").get_db_prep_value(clock.now(), db_connection)
    os_table = OrderSettlement._meta.db_table
    not_in = f"AND src.flex_order_id NOT IN ({', '.join(['%s'] * len(excluded))})" if excluded else ""
    new_pk, previous_pk = _db(Statement, new.pk), _db(Statement, previous.pk)
    with db_connection.cursor() as cursor:
        sql, params = _copy_sql(OrderSettlement, set_values={"statement_id": new_pk, "created_at": now,
                                                             "updated_at": now},
                                set_columns={}, where=f"WHERE src.statement_id = %s {not_in}")
        cursor.execute(sql, [*params, previous_pk, *excluded])
        copied = cursor.rowcount
        pair_join = (f"JOIN {os_table} old ON old.id = src.order_settlement_id "
                     f"JOIN {os_table} cur ON cur.flex_order_id = old.flex_order_id AND cur.statement_id = %s "
                     f"WHERE old.statement_id = %s {not_in.replace('src.', 'old.')}")
        for model in (SettlementLine, SessionReward):
            sql, params = _copy_sql(model, set_values={}, set_columns={"order_settlement_id": "cur.id"},
                                    where=pair_join)
            cursor.execute(sql, [*params, new_pk, previous_pk, *excluded])
    return copied


def _statement_totals(statement: Statement) -> None:
    totals = OrderSettlement.objects.filter(statement=statement).aggregate(
        payment=Sum("payment_eur"), penalty=Sum("penalty_eur"), total=Sum("total_eur"))
    statement.payment_eur = totals["payment"] or Decimal(0)
    statement.penalty_eur = totals["penalty"] or Decimal(0)
    statement.total_eur = totals["total"] or Decimal(0)
    statement.save(update_fields=["payment_eur", "penalty_eur", "total_eur", "updated_at"])


def statement_version_issue(
    *, dso: Participant, aggregator: Participant, period_start: date, period_end: date,
    replacements: dict[Any, ComputedSettlement], reason: str, previous: Statement | None,
    line_overrides: dict[tuple[Any, int], Decimal] | None = None,
    before_ledger: Callable[[Statement], None] | None = None,
) -> Statement:
    """Issue a new version: the previous version's settlements carried over, `replacements` (order pk ->
    computed settlement) in their place, optional net-amount overrides per (order pk, ISP) from resolved
    disputes; then totals, rewards, the ledger entry, the previous version superseded. Call in a transaction."""
    statement = Statement.objects.create(
        dso=dso, aggregator=aggregator, period_start=period_start, period_end=period_end,
        version=(previous.version + 1) if previous else 1, previous_version=previous, reason=reason,
        total_eur=Decimal(0), issued_at=clock.now(),
    )
    overridden = {order_pk for order_pk, _ in (line_overrides or {})}
    if previous is not None:
        _carry_over(previous=previous, new=statement, exclude_order_ids=[*replacements, *overridden])
    if overridden and previous is not None:
        for order_pk in overridden - set(replacements):
            replacements[order_pk] = _recompute_from(previous, order_pk)
    for (order_pk, isp), net in (line_overrides or {}).items():
        _apply_override(replacements[order_pk], isp=isp, net=net)
    fresh = list(replacements.values())
    for item in fresh:
        item.settlement.pk = None
        item.settlement.statement = statement
    OrderSettlement.objects.bulk_create([item.settlement for item in fresh], batch_size=1000)
    for item in fresh:
        for line in item.lines:
            line.pk = None
            line.order_settlement = item.settlement
    _lines_insert([line for item in fresh for line in item.lines])
    from settlement.services.rewards import rewards_allocate

    rewards_allocate(settlements=[item.settlement for item in fresh])
    _statement_totals(statement)
    if before_ledger is not None:  # e.g. a dispute records its resolution, which the ledger document includes
        before_ledger(statement)
    if previous is not None:
        Statement.objects.filter(pk=previous.pk).update(status=Statement.Status.SUPERSEDED, updated_at=clock.now())
    ledger.ledger_append(statement=statement)
    audit_record(obj=statement, action="statement.issued", actor_label="settlement", after={
        "version": statement.version, "reason": reason, "total_eur": str(statement.total_eur),
        "orders_resettled": len(fresh)})
    return statement


LINE_COLUMNS = ("order_settlement_id", "isp", "isp_start", "baseline_w", "measured_w", "ordered_w", "realised_w",
                "delivered_w", "deficiency_w", "payment_eur", "penalty_eur", "paid_eur")


def _lines_insert(lines: Sequence[SettlementLine]) -> None:
    """Settlement lines in bulk: COPY on PostgreSQL (tens of thousands per day; bulk_create spends seconds
    preparing values), bulk_create elsewhere."""
    if db_connection.vendor != "postgresql":
        SettlementLine.objects.bulk_create(lines, batch_size=5000)
        return
    # Note: the columns are fixed names of this app's own table; the values travel in COPY's data stream.
    sql = f"COPY {SettlementLine._meta.db_table} ({', '.join(LINE_COLUMNS)}) FROM STDIN"
    with db_connection.cursor() as cursor, cursor.copy(sql) as copy:
        for line in lines:
            copy.write_row((line.order_settlement_id, line.isp, line.isp_start, line.baseline_w, line.measured_w,
                            line.ordered_w, line.realised_w, line.delivered_w, line.deficiency_w, line.payment_eur,
                            line.penalty_eur, line.paid_eur))


def _recompute_from(statement: Statement, order_pk: Any) -> ComputedSettlement:
    """A fresh, unsaved copy of one order's settlement in `statement` (for a dispute correction)."""
    source = OrderSettlement.objects.select_related("flex_order", "baseline").get(statement=statement,
                                                                                   flex_order_id=order_pk)
    lines = list(source.lines.order_by("isp"))
    return ComputedSettlement(order=source.flex_order, settlement=source, lines=lines)


def _apply_override(item: ComputedSettlement, *, isp: int, net: Decimal) -> None:
    """A dispute accepted with a corrected amount: the agreed amount replaces the line's net (as payment when it
    is positive, as penalty when negative); the measured values stay as measured."""
    for line in item.lines:
        if line.isp == isp:
            line.payment_eur, line.penalty_eur = (net, Decimal("0.00")) if net >= 0 else (Decimal("0.00"), -net)
            line.paid_eur = net
    settlement = item.settlement
    settlement.payment_eur = sum((line.payment_eur for line in item.lines), Decimal(0))
    settlement.penalty_eur = sum((line.penalty_eur for line in item.lines), Decimal(0))
    settlement.total_eur = settlement.payment_eur - settlement.penalty_eur
    settlement.content_sha256 = ledger.order_settlement_hash(settlement, item.lines)


def serialise_on(key: str) -> None:
    """Inside a transaction on PostgreSQL: wait for any other transaction holding the same key (an advisory
    lock), so versions of one statement, and ledger entries, are issued one at a time even when no row exists
    yet to lock. SQLite serialises writers anyway."""
    if db_connection.vendor == "postgresql":
        with db_connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [key])


def _current_version(*, dso: Participant, aggregator: Participant, period_start: date,
                     period_end: date) -> Statement | None:
    serialise_on(f"settlement.statement:{dso.pk}:{aggregator.pk}:{period_start}:{period_end}")
    return (
        Statement.objects.select_for_update()
        .filter(dso=dso, aggregator=aggregator, period_start=period_start, period_end=period_end)
        .order_by("-version")
        .first()
    )


def _revise(*, dso: Participant, aggregator: Participant, period_start: date, period_end: date,
            computation: Computation, order_refs: set[str], reason: str) -> StatementIssueResult:
    """Issue a new version of the pair's statement for the period if any of `computation`'s settlements differ
    from the current version's; otherwise leave everything as it is."""
    waiting = {ref: why for ref, why in computation.waiting.items() if ref in order_refs}
    with transaction.atomic():
        previous = _current_version(dso=dso, aggregator=aggregator, period_start=period_start, period_end=period_end)
        # An order is paid through one statement series only: one already in the current version of a statement
        # for another period (e.g. issued by hand for a single day) is left to that statement.
        elsewhere = dict(
            OrderSettlement.objects.filter(
                statement__status=Statement.Status.ISSUED, statement__dso=dso, statement__aggregator=aggregator,
                flex_order_id__in=[pk for pk, item in computation.settled.items()
                                   if item.order.order_reference in order_refs],
            ).exclude(statement__period_start=period_start, statement__period_end=period_end)
            .values_list("flex_order__order_reference", "statement__period_start")
        )
        for reference, other_start in elsewhere.items():
            waiting[reference] = f"Settled in the statement starting {other_start.isoformat()}."
        order_refs = order_refs - set(elsewhere)
        current_hashes = dict(
            OrderSettlement.objects.filter(statement=previous).values_list("flex_order_id", "content_sha256")
        ) if previous else {}
        changed = {pk: item for pk, item in computation.settled.items()
                   if item.order.order_reference in order_refs and current_hashes.get(pk) != item.settlement.content_sha256}
        unchanged = sum(1 for item in computation.settled.values() if item.order.order_reference in order_refs) - len(changed)
        if not changed:
            return StatementIssueResult(statement=previous, settled_orders=0, waiting_orders=waiting,
                                        unchanged_orders=unchanged)
        statement = statement_version_issue(dso=dso, aggregator=aggregator, period_start=period_start,
                                            period_end=period_end, replacements=changed, reason=reason,
                                            previous=previous)
        for item in changed.values():
            if item.order.status in (FlexOrder.Status.PLACED, FlexOrder.Status.DISPATCHED):
                market_services.flex_order_mark_settled(flex_order=item.order)
    return StatementIssueResult(statement=statement, settled_orders=len(changed), waiting_orders=waiting,
                                issued=True, unchanged_orders=unchanged)


def _orders(**filters: Any) -> list[FlexOrder]:
    return list(
        FlexOrder.objects.filter(status__in=SETTLEABLE, **filters)
        .select_related("aggregator", "dso", "congestion_point__market", "contract", "d_prognosis")
        .prefetch_related("isps")
        .order_by("period", "order_reference")
    )


def statement_issue(
    *, dso: Participant, aggregator: Participant, period_start: date, period_end: date
) -> StatementIssueResult:
    """Settle every order between the pair in [period_start, period_end] whose meter data is complete and issue
    a statement for exactly that period (a new version if anything differs from the current one). Orders with
    incomplete data wait for a later run."""
    if period_end < period_start:
        raise ApplicationError("period_end is before period_start.", code="period_out_of_bounds", field="period_end")
    orders = _orders(dso=dso, aggregator=aggregator, period__gte=period_start, period__lte=period_end)
    computation = Computation()
    by_day: dict[date, list[FlexOrder]] = defaultdict(list)
    for order in orders:
        by_day[order.period].append(order)
    for day, day_orders in sorted(by_day.items()):
        # Overlap sharing must see every order of the aggregator on the point that day, whoever bought it.
        everyone = _orders(period=day, aggregator=aggregator,
                           congestion_point_id__in={o.congestion_point_id for o in day_orders})
        part = settlements_compute(orders=everyone, period=day)
        computation.settled.update(part.settled)
        computation.waiting.update(part.waiting)
    return _revise(dso=dso, aggregator=aggregator, period_start=period_start, period_end=period_end,
                   computation=computation, order_refs={o.order_reference for o in orders},
                   reason=f"settlement of {period_start.isoformat()}..{period_end.isoformat()}")


def settle_day(*, period: date, trigger: str = "nightly", reason: str = "") -> list[StatementIssueResult]:
    """Settle every order of one market day and issue a new version of each affected pair's monthly statement
    where anything changed (the nightly job; idempotent)."""
    run = SettlementRun.objects.create(period=period, started_at=clock.now(), trigger=trigger)
    orders = _orders(period=period)
    computation = settlements_compute(orders=orders, period=period)
    pairs: dict[tuple[Any, Any], list[FlexOrder]] = defaultdict(list)
    for order in orders:
        pairs[(order.dso_id, order.aggregator_id)].append(order)
    period_start, period_end = month_of(period)
    results = []
    for (_, _), pair_orders in sorted(pairs.items(), key=lambda item: (str(item[0][0]), str(item[0][1]))):
        first = pair_orders[0]
        results.append(_revise(dso=first.dso, aggregator=first.aggregator, period_start=period_start,
                               period_end=period_end, computation=computation,
                               order_refs={o.order_reference for o in pair_orders},
                               reason=reason or f"settlement of {period.isoformat()}"))
    SettlementRun.objects.filter(pk=run.pk).update(
        finished_at=clock.now(), orders_settled=sum(r.settled_orders for r in results),
        orders_unchanged=sum(r.unchanged_orders for r in results),
        orders_waiting=sum(len(r.waiting_orders) for r in results),
        statements_issued=sum(1 for r in results if r.issued))
    return results


def days_with_late_meter_data(*, up_to: date, lookback_days: int = SETTLEMENT_LOOKBACK_DAYS) -> set[date]:
    """Settled days for which a reading arrived after their last settlement run (late or corrected data), in
    one query over the look-back window: the newest reading per market day against that day's last run."""
    last_runs = dict(
        SettlementRun.objects.filter(period__lte=up_to, period__gte=up_to - timedelta(days=lookback_days))
        .values("period").annotate(last=Max("started_at")).values_list("period", "last")
    )
    if not last_runs:
        return set()
    newest = (
        MeterReading.objects.filter(isp_start__gte=isp_time.day_start(min(last_runs)),
                                    isp_start__lt=isp_time.day_end(max(last_runs)),
                                    received_at__gt=min(last_runs.values()))
        .annotate(day=TruncDate("isp_start", tzinfo=isp_time.MARKET_TZ)).values("day")
        .annotate(newest=Max("received_at")).order_by().values_list("day", "newest")
    )
    return {day for day, received in newest if day in last_runs and received > last_runs[day]}


def settle_due(*, up_to: date, lookback_days: int = SETTLEMENT_LOOKBACK_DAYS) -> list[StatementIssueResult]:
    """The nightly job: settle `up_to` (yesterday), every earlier day in the look-back window that still has
    unsettled orders (meter data came late), and every settled day with readings newer than its last run
    (corrections: a new statement version if the numbers change)."""
    days = set(
        FlexOrder.objects.filter(
            status__in=[FlexOrder.Status.PLACED, FlexOrder.Status.DISPATCHED],
            period__lte=up_to, period__gte=up_to - timedelta(days=lookback_days),
        ).values_list("period", flat=True)
    )
    late = days_with_late_meter_data(up_to=up_to, lookback_days=lookback_days)
    days |= late
    if FlexOrder.objects.filter(period=up_to).exists():
        days.add(up_to)
    results: list[StatementIssueResult] = []
    for day in sorted(days):
        reason = f"meter data for {day.isoformat()} changed after its settlement" if day in late else ""
        results += settle_day(period=day, reason=reason)
    return results


def settle_range(*, date_from: date, date_to: date, trigger: str = "manual") -> list[StatementIssueResult]:
    """Settle each day of [date_from, date_to] again (by hand; idempotent like the nightly job)."""
    if date_to < date_from:
        raise ApplicationError("--to is before --from.", code="period_out_of_bounds", field="date_to")
    results: list[StatementIssueResult] = []
    day = date_from
    while day <= date_to:
        results += settle_day(period=day, trigger=trigger)
        day += timedelta(days=1)
    return results
