"""The USEF settlement arithmetic (UFTP-BRIEF 9.3), and its worked example reproduced exactly.

Spec example: one ISP, baseline B = 10 MW, 2 MW ordered down (B' = 8 MW), price 7 EUR/MW, penalty 11 EUR/MW.
Actual 7/8/9/10/11 MW -> delivered 2/2/1/0/0 MW, deficiency 0/0/1/2/3 MW, settlement +14/+14/-4/-22/-33 EUR.
In our units the order costs EUR 14 for 2 MW x 0.25 h = 500 kWh (EUR 0.028/kWh, i.e. 7 EUR per MW-ISP) and the
penalty is 11 EUR per MW-ISP = 11 / 250 kWh = EUR 0.044/kWh of deficiency.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from common import isp as isp_time
from market.models import Connection
from settlement.models import MeterReading, SettlementLine
from settlement.services import settle_day
from settlement.services.settle import isp_money, usef_isp
from tests.builders import evening_isps
from tests.conftest import World
from tests.settlement.test_settle import place_order

pytestmark = pytest.mark.django_db

MW = 1_000_000
UNIT_PRICE = Decimal(14) / Decimal(500)  # EUR per kWh: EUR 14 for 500 kWh
PENALTY = Decimal("0.044")  # EUR per kWh of deficiency = 11 EUR per MW-ISP

WORKED_EXAMPLE = [  # actual MW -> (delivered MW, deficiency MW, net EUR)
    (7, 2, 0, Decimal("14.00")),
    (8, 2, 0, Decimal("14.00")),
    (9, 1, 1, Decimal("-4.00")),
    (10, 0, 2, Decimal("-22.00")),
    (11, 0, 3, Decimal("-33.00")),
]


@pytest.mark.parametrize(("actual_mw", "delivered_mw", "deficiency_mw", "net"), WORKED_EXAMPLE)
def test_the_arithmetic_reproduces_the_worked_example(actual_mw, delivered_mw, deficiency_mw, net) -> None:
    outcome = usef_isp(baseline_w=Decimal(10 * MW), ordered_w=Decimal(-2 * MW), actual_w=Decimal(actual_mw * MW))

    payment, penalty = isp_money(delivered_w=outcome.delivered_w, deficiency_w=outcome.deficiency_w,
                                 unit_price=UNIT_PRICE, penalty_rate=PENALTY)
    assert (outcome.delivered_w, outcome.deficiency_w) == (delivered_mw * MW, deficiency_mw * MW)
    assert payment - penalty == net
    assert payment == delivered_mw * 7 and penalty == deficiency_mw * 11


def test_an_upward_order_mirrors_it() -> None:
    # +2 MW ordered on a 10 MW baseline: 11.5 MW actual delivers 1.5 MW and falls 0.5 MW short.
    outcome = usef_isp(baseline_w=Decimal(10 * MW), ordered_w=Decimal(2 * MW), actual_w=Decimal("11.5") * MW)
    assert (outcome.realised_w, outcome.delivered_w, outcome.deficiency_w) == (Decimal("1.5") * MW,
                                                                              Decimal("1.5") * MW, Decimal("0.5") * MW)
    # Over-delivery earns nothing extra and costs nothing.
    over = usef_isp(baseline_w=Decimal(10 * MW), ordered_w=Decimal(2 * MW), actual_w=Decimal(13 * MW))
    assert (over.delivered_w, over.deficiency_w) == (2 * MW, 0)


def _meter(connections: list[Connection], day: date, isp: int, total_kwh: Decimal) -> None:
    """Readings that add up to `total_kwh` exactly (3 decimals; the rest on the first meter). Written directly:
    a 10 MW portfolio on three meters is beyond the importer's plausibility check for a household."""
    share = (total_kwh / len(connections)).quantize(Decimal("0.001"))
    values = [total_kwh - share * (len(connections) - 1)] + [share] * (len(connections) - 1)
    MeterReading.objects.bulk_create(
        MeterReading(connection=connection, isp_start=isp_time.isp_start(day, isp), kwh_import=value)
        for connection, value in zip(connections, values, strict=True)
    )


def test_the_engine_settles_the_worked_example_exactly(world: World, tomorrow: date) -> None:
    market = world.cp_north.market
    market.penalty_eur_per_kwh = PENALTY
    market.save()
    days = [tomorrow + timedelta(days=offset) for offset in range(len(WORKED_EXAMPLE))]
    isps = {}
    for day, (actual_mw, *_ ) in zip(days, WORKED_EXAMPLE, strict=True):
        isps[day] = evening_isps(day)[0]
        place_order(world, day, isps=[isps[day]], power_w=-2 * MW, price="14.00", baseline_w=10 * MW)
        _meter(world.voltflex_connections, day, isps[day], Decimal(actual_mw * MW) / 4000)  # MW x 0.25 h in kWh

    for day in days:
        settle_day(period=day)

    for day, (actual_mw, delivered_mw, deficiency_mw, net) in zip(days, WORKED_EXAMPLE, strict=True):
        line = SettlementLine.objects.get(order_settlement__flex_order__period=day,
                                          order_settlement__statement__status="issued")
        assert (line.isp, line.baseline_w, line.measured_w, line.ordered_w) == (isps[day], 10 * MW, actual_mw * MW,
                                                                               -2 * MW)
        assert (line.delivered_w, line.deficiency_w) == (delivered_mw * MW, deficiency_mw * MW)
        assert (line.payment_eur, line.penalty_eur, line.paid_eur) == (delivered_mw * 7, deficiency_mw * 11, net)
        settlement = line.order_settlement
        assert (settlement.unit_price_eur_per_kwh, settlement.penalty_eur_per_kwh) == (Decimal("0.028"), PENALTY)
        assert settlement.total_eur == net == settlement.payment_eur - settlement.penalty_eur
        assert settlement.deficiency_kwh == deficiency_mw * 250


def test_a_contract_penalty_rate_overrides_the_markets(world: World, tomorrow: date) -> None:
    world.cp_north.market.penalty_eur_per_kwh = Decimal("1.0000")
    world.cp_north.market.save()
    isp = evening_isps(tomorrow)[0]
    order = place_order(world, tomorrow, isps=[isp], power_w=-12_000, price="6.00")
    from market.services import flex_contract_create

    contract = flex_contract_create(dso=world.gridco, aggregator=world.voltflex, congestion_point=world.cp_north,
                                    contract_id="GV-PENALTY", valid_from=tomorrow)
    contract.penalty_eur_per_kwh = Decimal("0.5000")
    contract.save()
    type(order).objects.filter(pk=order.pk).update(contract=contract)
    _meter(world.voltflex_connections, tomorrow, isp, Decimal("15"))  # 60 kW: nothing delivered, 12 kW short

    settle_day(period=tomorrow)

    line = SettlementLine.objects.get()
    # 12 kW x 0.25 h = 3 kWh short x EUR 0.50 = EUR 1.50 (the market's EUR 1.00 would give 3.00).
    assert (line.delivered_w, line.deficiency_w, line.payment_eur, line.penalty_eur, line.paid_eur) == (
        0, 12_000, Decimal("0.00"), Decimal("1.50"), Decimal("-1.50"))
