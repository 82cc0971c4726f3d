"""Sampling charging sessions from real Dutch distributions (ElaadNL via EV2Gym, vendored in sandbox/data).

Arrival time from the weekday/weekend arrival curve per location type, connection time and energy from
the duration curves, the car from the NL fleet by registrations (its AC limit and battery cap the
session). The curves are marginal distributions, so arrival, stay and energy are sampled independently
(sandbox/data/ev2gym/NOTICE.txt has provenance and licence).
"""

from __future__ import annotations

import bisect
import csv
import json
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path

from common.isp import MARKET_TZ

DATA_DIR = Path(__file__).resolve().parent / "data" / "ev2gym"
LOCATION_TYPES = ("private", "public", "workplace")


@dataclass(frozen=True)
class SampledSession:
    arrival: datetime  # aware, UTC
    departure: datetime
    energy_kwh: float
    car_max_power_kw: float
    car_model: str


def _read_csv(name: str) -> list[list[str]]:
    with (DATA_DIR / name).open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


@cache
def _arrival_weights(location: str) -> tuple[list[int], list[float]]:
    """Minutes after midnight of each 15-minute arrival slot, and its weight."""
    rows = _read_csv("distribution-of-arrival.csv")
    column = rows[0].index(location)
    minutes, weights = [], []
    for row in rows[1:]:
        hours, mins = row[0].split(":")
        minutes.append(int(hours) * 60 + int(mins))
        weights.append(float(row[column]))
    return minutes, weights


@cache
def _duration_curve(name: str, location: str) -> tuple[list[float], list[float]]:
    """(quantile 0..1 ascending, value ascending) from an EV2Gym duration curve (row p: value exceeded by p %)."""
    rows = _read_csv(name)
    column = rows[0].index(location)
    points = sorted((1 - float(row[0]) / 100, float(row[column])) for row in rows[1:])
    return [p[0] for p in points], [p[1] for p in points]


def _sample_curve(rng: random.Random, curve: tuple[list[float], list[float]]) -> float:
    quantiles, values = curve
    u = rng.random()
    position = bisect.bisect_left(quantiles, u)
    if position <= 0:
        return values[0]
    if position >= len(quantiles):
        return values[-1]
    q0, q1 = quantiles[position - 1], quantiles[position]
    v0, v1 = values[position - 1], values[position]
    return v0 + (v1 - v0) * ((u - q0) / (q1 - q0) if q1 > q0 else 0.0)


@cache
def _fleet() -> tuple[list[str], list[float], list[tuple[float, float]]]:
    specs = json.loads((DATA_DIR / "ev_specs.json").read_text(encoding="utf-8"))
    names = list(specs)
    weights = [float(specs[name]["number_of_registrations"]) for name in names]
    limits = [(float(specs[name]["max_ac_charge_power"]), float(specs[name]["battery_capacity"])) for name in names]
    return names, weights, limits


def sample_session(*, rng: random.Random, day: date, location: str = "private") -> SampledSession:
    """One session arriving on `day` (local time), with stay and energy from the curves for `location`."""
    if location not in LOCATION_TYPES:
        raise ValueError(f"location must be one of {LOCATION_TYPES}")
    minutes, weights = _arrival_weights(location)
    slot_minute = rng.choices(minutes, weights=weights)[0] + rng.uniform(0, 15)
    local_midnight = datetime(day.year, day.month, day.day, tzinfo=MARKET_TZ)
    # Wall-clock minutes after local midnight (on DST days the clock, not elapsed time, is what people follow).
    arrival = datetime.fromtimestamp(local_midnight.timestamp() + slot_minute * 60, tz=MARKET_TZ)
    stay_h = max(0.5, _sample_curve(rng, _duration_curve("distribution-of-connection-time.csv", location)))
    energy = max(1.0, _sample_curve(rng, _duration_curve("distribution-of-energy-demand.csv", location)))
    names, fleet_weights, limits = _fleet()
    index = rng.choices(range(len(names)), weights=fleet_weights)[0]
    car_kw, battery_kwh = limits[index]
    energy = min(energy, 0.9 * battery_kwh)  # a car cannot take more than (most of) its battery
    return SampledSession(
        arrival=arrival,
        departure=arrival + timedelta(hours=stay_h),
        energy_kwh=round(energy, 3),
        car_max_power_kw=car_kw,
        car_model=names[index],
    )
