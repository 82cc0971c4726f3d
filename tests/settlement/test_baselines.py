"""Each baseline method on hand-computed cases, DST days included, and the method chosen per market/contract.

History is written as flat or hour-shaped loads on Voltflex's three meters behind cp_north: a day "at 36 kW" has
3 kWh per meter per ISP (36 kW x 0.25 h / 3 meters)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from aggregator.models import SessionSchedule
from common import isp as isp_time
from common.exceptions import ApplicationError
from market.models import FlexOrder
from settlement.baselines import BaselineRequest, baseline_method_load, baseline_terms_for
from settlement.baselines.base import DEFAULT_METHOD, same_local_time_start
from settlement.baselines.d_prognosis import UsefDPrognosis
from settlement.baselines.ev_counterfactual import EvCounterfactual
from settlement.baselines.historical import HighXOfY, MeterBeforeAfter, NodesFiveDay
from settlement.models import MeterReading
from tests.builders import evening_isps, make_prognosis
from tests.conftest import World
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory

pytestmark = pytest.mark.django_db

WEDNESDAY = date(2026, 11, 18)
AUTUMN_DST = date(2026, 10, 25)  # Sunday, 100 ISPs
SPRING_DST = date(2027, 3, 28)  # Sunday, 92 ISPs


def fill(world: World, day: date, kw: Callable[[datetime], int] | int, isps: list[int] | None = None) -> None:
    """Readings on Voltflex's three meters: `kw` total (a number, or a function of the local ISP start)."""
    rows = []
    for slot in isp_time.isp_slots(day):
        if isps is not None and slot.index not in isps:
            continue
        total_kw = kw(slot.local_start) if callable(kw) else kw
        per_meter_kwh = Decimal(total_kw) / 4 / 3
        rows += [MeterReading(connection=c, isp_start=slot.start, kwh_import=per_meter_kwh.quantize(Decimal("0.001")))
                 for c in world.voltflex_connections]
    MeterReading.objects.bulk_create(rows)


def request(world: World, day: date, isps: list[int], **extra) -> BaselineRequest:
    return BaselineRequest(aggregator=world.voltflex, congestion_point=world.cp_north, period=day, isps=isps,
                           connections=[c.ean for c in world.voltflex_connections], **extra)


def compute(method, world: World, day: date, isps: list[int], parameters=None, **extra):
    implementation = method()
    return implementation.compute(request(world, day, isps, **extra), implementation.parameters(parameters))


def kw(values: dict[int, int]) -> dict[int, int]:
    return {isp: w * 1000 for isp, w in values.items()}


# --- D-prognosis ------------------------------------------------------------------------------------------------


def test_d_prognosis_takes_the_prognosis_values(world: World, tomorrow: date) -> None:
    prognosis = make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=tomorrow, power_w=54_321)
    isps = evening_isps(tomorrow)[:3]

    result = compute(UsefDPrognosis, world, tomorrow, isps, d_prognosis=prognosis)

    assert result.values_w == {isp: 54_321 for isp in isps}
    assert result.inputs == {"d_prognosis": str(prognosis.pk), "revision": prognosis.revision}
    with pytest.raises(ApplicationError) as raised:
        compute(UsefDPrognosis, world, tomorrow, isps)
    assert raised.value.code == "no_baseline"


# --- NODES 5-day average ----------------------------------------------------------------------------------------

HISTORY_KW = {date(2026, 11, 17): 12, date(2026, 11, 16): 24, date(2026, 11, 13): 36, date(2026, 11, 12): 48,
              date(2026, 11, 11): 60, date(2026, 11, 10): 72, date(2026, 11, 15): 999, date(2026, 11, 14): 999}


