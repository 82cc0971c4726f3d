"""The portfolio optimiser: availability, uncontrolled baseline, offer and dispatch LPs, OCPI power limits, DST."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from aggregator import optimiser
from aggregator.optimiser import (
    DeviationBand,
    Horizon,
    SessionInput,
    availability,
    deliverable_energy_kwh,
    dispatch_optimise,
    offer_optimise,
    profile_limits_w,
    uncontrolled_kw,
)
from common import isp
from common.isp import ISP_HOURS, MARKET_TZ

NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
TOL = 1e-6


def at(hour: int, minute: int = 0, *, next_day: bool = False) -> datetime:
    return NOON.replace(hour=hour, minute=minute) + timedelta(days=1 if next_day else 0)


def session(key: str, arrival: datetime, departure: datetime, energy_kwh: float, max_power_kw: float) -> SessionInput:
    return SessionInput(key=key, arrival=arrival, departure=departure, energy_kwh=energy_kwh, max_power_kw=max_power_kw)


# Three cars that arrive around the evening peak and stay the night, as most evening cars do. Uncontrolled, A charges
# 16:30-19:14, B 17:45-20:27 and C 18:10-22:13, so every slot of 17:00-21:00 carries some EV load.
OVERNIGHT = [
    session("A", at(16, 30), at(7, next_day=True), 30.0, 11.0),
    session("B", at(17, 45), at(8, next_day=True), 20.0, 7.4),
    session("C", at(18, 10), at(6, 30, next_day=True), 15.0, 3.7),
]
HORIZON = Horizon.covering(start=NOON, sessions=OVERNIGHT)
EVENING = range(HORIZON.slot_of(at(17)), HORIZON.slot_of(at(21)))  # slots 20..35


def assert_schedule_is_physical(schedule_kw: np.ndarray, horizon: Horizon, sessions: list[SessionInput]) -> None:
    avail = availability(horizon=horizon, sessions=sessions)
    max_kw = np.array([s.max_power_kw for s in sessions])[:, None] * avail
    assert schedule_kw.shape == avail.shape
    assert np.all(schedule_kw >= 0)
    assert np.all(schedule_kw[avail == 0] == 0), "power planned while the car is not plugged in"
    assert np.all(schedule_kw <= max_kw + 1e-9), "power above the session's max power"


def delivered_kwh(schedule_kw: np.ndarray) -> np.ndarray:
    return schedule_kw.sum(axis=1) * ISP_HOURS


# --- time grid -------------------------------------------------------------------------------------------------------


def test_availability_counts_partial_first_and_last_slots_exactly():
    horizon = Horizon(start=at(17), slots=8)  # 17:00-19:00
    sessions = [
        session("partial", at(17, 7), at(18, 20), 5.0, 11.0),
        session("spans", at(16), at(20), 5.0, 11.0),
        session("later", at(19), at(20), 5.0, 11.0),
    ]

    avail = availability(horizon=horizon, sessions=sessions)

    assert avail.shape == (3, 8)
    assert avail[0, 0] == 8 / 15  # plugged in 17:07: 8 of the 15 minutes of the 17:00 slot
    assert avail[0, 5] == 5 / 15  # unplugged 18:20: 5 minutes of the 18:15 slot
    assert list(avail[0, 1:5]) == [1.0, 1.0, 1.0, 1.0]
    assert list(avail[0, 6:]) == [0.0, 0.0]
    assert np.all(avail[1] == 1.0)  # plugged in before and after the horizon: only the horizon counts
    assert np.all(avail[2] == 0.0)


def test_horizon_covers_the_last_departure_and_numbers_slots_in_elapsed_time():
    sessions = [session("x", at(17, 7), at(18, 20), 5.0, 11.0)]

    horizon = Horizon.covering(start=at(17, 7), sessions=sessions)
    longer = Horizon.covering(start=at(17, 7), sessions=sessions, min_end=at(21))

    assert horizon.start == at(17)
    assert horizon.slots == 6  # 17:00 to the ceiling of 18:20, 18:30
    assert horizon.end == at(18, 30)
    assert longer.slots == 16
    assert horizon.slot_start(4) == at(18)
    assert horizon.slot_of(at(17, 14)) == 0
    assert horizon.slot_of(at(16, 59)) == -1
    assert horizon.slot_of(at(18, 30)) == 6


def test_inputs_must_be_aware_and_ordered():
    with pytest.raises(ValueError, match="timezone-aware"):
        session("naive", datetime(2026, 6, 10, 17), at(18), 5.0, 11.0)
    with pytest.raises(ValueError, match="not after arrival"):
        session("backwards", at(18), at(17), 5.0, 11.0)
    with pytest.raises(ValueError, match="15-minute boundary"):
        Horizon(start=at(17, 5), slots=4)


# --- uncontrolled baseline -------------------------------------------------------------------------------------------


def test_uncontrolled_charging_runs_at_full_power_from_arrival_until_the_energy_is_in():
    horizon = Horizon(start=at(17), slots=12)
    sessions = [session("x", at(17, 7), at(23), 10.0, 11.0)]

    kw = uncontrolled_kw(horizon=horizon, sessions=sessions)[0]

    # 17:00 slot: full power for 8 of 15 minutes; then full power; 10 kWh are in during the 18:00 slot.
    assert kw[0] == pytest.approx(11.0 * 8 / 15)
    assert list(kw[1:4]) == pytest.approx([11.0, 11.0, 11.0])
    remaining_kwh = 10.0 - 11.0 * ISP_HOURS * (8 / 15 + 3)
    assert kw[4] == pytest.approx(remaining_kwh / ISP_HOURS)
    assert np.all(kw[5:] == 0.0)
    assert kw.sum() * ISP_HOURS == pytest.approx(10.0, abs=1e-9)


def test_a_session_that_cannot_get_its_energy_gets_the_most_it_can():
    horizon = Horizon(start=at(17), slots=8)
    sessions = [session("short", at(17), at(18), 20.0, 3.7)]

    deliverable = deliverable_energy_kwh(horizon=horizon, sessions=sessions)
    kw = uncontrolled_kw(horizon=horizon, sessions=sessions)[0]

    assert deliverable[0] == pytest.approx(3.7)  # one hour at 3.7 kW, not the 20 kWh asked for
    assert list(kw[:4]) == pytest.approx([3.7] * 4)
    assert np.all(kw[4:] == 0.0)
    assert kw.sum() * ISP_HOURS == pytest.approx(deliverable[0])


# --- offer -----------------------------------------------------------------------------------------------------------


def test_overnight_cars_can_take_their_whole_evening_load_out_of_the_window():
    caps = {t: 50.0 for t in EVENING}

    result = offer_optimise(horizon=HORIZON, sessions=OVERNIGHT, requested_max_reduction_kw=caps)

    assert result.status == "Optimal"
    assert set(result.reduction_kw) == set(EVENING)
    assert result.energy_shift_kwh > 0
    for t in EVENING:
        assert 0 <= result.reduction_kw[t] <= caps[t]
        # Everyone stays overnight, so all of the evening load can move: the reduction is the whole baseline.
        assert result.reduction_kw[t] == pytest.approx(result.baseline_kw[t], abs=TOL)
        assert result.reduction_kw[t] <= result.baseline_kw[t] - result.schedule_kw[:, t].sum() + TOL
    deliverable = deliverable_energy_kwh(horizon=HORIZON, sessions=OVERNIGHT)
    assert delivered_kwh(result.schedule_kw) == pytest.approx(deliverable, abs=TOL)
    assert_schedule_is_physical(result.schedule_kw, HORIZON, OVERNIGHT)
    assert result.energy_shift_kwh == pytest.approx(sum(result.reduction_kw.values()) * ISP_HOURS)


def test_a_car_that_must_charge_all_its_short_stay_offers_nothing():
    last_slot = HORIZON.slot_of(at(20, 45))
    # Plugged in 20:45-21:00 and wants the full 11 kW x 15 minutes: nothing it can move.
    stuck = session("D", at(20, 45), at(21), 11.0 * ISP_HOURS, 11.0)
    sessions = [*OVERNIGHT, stuck]

    alone = offer_optimise(horizon=HORIZON, sessions=[stuck], requested_max_reduction_kw={last_slot: 50.0})
    together = offer_optimise(horizon=HORIZON, sessions=sessions, requested_max_reduction_kw={last_slot: 50.0})

    assert alone.reduction_kw == {last_slot: 0.0}
    assert alone.energy_shift_kwh == 0.0
    assert together.schedule_kw[3, last_slot] == pytest.approx(11.0)
    # C is the only other car charging at 20:45; the portfolio can shed C's 3.7 kW, never D's 11 kW.
    assert together.baseline_kw[last_slot] == pytest.approx(11.0 + 3.7)
    assert together.reduction_kw[last_slot] == pytest.approx(3.7, abs=TOL)


def test_a_small_request_is_met_in_full_and_non_positive_caps_are_ignored():
    caps = {t: 2.0 for t in EVENING}
    caps[EVENING[-1] + 1] = 0.0

    result = offer_optimise(horizon=HORIZON, sessions=OVERNIGHT, requested_max_reduction_kw=caps)

    assert set(result.reduction_kw) == set(EVENING)
    assert list(result.reduction_kw.values()) == pytest.approx([2.0] * len(EVENING), abs=TOL)
    assert result.energy_shift_kwh == pytest.approx(2.0 * len(EVENING) * ISP_HOURS, abs=TOL)


def test_a_band_after_the_window_limits_the_rebound():
    caps = {t: 50.0 for t in EVENING}
    after = range(EVENING[-1] + 1, HORIZON.slot_of(at(0, next_day=True)))  # 21:00-24:00
    bands = {t: DeviationBand(min_kw=None, max_kw=5.0) for t in after}

    free = offer_optimise(horizon=HORIZON, sessions=OVERNIGHT, requested_max_reduction_kw=caps)
    banded = offer_optimise(horizon=HORIZON, sessions=OVERNIGHT, requested_max_reduction_kw=caps, bands=bands)

    def rebound(result: optimiser.OfferResult) -> np.ndarray:
        return result.schedule_kw[:, after].sum(axis=0) - result.baseline_kw[after]

    # Without a band the shifted energy piles up right after 21:00 (all three cars at full power), ...
    assert rebound(free).max() > 5.0 + 1.0
    # ... with one it stays within 5 kW of the baseline, and the night still has room for the whole reduction.
    assert rebound(banded).max() <= 5.0 + TOL
    assert banded.energy_shift_kwh == pytest.approx(free.energy_shift_kwh, abs=TOL)
    deliverable = deliverable_energy_kwh(horizon=HORIZON, sessions=OVERNIGHT)
    assert delivered_kwh(banded.schedule_kw) == pytest.approx(deliverable, abs=TOL)


def test_an_empty_portfolio_offers_zero_without_calling_the_solver(monkeypatch):
    def no_solver(*args: object, **kwargs: object) -> str:
        raise AssertionError("the solver must not run for an empty portfolio")

    monkeypatch.setattr(optimiser, "_solve", no_solver)

    result = offer_optimise(horizon=HORIZON, sessions=[], requested_max_reduction_kw={20: 10.0})

    assert result.reduction_kw == {20: 0.0}
    assert result.energy_shift_kwh == 0.0
    assert result.schedule_kw.shape == (0, HORIZON.slots)
    assert np.all(result.baseline_kw == 0.0)


# --- dispatch --------------------------------------------------------------------------------------------------------


def test_dispatch_delivers_exactly_what_the_offer_promised():
    offer = offer_optimise(horizon=HORIZON, sessions=OVERNIGHT, requested_max_reduction_kw={t: 50.0 for t in EVENING})

    result = dispatch_optimise(horizon=HORIZON, sessions=OVERNIGHT, ordered_reduction_kw=offer.reduction_kw)

    assert result.status == "Optimal"
    assert result.deficiency_kw == {t: 0.0 for t in EVENING}
    assert np.all(result.shortfall_kwh == 0.0)
    deliverable = deliverable_energy_kwh(horizon=HORIZON, sessions=OVERNIGHT)
    assert delivered_kwh(result.schedule_kw) == pytest.approx(deliverable, abs=TOL)
    load = result.schedule_kw.sum(axis=0)
    for t in EVENING:
        assert offer.baseline_kw[t] - load[t] >= offer.reduction_kw[t] - TOL
    assert_schedule_is_physical(result.schedule_kw, HORIZON, OVERNIGHT)


def test_dispatch_spreads_the_shifted_energy_instead_of_a_new_peak_at_21():
    offer = offer_optimise(horizon=HORIZON, sessions=OVERNIGHT, requested_max_reduction_kw={t: 50.0 for t in EVENING})
    # The pilots' static profile: nothing 17:00-21:00, then everyone at full power.
    delayed = [replace(s, arrival=max(s.arrival, at(21))) for s in OVERNIGHT]
    naive_kw = uncontrolled_kw(horizon=HORIZON, sessions=delayed).sum(axis=0)

    result = dispatch_optimise(horizon=HORIZON, sessions=OVERNIGHT, ordered_reduction_kw=offer.reduction_kw)

    after = slice(EVENING[-1] + 1, None)
    dispatched_kw = result.schedule_kw.sum(axis=0)
    assert naive_kw[EVENING[-1] + 1] == pytest.approx(11.0 + 7.4 + 3.7)
    assert dispatched_kw[after].max() <= naive_kw[after].max()
    assert dispatched_kw[after].max() < naive_kw[after].max() - 5.0  # valley filling, not just "no worse"
    assert result.peak_kw == pytest.approx(dispatched_kw.max())


def test_dispatch_fills_the_valleys_of_the_base_load():
    base = np.full(HORIZON.slots, 20.0)
    busy = slice(HORIZON.slot_of(at(21)), HORIZON.slot_of(at(23)))
    base[busy] = 35.0  # the household evening peak lingers until 23:00

    result = dispatch_optimise(horizon=HORIZON, sessions=OVERNIGHT, ordered_reduction_kw={}, base_load_kw=base)

    load = result.schedule_kw.sum(axis=0)
    assert result.peak_kw == pytest.approx((base + load).max())
    # All EV energy fits under the existing peak; uncontrolled, C would still draw 3.7 kW at 21:00 (38.7 kW).
    assert result.peak_kw == pytest.approx(35.0, abs=TOL)
    assert load[busy] == pytest.approx(np.zeros(8), abs=TOL)
    assert np.all(result.shortfall_kwh == 0.0)


def test_energy_no_charger_can_deliver_is_reported_as_shortfall():
    # One hour at 3.7 kW cannot give 10 kWh.
    sessions = [*OVERNIGHT, session("E", at(18), at(19), 10.0, 3.7)]

    result = dispatch_optimise(horizon=HORIZON, sessions=sessions, ordered_reduction_kw={t: 1.0 for t in EVENING})

    assert result.status == "Optimal"
    assert result.shortfall_kwh[3] == pytest.approx(10.0 - 3.7, abs=TOL)
    assert list(result.shortfall_kwh[:3]) == [0.0, 0.0, 0.0]
    assert result.schedule_kw[3, HORIZON.slot_of(at(18)) : HORIZON.slot_of(at(19))] == pytest.approx([3.7] * 4)


def test_an_order_beyond_the_portfolio_leaves_a_deficiency_but_drivers_get_their_energy():
    result = dispatch_optimise(horizon=HORIZON, sessions=OVERNIGHT, ordered_reduction_kw={t: 100.0 for t in EVENING})

    baseline = uncontrolled_kw(horizon=HORIZON, sessions=OVERNIGHT).sum(axis=0)
    assert result.status == "Optimal"
    for t in EVENING:
        # The best possible is no charging at all in the window, which still misses 100 kW - baseline.
        assert result.deficiency_kw[t] == pytest.approx(100.0 - baseline[t], abs=TOL)
        assert result.deficiency_kw[t] > 0
    assert np.all(result.shortfall_kwh == 0.0)
    deliverable = deliverable_energy_kwh(horizon=HORIZON, sessions=OVERNIGHT)
    assert delivered_kwh(result.schedule_kw) == pytest.approx(deliverable, abs=TOL)


def test_the_capacity_limit_binds_when_the_portfolio_fits_and_gives_way_to_drivers_and_order_when_not():
    order = {t: 1.0 for t in EVENING}
    base = np.full(HORIZON.slots, 10.0)
    base[0] = 40.0  # a midday spike before any car arrives: the peak term alone no longer keeps the evening low
    with_cars = slice(1, None)

    free = dispatch_optimise(horizon=HORIZON, sessions=OVERNIGHT, ordered_reduction_kw=order, base_load_kw=base)
    fits = dispatch_optimise(
        horizon=HORIZON, sessions=OVERNIGHT, ordered_reduction_kw=order, base_load_kw=base, capacity_kw=16.0
    )
    # Below the base load alone: no schedule can respect it.
    impossible = dispatch_optimise(
        horizon=HORIZON, sessions=OVERNIGHT, ordered_reduction_kw=order, base_load_kw=base, capacity_kw=5.0
    )

    def total_kw(result: optimiser.DispatchResult) -> np.ndarray:
        return base[with_cars] + result.schedule_kw.sum(axis=0)[with_cars]

    assert total_kw(free).max() > 16.0 + 1.0  # early charging may rise up to the 40 kW spike
    assert total_kw(fits).max() <= 16.0 + TOL
    assert impossible.status == "Optimal"
    for result in (free, fits, impossible):
        assert result.peak_kw == pytest.approx(40.0)
        assert all(value == 0.0 for value in result.deficiency_kw.values())
        assert np.all(result.shortfall_kwh == 0.0)


# --- OCPI limits -----------------------------------------------------------------------------------------------------


def test_profile_limits_scale_partial_slots_and_clip_at_max_power():
    avail = np.array([8 / 15, 1.0, 1.0, 1 / 3, 0.0, 0.5])
    plan_kw = np.array([11.0 * 8 / 15, 5.5, 0.0, 11.0 / 3, 0.0, 6.0])

    limits = profile_limits_w(schedule_kw_row=plan_kw, avail_row=avail, max_power_kw=11.0)

    # 8 of 15 minutes plugged in: the limit is full power so the planned energy fits; last slot would need 12 kW.
    assert limits == [11000, 5500, 0, 11000, 0, 11000]
    assert profile_limits_w(schedule_kw_row=plan_kw, avail_row=avail)[5] == 12000


def test_profile_limits_round_up_to_the_next_watt():
    limits = profile_limits_w(schedule_kw_row=np.array([1.0001, 2.0]), avail_row=np.array([1.0, 1.0]))

    assert limits == [1001, 2000]


def test_profile_limits_follow_the_dispatched_schedule():
    result = dispatch_optimise(horizon=HORIZON, sessions=OVERNIGHT, ordered_reduction_kw={})
    avail = availability(horizon=HORIZON, sessions=OVERNIGHT)

    for s, car in enumerate(OVERNIGHT):
        limits_w = np.array(profile_limits_w(schedule_kw_row=result.schedule_kw[s], avail_row=avail[s]))
        assert np.all(limits_w <= car.max_power_kw * 1000)
        # Drawing the limit while plugged in gives at least the planned energy in every slot.
        assert np.all(limits_w / 1000 * avail[s] >= result.schedule_kw[s] - TOL)


# --- DST -------------------------------------------------------------------------------------------------------------


def test_the_autumn_dst_day_has_100_elapsed_slots():
    day = date(2026, 10, 25)
    # 02:45 in summer time, then unplugged at 02:15 winter time: 30 minutes later, though the clock went back.
    repeated_hour = session(
        "dst",
        datetime(2026, 10, 25, 2, 45, tzinfo=MARKET_TZ),
        datetime(2026, 10, 25, 2, 15, fold=1, tzinfo=MARKET_TZ),
        5.0,
        11.0,
    )
    # 01:30 summer time to 03:30 winter time is three hours of elapsed time.
    across = session(
        "across",
        datetime(2026, 10, 25, 1, 30, tzinfo=MARKET_TZ),
        datetime(2026, 10, 25, 3, 30, tzinfo=MARKET_TZ),
        5.0,
        3.7,
    )
    sessions = [repeated_hour, across]

    horizon = Horizon.covering(start=isp.day_start(day), sessions=sessions, min_end=isp.day_end(day))
    avail = availability(horizon=horizon, sessions=sessions)

    assert horizon.slots == 100 == isp.isp_count(day)
    assert horizon.end == isp.day_end(day)
    assert avail.sum(axis=1) == pytest.approx([2.0, 12.0])
    assert horizon.slot_of(across.arrival) == 6  # ISP 7 of the day, 01:30 local summer time
    assert horizon.slot_start(99) == isp.isp_start(day, 100)

    offer = offer_optimise(
        horizon=horizon, sessions=sessions, requested_max_reduction_kw={horizon.slot_of(across.arrival): 3.7}
    )

    assert offer.schedule_kw.shape == (2, 100)
    assert offer.reduction_kw == {6: pytest.approx(3.7, abs=TOL)}
    assert delivered_kwh(offer.schedule_kw) == pytest.approx([5.0, 5.0], abs=TOL)
