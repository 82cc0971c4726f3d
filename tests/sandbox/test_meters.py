"""The smart-meter simulator: cars follow the newest accepted profile, and stop when full."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest

from aggregator.adapters.ocpi import set_charging_profile_body
from sandbox.meters import simulate_session_kwh

START = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)  # 17:00 Amsterdam


def car(*, arrive_min: int = 0, stay_h: float = 6, energy: str = "10", max_w: int = 11_000):
    arrival = START + timedelta(minutes=arrive_min)
    return SimpleNamespace(arrival_at=arrival, expected_departure_at=arrival + timedelta(hours=stay_h),
                           energy_requested_kwh=Decimal(energy), max_power_w=max_w)


def test_without_a_profile_the_car_charges_at_full_power_until_full():
    drawn = simulate_session_kwh(session=car(energy="10"), profile=None)
    assert list(drawn.values())[:3] == [pytest.approx(2.75)] * 3  # 11 kW for 15 minutes
    assert sum(drawn.values()) == pytest.approx(10.0)
    assert max(drawn) == START + timedelta(minutes=45)  # full in the fourth quarter-hour


def test_a_partial_first_slot_counts_only_the_plugged_in_minutes():
    drawn = simulate_session_kwh(session=car(arrive_min=5, energy="10"), profile=None)
    assert drawn[START] == pytest.approx(11 * 10 / 60)


def test_the_car_follows_the_profile_limits_and_still_gets_its_energy():
    # 0 W for the first hour, then 4 kW.
    body = set_charging_profile_body(start=START, limits_w=[0] * 4 + [4000] * 20, response_url="http://x/r")
    drawn = simulate_session_kwh(session=car(energy="10"), profile=body["charging_profile"])
    assert all(START + timedelta(hours=1) <= slot for slot in drawn)
    assert drawn[START + timedelta(hours=1)] == pytest.approx(1.0)
    assert sum(drawn.values()) == pytest.approx(10.0)


def test_after_the_profile_ends_the_car_charges_freely():
    body = set_charging_profile_body(start=START, limits_w=[0] * 4, response_url="http://x/r")  # one hour of 0 W
    drawn = simulate_session_kwh(session=car(energy="5"), profile=body["charging_profile"])
    assert min(drawn) == START + timedelta(hours=1)
    assert drawn[START + timedelta(hours=1)] == pytest.approx(2.75)


def test_a_car_leaving_early_gets_what_fits_in_its_stay():
    drawn = simulate_session_kwh(session=car(stay_h=0.5, energy="20", max_w=3700), profile=None)
    assert sum(drawn.values()) == pytest.approx(3.7 * 0.5)