def test_nodes_averages_the_five_preceding_working_days(world: World) -> None:
    for day, load in HISTORY_KW.items():
        fill(world, day, load)
    isps = evening_isps(WEDNESDAY)[:4]

    result = compute(NodesFiveDay, world, WEDNESDAY, isps)

    # Tue 17, Mon 16, Fri 13, Thu 12, Wed 11 (the weekend's 999 kW is not a working day): (12+24+36+48+60)/5 = 36.
    assert result.values_w == kw({isp: 36 for isp in isps})
    assert result.inputs["days"] == ["2026-11-11", "2026-11-12", "2026-11-13", "2026-11-16", "2026-11-17"]


def test_nodes_skips_event_days_and_incomplete_days(world: World) -> None:
    for day, load in HISTORY_KW.items():
        fill(world, day, load)
    FlexOrder.objects.create(dso=world.gridco, aggregator=world.voltflex, congestion_point=world.cp_north,
                             period=date(2026, 11, 17), order_reference="ORD-EVENT", price_eur=Decimal("1.00"))
    isps = evening_isps(WEDNESDAY)[:4]
    # The 16th misses one reading at 17:15 (a gap elsewhere in the day would not matter: only these ISPs count).
    MeterReading.objects.filter(isp_start=isp_time.isp_start(date(2026, 11, 16), isps[1]),
                                connection=world.voltflex_connections[0]).delete()
    fill(world, date(2026, 11, 9), 84)

    result = compute(NodesFiveDay, world, WEDNESDAY, isps)

    # 17th had an event, 16th a gap: 13, 12, 11, 10, 9 -> (36+48+60+72+84)/5 = 60 kW.
    assert result.values_w == kw({isp: 60 for isp in isps})
    with pytest.raises(ApplicationError) as raised:
        compute(NodesFiveDay, world, WEDNESDAY, isps, {"days": 7})
    assert raised.value.code == "insufficient_history"


# --- High X of Y --------------------------------------------------------------------------------------------------


def high_2_of_3(world: World, target_kw: int | None, parameters: dict | None = None):
    for day, load in HISTORY_KW.items():
        fill(world, day, load)
    isps = evening_isps(WEDNESDAY)[4:8]  # 18:00-19:00
    if target_kw is not None:  # the event day's own load before the event (the adjustment window)
        fill(world, WEDNESDAY, target_kw, isps=list(range(isps[0] - 16, isps[0] - 4)))
    return isps, compute(HighXOfY, world, WEDNESDAY, isps, {"x": 2, "y": 3, **(parameters or {})})


def test_high_x_of_y_averages_the_highest_x_of_the_last_y_days(world: World) -> None:
    isps, result = high_2_of_3(world, None, {"adjustment": False})

    # Last 3 weekdays: 17 (12 kW), 16 (24), 13 (36); the highest 2: 36 and 24 -> 30 kW.
    assert result.values_w == kw({isp: 30 for isp in isps})
    assert result.inputs["eligible_days"] == ["2026-11-17", "2026-11-16", "2026-11-13"]
    assert result.inputs["chosen_days"] == ["2026-11-13", "2026-11-16"]


def test_the_adjustment_raises_the_baseline_but_no_more_than_the_cap(world: World) -> None:
    # Before the event the portfolio drew 48 kW where its baseline days drew 30: +18 kW, capped at 20 % of 30 = 6.
    isps, result = high_2_of_3(world, 48)

    assert result.values_w == kw({isp: 36 for isp in isps})
    assert (result.inputs["adjustment"]["raw_w"], result.inputs["adjustment"]["cap_w"],
            result.inputs["adjustment"]["applied_w"]) == (18_000, 6_000, 6_000)


def test_a_small_upward_adjustment_is_applied_in_full(world: World) -> None:
    isps, result = high_2_of_3(world, 33)

    assert result.values_w == kw({isp: 33 for isp in isps})


def test_the_adjustment_never_lowers_the_baseline(world: World) -> None:
    # 24 kW before the event: 6 kW below the baseline days. Upward-only: the baseline stays at 30 kW.
    isps, result = high_2_of_3(world, 24)

    assert result.values_w == kw({isp: 30 for isp in isps})
    assert (result.inputs["adjustment"]["raw_w"], result.inputs["adjustment"]["applied_w"]) == (-6_000, 0)


