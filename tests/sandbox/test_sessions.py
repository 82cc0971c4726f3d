"""Demo sessions follow the ElaadNL home-charging curves they are sampled from."""

from __future__ import annotations

import random
import statistics
from datetime import date

import pytest

from common.isp import MARKET_TZ
from sandbox.sessions import sample_session

DAY = date(2026, 11, 26)


@pytest.fixture(scope="module")
def sessions():
    rng = random.Random(5)
    return [sample_session(rng=rng, day=DAY) for _ in range(4000)]


def test_home_arrivals_peak_in_the_evening(sessions):
    hours = [s.arrival.astimezone(MARKET_TZ).hour for s in sessions]
    evening = sum(16 <= h < 20 for h in hours) / len(hours)
    assert 0.42 <= evening <= 0.51  # the curve gives 46 % for 16:00-20:00 on weekdays
    assert all(s.arrival.astimezone(MARKET_TZ).date() == DAY for s in sessions)


def test_stays_and_energy_match_the_published_medians(sessions):
    stay_h = statistics.median((s.departure - s.arrival).total_seconds() / 3600 for s in sessions)
    energy = statistics.median(s.energy_kwh for s in sessions)
    assert 10.0 <= stay_h <= 12.0  # README of the data: private median 11.0 h
    assert 17.0 <= energy <= 21.0  # private median 19.4 kWh (a little less after the battery cap)


def test_cars_come_from_the_dutch_fleet_and_respect_their_battery(sessions):
    assert {s.car_max_power_kw for s in sessions} <= {3.6, 7.2, 7.4, 11.0, 22.0}
    assert all(0 < s.energy_kwh <= 0.9 * 77 for s in sessions)


def test_an_unknown_location_type_is_refused():
    with pytest.raises(ValueError, match="location"):
        sample_session(rng=random.Random(1), day=DAY, location="moon")
