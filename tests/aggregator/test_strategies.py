"""The pilots' control rules on hand-computed cases: uncontrolled, INVADE equal share, Flexpower static profile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from aggregator import strategies
from aggregator.optimiser import Horizon, SessionInput, availability, uncontrolled_kw
from common.isp import ISP_HOURS

THREE_PHASE_MIN = 4.14
ONE_PHASE_MIN = 1.38


def test_minimum_power_is_6_amps_per_phase_at_230_volts() -> None:
    assert strategies.min_power_kw(np.array([1, 3])) == pytest.approx([ONE_PHASE_MIN, THREE_PHASE_MIN])


def test_uncontrolled_matches_the_optimiser_baseline() -> None:
    start = datetime(2026, 6, 10, 17, tzinfo=UTC)
    sessions = [
        SessionInput(key="a", arrival=start + timedelta(minutes=7), departure=start + timedelta(hours=3),
                     energy_kwh=10.0, max_power_kw=11.0),
        SessionInput(key="b", arrival=start, departure=start + timedelta(hours=1), energy_kwh=20.0,
                     max_power_kw=3.7),
    ]
    horizon = Horizon(start=start, slots=12)
    avail = availability(horizon=horizon, sessions=sessions)
    cap = np.array([11.0, 3.7])[:, None] * avail

    ours = strategies.uncontrolled(cap_kw=cap, energy_kwh=np.array([10.0, 20.0]))

    assert ours == pytest.approx(uncontrolled_kw(horizon=horizon, sessions=sessions))
    assert ours[1].sum() * ISP_HOURS == pytest.approx(3.7)  # one hour at 3.7 kW is all it can get


def _share(avail: np.ndarray, *, max_kw: list[float], min_kw: list[float], energy: list[float],
           arrival: list[float], point: list[int], headroom: np.ndarray) -> np.ndarray:
    return strategies.equal_share(
        avail=avail, max_kw=np.array(max_kw), min_kw=np.array(min_kw), energy_kwh=np.array(energy),
        arrival_s=np.array(arrival), point=np.array(point), headroom_kw=headroom,
    )


def test_equal_share_splits_the_headroom_equally() -> None:
    result = _share(np.ones((2, 2)), max_kw=[11, 11], min_kw=[THREE_PHASE_MIN] * 2, energy=[50, 50],
                    arrival=[0, 0], point=[0, 0], headroom=np.full((1, 2), 10.0))

    assert result == pytest.approx(np.full((2, 2), 5.0))


def test_equal_share_never_goes_below_6_amps_so_the_latest_arrival_waits() -> None:
    # Three three-phase cars need 3 x 4.14 = 12.42 kW at minimum; 10 kW admits the two earliest arrivals.
    result = _share(np.ones((3, 1)), max_kw=[11, 11, 11], min_kw=[THREE_PHASE_MIN] * 3, energy=[50, 50, 50],
                    arrival=[0, 3600, 1800], point=[0, 0, 0], headroom=np.full((1, 1), 10.0))

    assert result[:, 0] == pytest.approx([5.0, 0.0, 5.0])


def test_equal_share_gives_what_one_car_cannot_use_to_the_others() -> None:
    # A needs only 1 kWh: 4 kW for one quarter-hour (below its minimum, but it stops by itself when done).
    result = _share(np.ones((2, 2)), max_kw=[11, 11], min_kw=[THREE_PHASE_MIN] * 2, energy=[1.0, 50],
                    arrival=[0, 0], point=[0, 0], headroom=np.full((1, 2), 10.0))

    assert result[0] == pytest.approx([4.0, 0.0])
    assert result[1] == pytest.approx([6.0, 10.0])


def test_equal_share_raises_a_single_phase_car_to_its_own_minimum_only() -> None:
    # Level L with clip(L, 4.14, 11) + clip(L, 1.38, 3.7) = 6: L = 1.86 for the single-phase car, 4.14 for the other.
    result = _share(np.ones((2, 1)), max_kw=[11, 3.7], min_kw=[THREE_PHASE_MIN, ONE_PHASE_MIN], energy=[50, 50],
                    arrival=[0, 0], point=[0, 0], headroom=np.full((1, 1), 6.0))

    assert result[:, 0] == pytest.approx([THREE_PHASE_MIN, 6.0 - THREE_PHASE_MIN], abs=1e-6)
    assert result.sum() <= 6.0 + 1e-9


def test_equal_share_keeps_points_apart_and_averages_partial_slots() -> None:
    avail = np.array([[0.5, 1.0], [1.0, 1.0], [1.0, 1.0]])
    headroom = np.array([[9.0, 9.0], [0.0, 3.0]])

    result = _share(avail, max_kw=[11, 11, 3.7], min_kw=[THREE_PHASE_MIN, THREE_PHASE_MIN, ONE_PHASE_MIN],
                    energy=[50, 50, 50], arrival=[0, 0, 0], point=[0, 0, 1], headroom=headroom)

    # Point 0: 4.5 kW each while plugged in; the first car is there half of slot 0, so its average is 2.25 kW.
    assert result[0] == pytest.approx([2.25, 4.5])
    assert result[1] == pytest.approx([4.5, 4.5])
    # Point 1: nothing left under the limit in slot 0, then 3 kW.
    assert result[2] == pytest.approx([0.0, 3.0])


def test_flexpower_limits_each_session_to_8_amps_per_phase_from_17_to_21() -> None:
    in_window = np.array([False, True, True, False])
    max_kw = np.array([3.7, 11.0, 3.7])
    window_kw = strategies.flexpower_window_kw(max_kw=max_kw, phases=np.array([1, 3, 1]))

    result = strategies.flexpower(avail=np.ones((3, 4)), max_kw=max_kw, window_kw=window_kw,
                                  energy_kwh=np.array([50.0, 50.0, 1.5]), in_window=in_window)

    assert window_kw == pytest.approx([1.84, 5.52, 1.84])
    assert result[0] == pytest.approx([3.7, 1.84, 1.84, 3.7])
    assert result[1] == pytest.approx([11.0, 5.52, 5.52, 11.0])
    # 1.5 kWh: 0.925 in the first slot, 0.46 in the second, the last 0.115 kWh (0.46 kW) in the third.
    assert result[2] == pytest.approx([3.7, 1.84, 0.46, 0.0])
    assert result[2].sum() * ISP_HOURS == pytest.approx(1.5)