def test_high_x_of_y_needs_x_eligible_days(world: World) -> None:
    fill(world, date(2026, 11, 17), 12)
    with pytest.raises(ApplicationError) as raised:
        compute(HighXOfY, world, WEDNESDAY, evening_isps(WEDNESDAY)[:2], {"x": 2, "y": 3})
    assert raised.value.code == "insufficient_history"
    with pytest.raises(ApplicationError) as raised:
        HighXOfY().parameters({"z": 1})
    assert raised.value.code == "invalid_baseline_parameters"


# --- meter before / after -----------------------------------------------------------------------------------------


def test_meter_before_after_averages_the_windows_around_the_event(world: World) -> None:
    isps = evening_isps(WEDNESDAY)[4:8]
    fill(world, WEDNESDAY, 36, isps=list(range(isps[0] - 4, isps[0])))
    fill(world, WEDNESDAY, 60, isps=list(range(isps[-1] + 1, isps[-1] + 5)))

    result = compute(MeterBeforeAfter, world, WEDNESDAY, isps)

    assert result.values_w == kw({isp: 48 for isp in isps})  # (4 x 36 + 4 x 60) / 8
    assert len(result.inputs["before"]) == len(result.inputs["after"]) == 4


def test_meter_before_after_crosses_midnight_and_waits_for_the_after_window(world: World) -> None:
    day = WEDNESDAY
    last = isp_time.isp_count(day)
    isps = [last - 1, last]  # 23:30-24:00
    fill(world, day, 24, isps=list(range(last - 5, last - 1)))
    with pytest.raises(ApplicationError) as raised:
        compute(MeterBeforeAfter, world, day, isps)
    assert raised.value.code == "meter_data_incomplete"

    fill(world, day + timedelta(days=1), 48, isps=[1, 2, 3, 4])
    result = compute(MeterBeforeAfter, world, day, isps)
    assert result.values_w == kw({isp: 36 for isp in isps})


# --- EV counterfactual --------------------------------------------------------------------------------------------


def test_ev_counterfactual_puts_back_what_the_schedule_moved(world: World, tomorrow: date) -> None:
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
    charge_point = ChargePointFactory(cpo=cpo, connection=world.voltflex_connections[0], max_power_w=11_000)
    five_pm = isp_time.isp_start(tomorrow, evening_isps(tomorrow)[0])
    session = ChargingSessionFactory(charge_point=charge_point, arrival_at=five_pm,
                                     expected_departure_at=five_pm + timedelta(hours=6),
                                     energy_requested_kwh=Decimal("11.000"), max_power_w=11_000)
    # Uncontrolled: 11 kW 17:00-18:00. The schedule moved it to 19:00-20:00.
    start = isp_time.day_start(tomorrow)
    first = evening_isps(tomorrow)[0] - 1
    slots = [0] * isp_time.isp_count(tomorrow)
    for offset in range(8, 12):
        slots[first + offset] = 11_000
    SessionSchedule.objects.create(session=session, start=start, slot_power_w=slots, planned_energy_kwh=Decimal("11"))
    five, seven = evening_isps(tomorrow)[0], evening_isps(tomorrow)[8]
    measured = {five: Decimal(30_000), seven: Decimal(45_000)}

    result = compute(EvCounterfactual, world, tomorrow, [five, seven], measured_w=measured)

    # 17:00: 30 kW metered + 11 kW the car would have drawn; 19:00: 45 kW metered - the 11 kW it drew by plan.
    assert result.values_w == {five: 41_000, seven: 34_000}
    assert (result.inputs["sessions"], result.inputs["scheduled"]) == (1, 1)


# --- DST days -----------------------------------------------------------------------------------------------------


def by_hour(local: datetime) -> int:
    return 12 * (local.hour + 1)  # 12 kW at 00:xx, 24 kW at 01:xx, 36 kW at 02:xx ...


