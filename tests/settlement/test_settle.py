"""Settling orders against metered load: per-ISP lines, order settlements, statements, versions and the nightly job.

Every scenario uses voltflex on cp_north with a flat D-prognosis baseline, so each number below can be checked by
hand: measured W = net kWh of the ISP / 0.25 h; delivered = min(|ordered|, max(0, realised)); paid = delivered kWh x
unit price (no penalty rate on the default market, so the deficiency costs nothing here: see test_settle_usef.py).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from unittest.mock import patch

import pytest

from common import isp as isp_time
from common.exceptions import ApplicationError
from market import services as market_services
from market.models import Connection, FlexOrder
from market.services import IspPower
from settlement.models import OrderSettlement, SettlementLine, Statement
from settlement.services import MeterReadingRow, meter_readings_import, settle_day, statement_issue
from settlement.services.settle import month_of
from settlement.tasks import settle_previous_day_task
from tests.builders import evening_isps, make_request, option
from tests.conftest import World

pytestmark = pytest.mark.django_db

BASELINE_W = 60_000


def order_isps(day: date) -> list[int]:
    """Four evening ISPs (18:00-19:00 local)."""
    return evening_isps(day)[4:8]


def place_order(
    world: World,
    day: date,
    *,
    isps: list[int],
    power_w: int = -12_000,
    price: str = "24.00",
    baseline_w: int = BASELINE_W,
    solicited: bool = True,
) -> FlexOrder:
    """Voltflex submits a flat D-prognosis and an offer of `power_w` on `isps`; Gridco accepts it."""
    prognosis = market_services.d_prognosis_submit(
        aggregator=world.voltflex,
        congestion_point=world.cp_north,
        period=day,
        isps=[IspPower(isp=slot.index, power_w=baseline_w) for slot in isp_time.isp_slots(day)],
    )
    flex_request = None
    expires_at = isp_time.isp_start(day, isps[0]) - timedelta(hours=1)
    if solicited:
        flex_request = make_request(
            dso=world.gridco, point=world.cp_north, day=day, reduction_w=abs(power_w), isps=isps
        )
        expires_at = flex_request.expires_at
    offer = market_services.flex_offer_submit(
        aggregator=world.voltflex,
        congestion_point=world.cp_north,
        period=day,
        options=[option(power_w=power_w, price=price, isps=isps)],
        expires_at=expires_at,
        flex_request=flex_request,
        d_prognosis=prognosis,
    )
    return market_services.flex_offer_accept(flex_offer=offer, dso=world.gridco)


def meter_row(connection: Connection, day: date, isp: int, kwh_import: str, kwh_export: str = "0") -> MeterReadingRow:
    return MeterReadingRow(
        connection_ean=connection.ean,
        isp_start=isp_time.isp_start(day, isp),
        kwh_import=Decimal(kwh_import),
        kwh_export=Decimal(kwh_export),
    )


def meter_flat(connections: list[Connection], day: date, isps: list[int], kwh_import: str) -> None:
    meter_readings_import(rows=[meter_row(c, day, isp, kwh_import) for c in connections for isp in isps])


def line_values(settlement: OrderSettlement) -> list[tuple[int, int, int, int, int, Decimal]]:
    return [
        (line.isp, line.baseline_w, line.measured_w, line.ordered_w, line.delivered_w, line.paid_eur)
        for line in settlement.lines.order_by("isp")
    ]


def issue_reference_statement(world: World, day: date) -> Statement:
    """The worked example: -12 kW on 4 ISPs for EUR 24.00 (2.00 EUR/kWh), metered at 48/54/40/65 kW -> EUR 15.00."""
    isps = order_isps(day)
    place_order(world, day, isps=isps)
    a, b, c, d = isps
    v1, v2, v3 = world.voltflex_connections
    meter_readings_import(
        rows=[
            # 48 kW = 12 kWh: delivered 12 kW, the full order.
            meter_row(v1, day, a, "4.000"),
            meter_row(v2, day, a, "4.000"),
            meter_row(v3, day, a, "4.000"),
            # 54 kW = 13.5 kWh net; v1 exports 2 kWh (import alone would read 62 kW: wrong direction, paid nothing).
            meter_row(v1, day, b, "6.500", "2.000"),
            meter_row(v2, day, b, "4.500"),
            meter_row(v3, day, b, "4.500"),
            # 40 kW = 10 kWh: 20 kW delivered, paid only for the 12 kW ordered.
            meter_row(v1, day, c, "3.334"),
            meter_row(v2, day, c, "3.333"),
            meter_row(v3, day, c, "3.333"),
            # 65 kW = 16.25 kWh: 5 kW more than the baseline.
            meter_row(v1, day, d, "5.250"),
            meter_row(v2, day, d, "5.500"),
            meter_row(v3, day, d, "5.500"),
        ]
    )
    # Chargeco's connections (two of them behind the same point) draw a lot; none of it is Voltflex's.
    meter_flat(world.chargeco_connections, day, isps, "50.000")
    result = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=day, period_end=day)
    assert result.statement is not None, result.waiting_orders
    return result.statement


# --- the arithmetic ---------------------------------------------------------------------------------------


def test_it_settles_each_isp_against_the_baseline_and_pays_only_delivered_flex(world: World, tomorrow: date) -> None:
    statement = issue_reference_statement(world, tomorrow)

    settlement = statement.order_settlements.get()
    a, b, c, d = order_isps(tomorrow)
    assert line_values(settlement) == [
        (a, 60_000, 48_000, -12_000, 12_000, Decimal("6.00")),
        (b, 60_000, 54_000, -12_000, 6_000, Decimal("3.00")),
        (c, 60_000, 40_000, -12_000, 12_000, Decimal("6.00")),  # 20 kW realised, only the 12 kW ordered count
        (d, 60_000, 65_000, -12_000, 0, Decimal("0.00")),  # the wrong way: nothing delivered
    ]
    assert [(line.realised_w, line.deficiency_w) for line in settlement.lines.order_by("isp")] == [
        (12_000, 0), (6_000, 6_000), (20_000, 0), (-5_000, 17_000),
    ]
    assert [line.isp_start for line in settlement.lines.order_by("isp")] == [
        isp_time.isp_start(tomorrow, isp) for isp in (a, b, c, d)
    ]
    assert settlement.ordered_kwh == Decimal("12.000")
    assert settlement.delivered_kwh == Decimal("7.500")
    assert settlement.unit_price_eur_per_kwh == Decimal("2")
    assert settlement.total_eur == Decimal("15.00")
    assert settlement.d_prognosis_id == settlement.flex_order.d_prognosis_id
    assert settlement.flex_order.d_prognosis_id == settlement.flex_order.flex_offer.d_prognosis_id


def test_totals_add_up_from_lines_to_settlements_to_the_statement(world: World, tomorrow: date) -> None:
    statement = issue_reference_statement(world, tomorrow)

    statement.refresh_from_db()
    settlements = list(statement.order_settlements.all())
    lines = SettlementLine.objects.filter(order_settlement__statement=statement)
    assert statement.total_eur == Decimal("15.00")
    assert statement.total_eur == sum((s.total_eur for s in settlements), Decimal(0))
    assert statement.total_eur == sum((line.paid_eur for line in lines), Decimal(0))
    assert (statement.dso, statement.aggregator, statement.version, statement.status) == (
        world.gridco,
        world.voltflex,
        1,
        Statement.Status.ISSUED,
    )


def test_a_settled_order_is_marked_settled(world: World, tomorrow: date) -> None:
    statement = issue_reference_statement(world, tomorrow)

    order = FlexOrder.objects.get(pk=statement.order_settlements.get().flex_order_id)
    assert order.status == FlexOrder.Status.SETTLED


def test_other_aggregators_connections_on_the_point_are_not_counted(world: World, tomorrow: date) -> None:
    statement = issue_reference_statement(world, tomorrow)

    on_north = [c for c in world.chargeco_connections if c.congestion_point_id == world.cp_north.pk]
    assert len(on_north) == 2  # 2 x 50 kWh per ISP would add 400 kW if they were counted
    measured = list(
        SettlementLine.objects.filter(order_settlement__statement=statement)
        .order_by("isp")
        .values_list("measured_w", flat=True)
    )
    assert measured == [48_000, 54_000, 40_000, 65_000]


def test_the_baseline_is_the_prognosis_the_offer_referenced_not_a_later_revision(world: World, tomorrow: date) -> None:
    isps = order_isps(tomorrow)
    order = place_order(world, tomorrow, isps=isps)
    market_services.d_prognosis_submit(
        aggregator=world.voltflex,
        congestion_point=world.cp_north,
        period=tomorrow,
        isps=[IspPower(isp=slot.index, power_w=30_000) for slot in isp_time.isp_slots(tomorrow)],
    )
    meter_flat(world.voltflex_connections, tomorrow, isps, "4.000")

    result = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow)

    settlement = result.statement.order_settlements.get()
    assert settlement.d_prognosis_id == order.d_prognosis_id
    assert {line.baseline_w for line in settlement.lines.all()} == {BASELINE_W}
    assert settlement.total_eur == Decimal("24.00")


def test_lines_are_rounded_half_up_to_cents_and_the_total_is_their_sum(world: World, tomorrow: date) -> None:
    # EUR 30.00 for 12 kWh: 2.50 EUR/kWh. Delivering 1,608 W for an ISP is 0.402 kWh = EUR 1.005 -> 1.01.
    isps = order_isps(tomorrow)
    place_order(world, tomorrow, isps=isps, price="30.00")
    meter_flat(world.voltflex_connections, tomorrow, isps[:3], "4.866")  # 14.598 kWh = 58,392 W
    meter_flat(world.voltflex_connections, tomorrow, isps[3:], "4.000")  # 48 kW: the full 12 kW

    result = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow)

    settlement = result.statement.order_settlements.get()
    assert [(line.delivered_w, line.paid_eur) for line in settlement.lines.order_by("isp")] == [
        (1_608, Decimal("1.01")),
        (1_608, Decimal("1.01")),
        (1_608, Decimal("1.01")),
        (12_000, Decimal("7.50")),
    ]
    assert settlement.delivered_kwh == Decimal("4.206")
    # Rounding the unrounded sum (4.206 kWh x 2.50 = 10.515) would give 10.52; the lines say 10.53.
    assert settlement.total_eur == Decimal("10.53")
    assert result.statement.total_eur == Decimal("10.53")


def test_an_unit_price_that_does_not_divide_evenly_loses_the_odd_cent_in_the_lines(
    world: World, tomorrow: date
) -> None:
    # EUR 10.00 for 9 kWh: 1.1111... EUR/kWh; each fully delivered ISP earns 3.3333... -> 3.33.
    isps = order_isps(tomorrow)[:3]
    place_order(world, tomorrow, isps=isps, price="10.00")
    meter_flat(world.voltflex_connections, tomorrow, isps, "4.000")

    result = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow)

    settlement = result.statement.order_settlements.get()
    assert settlement.unit_price_eur_per_kwh == Decimal("1.111111")
    assert [line.paid_eur for line in settlement.lines.all()] == [Decimal("3.33")] * 3
    assert settlement.total_eur == Decimal("9.99")
    assert result.statement.total_eur == Decimal("9.99")


def test_an_increase_order_is_paid_for_load_above_the_baseline(world: World, tomorrow: date) -> None:
    # Unsolicited +10 kW on 3 ISPs for EUR 7.50: 7.5 kWh ordered, 1.00 EUR/kWh.
    isps = order_isps(tomorrow)[:3]
    order = place_order(world, tomorrow, isps=isps, power_w=10_000, price="7.50", solicited=False)
    assert order.flex_offer.flex_request_id is None
    a, b, c = isps
    meter_readings_import(
        rows=[
            *(
                meter_row(conn, tomorrow, a, kwh)
                for conn, kwh in zip(world.voltflex_connections, ("6.000", "6.000", "5.500"), strict=True)
            ),
            *(meter_row(conn, tomorrow, b, "5.417") for conn in world.voltflex_connections[:2]),
            meter_row(world.voltflex_connections[2], tomorrow, b, "5.416"),
            *(
                meter_row(conn, tomorrow, c, kwh)
                for conn, kwh in zip(world.voltflex_connections, ("4.500", "4.500", "4.750"), strict=True)
            ),
        ]
    )

    result = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow)

    settlement = result.statement.order_settlements.get()
    assert line_values(settlement) == [
        (a, 60_000, 70_000, 10_000, 10_000, Decimal("2.50")),  # 17.5 kWh: 10 kW more, the full order
        (b, 60_000, 65_000, 10_000, 5_000, Decimal("1.25")),  # 16.25 kWh: half of it
        (c, 60_000, 55_000, 10_000, 0, Decimal("0.00")),  # 13.75 kWh: less load, the wrong way
    ]
    assert (settlement.ordered_kwh, settlement.delivered_kwh) == (Decimal("7.500"), Decimal("3.750"))
    assert settlement.unit_price_eur_per_kwh == Decimal("1")
    assert settlement.total_eur == Decimal("3.75")


def test_two_orders_on_the_same_isps_share_the_delivered_flex_instead_of_both_being_paid_for_it(
    world: World, tomorrow: date
) -> None:
    # Two -12 kW offers on the same ISPs, both against the same D-prognosis, both bought: 24 kW ordered.
    # The portfolio reduces by 12 kW only, so at most 12 kW x 4 ISPs = 12 kWh may be paid (UFTP-BRIEF 9.3:
    # D = s * min(|F|, max(0, s * R)) with F the flex ordered on the ISP).
    isps = order_isps(tomorrow)
    prognosis = market_services.d_prognosis_submit(
        aggregator=world.voltflex,
        congestion_point=world.cp_north,
        period=tomorrow,
        isps=[IspPower(isp=slot.index, power_w=BASELINE_W) for slot in isp_time.isp_slots(tomorrow)],
    )
    flex_request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow, reduction_w=24_000, isps=isps)
    offers = [
        market_services.flex_offer_submit(
            aggregator=world.voltflex,
            congestion_point=world.cp_north,
            period=tomorrow,
            options=[option(power_w=-12_000, price="24.00", isps=isps)],
            expires_at=flex_request.expires_at,
            flex_request=flex_request,
            d_prognosis=prognosis,
        )
        for _ in range(2)
    ]
    for offer in offers:
        market_services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
    meter_flat(world.voltflex_connections, tomorrow, isps, "4.000")  # 48 kW: 12 kW below the baseline

    result = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow)

    assert result.settled_orders == 2
    settlements = list(result.statement.order_settlements.all())
    assert sum((s.delivered_kwh for s in settlements), Decimal(0)) == Decimal("12.000")
    assert result.statement.total_eur == Decimal("24.00")


# --- incomplete meter data --------------------------------------------------------------------------------


def test_an_order_with_a_missing_reading_waits_and_no_statement_is_issued(world: World, tomorrow: date) -> None:
    isps = order_isps(tomorrow)
    order = place_order(world, tomorrow, isps=isps)
    missing_isp = isps[2]
    late = world.voltflex_connections[1]
    meter_readings_import(
        rows=[
            meter_row(c, tomorrow, isp, "4.000")
            for c in world.voltflex_connections
            for isp in isps
            if not (c == late and isp == missing_isp)
        ]
    )

    result = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow)

    assert result.statement is None
    assert result.settled_orders == 0
    assert list(result.waiting_orders) == [order.order_reference]
    assert f"[{missing_isp}]" in result.waiting_orders[order.order_reference]
    assert Statement.objects.count() == 0
    assert OrderSettlement.objects.count() == 0
    assert SettlementLine.objects.count() == 0
    order.refresh_from_db()
    assert order.status == FlexOrder.Status.PLACED

    meter_readings_import(rows=[meter_row(late, tomorrow, missing_isp, "4.000")])
    results = settle_day(period=tomorrow)

    assert [(r.settled_orders, r.waiting_orders) for r in results] == [(1, {})]
    assert results[0].statement.total_eur == Decimal("24.00")
    order.refresh_from_db()
    assert order.status == FlexOrder.Status.SETTLED


def test_a_complete_order_is_settled_while_an_incomplete_one_waits(world: World, tomorrow: date) -> None:
    isps = evening_isps(tomorrow)
    complete = place_order(world, tomorrow, isps=isps[0:2])
    waiting = place_order(world, tomorrow, isps=isps[8:10], solicited=False)
    meter_flat(world.voltflex_connections, tomorrow, isps[0:2], "4.000")
    meter_flat(world.voltflex_connections, tomorrow, isps[8:9], "4.000")  # isps[9] has no readings at all

    result = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow)

    assert result.settled_orders == 1
    assert list(result.waiting_orders) == [waiting.order_reference]
    assert f"[{isps[9]}]" in result.waiting_orders[waiting.order_reference]
    assert [s.flex_order_id for s in result.statement.order_settlements.all()] == [complete.pk]
    assert FlexOrder.objects.get(pk=complete.pk).status == FlexOrder.Status.SETTLED
    assert FlexOrder.objects.get(pk=waiting.pk).status == FlexOrder.Status.PLACED


# --- runs, versions and the nightly job -------------------------------------------------------------------


def test_settle_day_twice_issues_one_statement(world: World, tomorrow: date) -> None:
    isps = order_isps(tomorrow)
    place_order(world, tomorrow, isps=isps)
    meter_flat(world.voltflex_connections, tomorrow, isps, "4.000")

    first = settle_day(period=tomorrow)
    second = settle_day(period=tomorrow)

    assert [(r.statement is not None, r.settled_orders, r.issued) for r in first] == [(True, 1, True)]
    assert [(r.statement, r.settled_orders, r.unchanged_orders, r.issued) for r in second] == [
        (first[0].statement, 0, 1, False)]
    assert Statement.objects.count() == 1
    assert OrderSettlement.objects.count() == 1


def test_issuing_again_changes_nothing_until_a_reading_is_corrected_then_version_2_supersedes_version_1(
    world: World, tomorrow: date
) -> None:
    first = issue_reference_statement(world, tomorrow)

    again = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow)

    assert (again.statement, again.issued, again.settled_orders, again.unchanged_orders) == (first, False, 0, 1)
    assert Statement.objects.count() == 1

    # A corrected reading: v1 drew 1.25 kWh in the last ISP, not 5.25 -> 49 kW metered, 11 kW delivered (EUR 5.50).
    meter_readings_import(rows=[meter_row(world.voltflex_connections[0], tomorrow, order_isps(tomorrow)[3], "1.250")])
    corrected = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow,
                                period_end=tomorrow)

    second = corrected.statement
    first.refresh_from_db()
    assert corrected.issued
    assert (first.version, first.status) == (1, Statement.Status.SUPERSEDED)
    assert (second.version, second.status, second.previous_version) == (2, Statement.Status.ISSUED, first)
    assert (first.total_eur, second.total_eur) == (Decimal("15.00"), Decimal("20.50"))
    assert line_values(second.order_settlements.get())[3][2:] == (49_000, -12_000, 11_000, Decimal("5.50"))
    assert line_values(first.order_settlements.get())[3][2:] == (65_000, -12_000, 0, Decimal("0.00"))
    assert FlexOrder.objects.get().status == FlexOrder.Status.SETTLED


def test_the_nightly_task_settles_the_previous_market_day(world: World, tomorrow: date) -> None:
    isps = order_isps(tomorrow)
    place_order(world, tomorrow, isps=isps)
    meter_flat(world.voltflex_connections, tomorrow, isps, "4.000")
    day_after = tomorrow + timedelta(days=1)

    with patch("common.time.now", return_value=isp_time.day_start(tomorrow) + timedelta(hours=12)):
        same_day = settle_previous_day_task()
    with patch("common.time.now", return_value=isp_time.day_start(day_after) + timedelta(hours=2)):
        next_night = settle_previous_day_task()

    assert same_day["statements"] == 0
    assert next_night == {"period": tomorrow.isoformat(), "statements": 1, "settled_orders": 1, "waiting_orders": 0}
    statement = Statement.objects.get()  # the month's statement for the pair (the FlexSettlement period)
    assert (statement.period_start, statement.period_end) == month_of(tomorrow)
    assert statement.period_start <= tomorrow <= statement.period_end


def test_an_order_waiting_for_late_meter_data_is_settled_by_a_later_nightly_run(world: World, tomorrow: date) -> None:
    isps = order_isps(tomorrow)
    order = place_order(world, tomorrow, isps=isps)
    meter_flat(world.voltflex_connections[:2], tomorrow, isps, "4.000")  # the third meter reports late
    first_night = isp_time.day_start(tomorrow + timedelta(days=1)) + timedelta(hours=2)

    with patch("common.time.now", return_value=first_night):
        assert settle_previous_day_task()["waiting_orders"] == 1
    meter_flat(world.voltflex_connections[2:], tomorrow, isps, "4.000")
    with patch("common.time.now", return_value=first_night + timedelta(days=1)):
        settle_previous_day_task()

    order.refresh_from_db()
    assert order.status == FlexOrder.Status.SETTLED


def test_a_period_ending_before_it_starts_is_refused(world: World, tomorrow: date) -> None:
    with pytest.raises(ApplicationError) as raised:
        statement_issue(
            dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow - timedelta(days=1)
        )

    assert (raised.value.code, raised.value.field) == ("period_out_of_bounds", "period_end")
    assert Statement.objects.count() == 0
