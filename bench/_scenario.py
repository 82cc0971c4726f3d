"""Seeded EV charging scenarios for bench.optimiser, sampled from the ElaadNL / EV2Gym distributions in
../shared/data/ev-sessions (DATA_DIR overrides the folder).

residential: home charging on a weekday evening. Arrival slot from ElaadNL's private weekday arrival curve between
  14:00 and 24:00 (most arrivals fall 16:00-20:00); 80 % stay overnight and leave 06:00-09:30 the next morning, the
  rest stay as long as the private connection-time curve says (at least 1 h); energy from the private energy curve
  within 10-60 kWh; horizon 12:00 to 12:00 the next day.
workplace: arrival from the workplace weekday curve between 05:00 and 12:00; 80 % leave 16:00-18:30, the rest after
  the workplace connection-time curve (at least 1 h); energy from the workplace curve within 5-40 kWh; horizon
  04:00 to 04:00.
Both: max power from the registration-weighted AC power of the NL fleet (ev_specs_ev_plus_phev.json) on the home or
workplace charger: 3.6/3.7 kW cars charge single-phase at 3.7 kW, 7.2/7.4 kW cars single-phase at 7.4 kW, 11/22 kW
cars three-phase at 11 kW; minimum power 6 A per phase. Sessions are spread over the congestion points at random
(points differ in size). Base load per point: the households (residential, 1.5 per EV, 2,800 kWh a year each, the
aggregator's household profile) or the offices (workplace, a daytime plateau). The limit of each point is a
fraction U(0.6, 0.75) of its uncontrolled peak (never below 1.1 x its base-load peak), so uncontrolled charging
exceeds it in the evening (residential) or the morning (workplace).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from aggregator import baseload, strategies
from common.isp import MARKET_TZ

DATA_DIR = Path(os.environ.get("EV_SESSION_DATA", "/work/shared/data/ev-sessions")) / "ev2gym"
DAY = datetime(2026, 6, 10, tzinfo=MARKET_TZ)  # a Wednesday
SLOTS = 96
SLOT_S = 900.0


@dataclass
class Scenario:
    name: str
    seed: int
    start: datetime  # horizon start (UTC)
    slots: int
    point: np.ndarray  # (n,) congestion point of each session, sorted ascending
    arrival_s: np.ndarray  # (n,) seconds after the horizon start
    departure_s: np.ndarray
    energy_kwh: np.ndarray
    max_kw: np.ndarray
    phases: np.ndarray
    min_kw: np.ndarray
    base_kw: np.ndarray  # (points, slots)
    limit_kw: np.ndarray  # (points,)
    in_window: np.ndarray  # (slots,) 17:00-21:00 local
    in_rebound: np.ndarray  # (slots,) 21:00-23:00 local

    @property
    def sessions(self) -> int:
        return len(self.point)

    @property
    def points(self) -> int:
        return int(self.base_kw.shape[0])

    def point_starts(self) -> np.ndarray:
        """(points + 1,) first session row of each point (sessions are sorted by point)."""
        return np.searchsorted(self.point, np.arange(self.points + 1))

    def avail(self, rows: slice | None = None) -> np.ndarray:
        rows = rows or slice(None)
        edges = np.arange(self.slots + 1) * SLOT_S
        arrival = self.arrival_s[rows][:, None]
        departure = self.departure_s[rows][:, None]
        overlap = np.minimum(departure, edges[None, 1:]) - np.maximum(arrival, edges[None, :-1])
        return np.clip(overlap / SLOT_S, 0.0, 1.0)


def _read_curve(name: str) -> dict[str, np.ndarray]:
    with (DATA_DIR / name).open(encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    return {column: np.array([float(row[i]) for row in body]) for i, column in enumerate(header) if i > 0} | {
        "_key": np.array([row[0] for row in body])
    }


def _sample_duration_curve(rng: np.random.Generator, values: np.ndarray, size: int, low: float,
                           high: float) -> np.ndarray:
    """Inverse-CDF sampling of a duration curve (row p = value exceeded by p % of sessions) within [low, high]."""
    percent = np.arange(len(values), dtype=float)  # 0..100, values falling
    quantile = 1.0 - percent / 100.0  # value at row p is the (1 - p/100) quantile
    q_sorted, v_sorted = quantile[::-1], values[::-1]
    q_low, q_high = np.interp([low, high], v_sorted, q_sorted)
    return np.interp(rng.uniform(q_low, q_high, size), q_sorted, v_sorted)


def _fleet_power(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    specs = json.loads((DATA_DIR / "ev_specs_ev_plus_phev.json").read_text())
    weights = {3.7: 0.0, 7.4: 0.0, 11.0: 0.0}
    for spec in specs.values():
        ac = float(spec["max_ac_charge_power"])
        key = 3.7 if ac < 5 else 7.4 if ac < 9 else 11.0
        weights[key] += float(spec["number_of_registrations"])
    powers = np.array(list(weights))
    p = np.array(list(weights.values()))
    max_kw = rng.choice(powers, size=size, p=p / p.sum())
    phases = np.where(max_kw > 8, 3, 1)
    return max_kw, phases


def generate(*, name: str, sessions: int, points: int, seed: int) -> Scenario:
    if name not in ("residential", "workplace"):
        raise ValueError(f"unknown scenario {name!r}")
    rng = np.random.default_rng(seed)
    residential = name == "residential"
    local_start = DAY.replace(hour=12 if residential else 4)
    start = local_start.astimezone(UTC)
    arrivals = _read_curve("distribution-of-arrival.csv")
    column = "private" if residential else "workplace"
    slot_minutes = np.array([int(k[:2]) * 60 + int(k[3:]) for k in arrivals["_key"]])
    first, last = (14 * 60, 24 * 60) if residential else (5 * 60, 12 * 60)
    allowed = (slot_minutes >= first) & (slot_minutes < last)
    weights = np.where(allowed, arrivals[column], 0.0)
    arrival_minute = rng.choice(slot_minutes, size=sessions, p=weights / weights.sum()) + rng.uniform(0, 15, sessions)
    arrival_s = (arrival_minute - (local_start.hour * 60)) * 60.0

    horizon_s = SLOTS * SLOT_S
    durations = _read_curve("distribution-of-connection-time.csv")[column]
    stay_h = _sample_duration_curve(rng, durations, sessions, 1.0, 24.0)
    if residential:
        leave_minute = rng.uniform(6 * 60, 9.5 * 60, sessions) + 24 * 60  # next morning
    else:
        leave_minute = rng.uniform(16 * 60, 18.5 * 60, sessions)
    commute = rng.uniform(size=sessions) < 0.8
    departure_s = np.where(commute, (leave_minute - local_start.hour * 60) * 60.0, arrival_s + stay_h * 3600.0)
    departure_s = np.minimum(np.maximum(departure_s, arrival_s + 3600.0), horizon_s)

    energy_curve = _read_curve("distribution-of-energy-demand.csv")[column]
    low, high = (10.0, 60.0) if residential else (5.0, 40.0)
    energy_kwh = _sample_duration_curve(rng, energy_curve, sessions, low, high)
    max_kw, phases = _fleet_power(rng, sessions)
    min_kw = strategies.min_power_kw(phases)

    # Points differ in size: a Dirichlet-like split, every point at least one session.
    share = rng.gamma(4.0, size=points)
    point = np.sort(rng.choice(points, size=sessions, p=share / share.sum()))
    per_point = np.bincount(point, minlength=points)

    slot_starts = [start + timedelta(minutes=15 * i) for i in range(SLOTS)]
    local_hours = np.array([s.astimezone(MARKET_TZ).hour + s.astimezone(MARKET_TZ).minute / 60 for s in slot_starts])
    if residential:
        one_household = baseload.household_profile_kw(annual_kwh=2800.0, slot_starts=slot_starts)
        units = per_point * 1.5 * rng.uniform(0.8, 1.2, points)
        shape = one_household
    else:
        # Offices: 0.3 kW per parking place at night, 1.2 kW in working hours, smooth edges.
        day = 1.0 / (1.0 + np.exp(-(local_hours - 7.5) * 2)) - 1.0 / (1.0 + np.exp(-(local_hours - 18.5) * 2))
        shape = 0.3 + 0.9 * day
        units = per_point * rng.uniform(0.8, 1.2, points)
    base = units[:, None] * shape[None, :] * (1.0 + rng.normal(0.0, 0.02, (points, SLOTS)))

    scenario = Scenario(
        name=name, seed=seed, start=start, slots=SLOTS, point=point, arrival_s=arrival_s, departure_s=departure_s,
        energy_kwh=energy_kwh, max_kw=max_kw, phases=phases, min_kw=min_kw, base_kw=base,
        limit_kw=np.zeros(points),
        in_window=(local_hours >= 17) & (local_hours < 21),
        in_rebound=(local_hours >= 21) & (local_hours < 23),
    )
    unc = strategies.uncontrolled(cap_kw=scenario.max_kw[:, None] * scenario.avail(), energy_kwh=energy_kwh)
    peak = (base + per_point_sum(unc, scenario.point_starts())).max(axis=1)
    scenario.limit_kw = np.maximum(peak * rng.uniform(0.6, 0.75, points), 1.1 * base.max(axis=1))
    return scenario


def per_point_sum(schedule: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(points, slots) sum of session rows per point (rows sorted by point; empty points give 0)."""
    points = len(starts) - 1
    out = np.zeros((points, schedule.shape[1]))
    nonempty = starts[:-1] < starts[1:]
    if nonempty.any():
        out[nonempty] = np.add.reduceat(schedule, starts[:-1][nonempty], axis=0)
    return out