def test_the_autumn_dst_day_gets_100_isps_and_both_02_00_hours_match_history(world: World) -> None:
    for offset in range(1, 8):
        fill(world, AUTUMN_DST - timedelta(days=offset), by_hour)
    isps = list(range(1, isp_time.isp_count(AUTUMN_DST) + 1))
    assert len(isps) == 100

    result = compute(NodesFiveDay, world, AUTUMN_DST, isps)

    assert len(result.values_w) == 100
    assert result.values_w[9] == result.values_w[13] == 36_000  # 02:00 CEST and 02:00 CET
    assert result.values_w[100] == 12 * 24 * 1000  # 23:45
    assert result.values_w[17] == 48_000  # 03:00 CET


def test_the_spring_dst_day_gets_92_isps_and_skips_the_missing_hour(world: World) -> None:
    for offset in range(1, 8):
        fill(world, SPRING_DST - timedelta(days=offset), by_hour)
    isps = list(range(1, isp_time.isp_count(SPRING_DST) + 1))
    assert len(isps) == 92

    result = compute(NodesFiveDay, world, SPRING_DST, isps, {"exclude_event_days": False})

    assert len(result.values_w) == 92
    assert result.values_w[8] == 24_000 and result.values_w[9] == 48_000  # 01:45, then 03:00


def test_a_history_day_without_the_clock_time_is_left_out_of_that_isp_only(world: World) -> None:
    target = date(2027, 4, 4)  # Sunday; same-day-type history: Sat 3 Apr, Sun 28 Mar (spring DST), Sat 27 Mar
    fill(world, date(2027, 4, 3), 12)
    fill(world, SPRING_DST, 48)
    fill(world, date(2027, 3, 27), 24)
    two_am = isp_time.isp_of(datetime(2027, 4, 4, 2, 15, tzinfo=isp_time.MARKET_TZ))[1]
    ten_am = isp_time.isp_of(datetime(2027, 4, 4, 10, 0, tzinfo=isp_time.MARKET_TZ))[1]
    assert same_local_time_start(SPRING_DST, target, two_am) is None

    result = compute(HighXOfY, world, target, [two_am, ten_am], {"x": 3, "y": 3, "adjustment": False})

    assert result.values_w == {two_am: 18_000, ten_am: 28_000}  # (12 + 24) / 2 and (12 + 48 + 24) / 3


# --- choosing the method ------------------------------------------------------------------------------------------


def test_the_method_comes_from_the_contract_then_the_market_then_the_default(world: World, tomorrow: date) -> None:
    order = FlexOrder.objects.create(dso=world.gridco, aggregator=world.voltflex, congestion_point=world.cp_north,
                                     period=tomorrow, order_reference="ORD-TERMS", price_eur=Decimal("1.00"))
    assert baseline_terms_for(order) == (DEFAULT_METHOD, {})
    market = world.cp_north.market
    market.baseline_method = "settlement.baselines.historical.NodesFiveDay"
    market.baseline_parameters = {"days": 4}
    market.save()
    order.refresh_from_db()
    assert baseline_terms_for(order) == ("settlement.baselines.historical.NodesFiveDay", {"days": 4})

    from market.services import flex_contract_create

    contract = flex_contract_create(dso=world.gridco, aggregator=world.voltflex, congestion_point=world.cp_north,
                                    contract_id="GV-BASELINE", valid_from=tomorrow)
    contract.baseline_method = "settlement.baselines.historical.MeterBeforeAfter"
    contract.save()
    order.contract = contract
    order.save()
    assert baseline_terms_for(order) == ("settlement.baselines.historical.MeterBeforeAfter", {})
    assert isinstance(baseline_method_load(contract.baseline_method), MeterBeforeAfter)
    for bad in ("settlement.baselines.nope.Missing", "settlement.services.settle.usef_isp"):
        with pytest.raises(ApplicationError) as raised:
            baseline_method_load(bad)
        assert raised.value.code == "unknown_baseline_method"
