"""Driver rewards and the driver transparency report: an order's revenue goes to the sessions that delivered it,
pro rata to the kWh each moved out of the ordered ISPs, to the cent; the report shows per session and per driver
what was delivered, shifted, met and earned (aggregator only, current statement versions only)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.models import ChargingSession, Driver, SessionSchedule
from common import isp as isp_time
from settlement.models import SessionReward, Statement
from settlement.services import meter_readings_import, statement_issue
from settlement.services.rewards import allocate_cents
from tests.conftest import World, api_client_for
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory
from tests.settlement.test_settle import issue_reference_statement, meter_row, order_isps

pytestmark = pytest.mark.django_db

SESSIONS_URL = "/api/v1/settlement/driver-report/sessions/"
DRIVERS_URL = "/api/v1/settlement/driver-report/drivers/"


@given(total_cents=st.integers(min_value=0, max_value=10_000_000),
       weights=st.lists(st.decimals(min_value=0, max_value=10_000, places=3), min_size=1, max_size=40))
def test_allocation_adds_up_to_the_cent(total_cents: int, weights: list[Decimal]) -> None:
    total = Decimal(total_cents) / 100
    parts = allocate_cents(total, weights)

    assert len(parts) == len(weights)
    assert all(part == part.quantize(Decimal("0.01")) and part >= 0 for part in parts)
    if sum(weights) > 0:
        assert sum(parts) == total
        for weight, part in zip(weights, parts, strict=True):  # never more than a cent from the exact share
            assert abs(part - total * weight / sum(weights)) < Decimal("0.01")
    else:
        assert sum(parts) == 0


def test_a_remainder_cent_goes_to_the_largest_remainder() -> None:
    assert allocate_cents(Decimal("15.00"), [Decimal(1)] * 7) == [Decimal("2.15")] * 2 + [Decimal("2.14")] * 5
    assert allocate_cents(Decimal("-3.00"), [Decimal(1), Decimal(2)]) == [Decimal(0), Decimal(0)]


def ev_session(world: World, day: date, *, energy_kwh: str, arrive_isp: int, charge_from_isp: int,
               driver: Driver | None = None, delivered_kwh: str | None = None) -> ChargingSession:
    """A car that would charge at 11 kW from arrival; its schedule charges at 11 kW from `charge_from_isp`."""
    cpo = world.__dict__.setdefault("_cpo", ChargePointOperatorFactory(aggregator=world.voltflex))
    charge_point = ChargePointFactory(cpo=cpo, connection=world.voltflex_connections[0], max_power_w=11_000)
    arrival = isp_time.isp_start(day, arrive_isp)
    session = ChargingSessionFactory(
        charge_point=charge_point, arrival_at=arrival, expected_departure_at=arrival + timedelta(hours=8),
        energy_requested_kwh=Decimal(energy_kwh), max_power_w=11_000, driver=driver,
        status=ChargingSession.Status.COMPLETED if delivered_kwh else ChargingSession.Status.PENDING,
        energy_delivered_kwh=Decimal(delivered_kwh) if delivered_kwh else None)
    slots = [0] * isp_time.isp_count(day)
    remaining = Decimal(energy_kwh)
    index = charge_from_isp - 1
    while remaining > 0:
        slots[index] = 11_000
        remaining -= Decimal("2.75")
        index += 1
    SessionSchedule.objects.create(session=session, start=isp_time.day_start(day), slot_power_w=slots,
                                   planned_energy_kwh=Decimal(energy_kwh))
    return session


@pytest.fixture
def fleet(world: World, tomorrow: date) -> dict[str, ChargingSession]:
    six_pm, seven_pm = order_isps(tomorrow)[0], order_isps(tomorrow)[0] + 4
    commuter = Driver.objects.create(aggregator=world.voltflex, reference="drv-1")
    return {
        # Uncontrolled: 11 kW through 18:00-19:00 (the ordered ISPs) -> moved 11 kWh.
        "a": ev_session(world, tomorrow, energy_kwh="11.000", arrive_isp=six_pm, charge_from_isp=seven_pm,
                        driver=commuter, delivered_kwh="11.000"),
        # Uncontrolled: 11 kW for two ISPs -> moved 5.5 kWh; the car left 0.5 kWh short.
        "b": ev_session(world, tomorrow, energy_kwh="5.500", arrive_isp=six_pm, charge_from_isp=seven_pm,
                        delivered_kwh="5.000"),
        # Arrives after the ordered ISPs: moved nothing.
        "c": ev_session(world, tomorrow, energy_kwh="5.500", arrive_isp=seven_pm + 4, charge_from_isp=seven_pm + 4,
                        driver=commuter),
    }


def test_the_order_revenue_is_shared_pro_rata_to_the_shift(world: World, tomorrow: date, fleet) -> None:
    statement = issue_reference_statement(world, tomorrow)  # EUR 15.00 for the order

    rewards = {r.session_id: r for r in SessionReward.objects.filter(order_settlement__statement=statement)}
    assert set(rewards) == {fleet["a"].pk, fleet["b"].pk}
    assert (rewards[fleet["a"].pk].shifted_kwh, rewards[fleet["a"].pk].reward_eur) == (Decimal("11.000"),
                                                                                      Decimal("10.00"))
    assert (rewards[fleet["b"].pk].shifted_kwh, rewards[fleet["b"].pk].reward_eur) == (Decimal("5.500"),
                                                                                      Decimal("5.00"))
    assert sum(r.reward_eur for r in rewards.values()) == statement.order_settlements.get().total_eur


def test_the_session_report(world: World, tomorrow: date, fleet) -> None:
    issue_reference_statement(world, tomorrow)

    response = api_client_for(world.voltflex_user).get(SESSIONS_URL, {"month": tomorrow.strftime("%Y-%m")})

    assert response.status_code == 200
    rows = {row["session"]: row for row in response.json()}
    a, b, c = (rows[str(fleet[key].pk)] for key in "abc")
    assert (a["driver_reference"], a["energy_delivered_kwh"], a["energy_shifted_kwh"], a["requested_energy_met"],
            a["reward_eur"]) == ("drv-1", "11.000", "11.000", True, "10.00")
    assert (b["driver"], b["energy_delivered_kwh"], b["shortfall_kwh"], b["requested_energy_met"], b["reward_eur"]) \
        == (None, "5.000", "0.500", False, "5.00")
    assert (c["energy_delivered_kwh"], c["energy_shifted_kwh"], c["reward_eur"], c["orders"]) == (
        "5.500", "0.000", "0.00", [])  # not ended yet: the planned energy
    assert a["orders"] == [fleet["a"].rewards.get().order_settlement.flex_order.order_reference]


def test_the_driver_report_sums_per_driver_and_counts_only_current_versions(
    world: World, tomorrow: date, fleet
) -> None:
    issue_reference_statement(world, tomorrow)
    # A corrected reading issues version 2 (EUR 20.50): the rewards follow it, version 1's are not counted twice.
    meter_readings_import(rows=[meter_row(world.voltflex_connections[0], tomorrow, order_isps(tomorrow)[3], "1.250")])
    statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow)
    current = Statement.objects.get(status="issued")
    assert current.version == 2
    assert sum(r.reward_eur for r in SessionReward.objects.filter(order_settlement__statement=current)) == \
        Decimal("20.50")

    response = api_client_for(world.voltflex_user).get(DRIVERS_URL, {"month": tomorrow.strftime("%Y-%m")})

    assert response.status_code == 200
    assert response.json() == [
        {"driver": str(fleet["a"].driver_id), "driver_reference": "drv-1", "sessions": 2,
         "energy_delivered_kwh": "16.500", "energy_shifted_kwh": "11.000", "sessions_energy_met": 2,
         "reward_eur": "13.67"},
        {"driver": None, "driver_reference": None, "sessions": 1, "energy_delivered_kwh": "5.000",
         "energy_shifted_kwh": "5.500", "sessions_energy_met": 0, "reward_eur": "6.83"},
    ]


def test_the_report_is_the_aggregators_and_needs_a_month(world: World, tomorrow: date, fleet) -> None:
    issue_reference_statement(world, tomorrow)
    month = {"month": tomorrow.strftime("%Y-%m")}

    assert api_client_for(world.gridco_user).get(SESSIONS_URL, month).status_code == 403
    assert api_client_for(world.chargeco_user).get(SESSIONS_URL, month).json() == []
    assert api_client_for(world.chargeco_user).get(DRIVERS_URL, month).json() == []
    for bad in ({}, {"month": "2026-13"}, {"month": "November"}):
        response = api_client_for(world.voltflex_user).get(SESSIONS_URL, bad)
        assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_month")
    other_month = (tomorrow.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    assert api_client_for(world.voltflex_user).get(SESSIONS_URL, {"month": other_month}).json() == []


def test_an_order_that_earned_nothing_records_the_shift_without_a_reward(world: World, tomorrow: date, fleet) -> None:
    from tests.settlement.test_settle import meter_flat, place_order

    isps = order_isps(tomorrow)
    place_order(world, tomorrow, isps=isps)
    meter_flat(world.voltflex_connections, tomorrow, isps, "5.000")  # 60 kW: the baseline, nothing delivered
    statement = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow,
                                period_end=tomorrow).statement

    assert statement.total_eur == Decimal("0.00")
    rewards = {r.session_id: (r.shifted_kwh, r.reward_eur) for r in SessionReward.objects.all()}
    assert rewards == {fleet["a"].pk: (Decimal("11.000"), Decimal("0.00")),
                       fleet["b"].pk: (Decimal("5.500"), Decimal("0.00"))}
