"""Household base load: the non-EV part of a connection's consumption, as a forecast shape.

A smooth daily curve in local time (night trough, morning bump, evening peak around 18:30), in the
spirit of the Dutch E1A standard profile, scaled so that a year sums to the connection's standard
annual consumption, with a winter/summer swing of +-20 %. The aggregator forecasts base load with
it (part of the D-prognosis) and the sandbox meters draw noisy loads around it.
Note: the hourly weights are our approximation, not the official NEDU profile figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from common.isp import MARKET_TZ

# Relative load per local hour 00..23 (hour start), interpolated linearly between hour midpoints.
_HOURLY_WEIGHTS = np.array(
    [0.55, 0.45, 0.40, 0.38, 0.38, 0.42, 0.60, 0.90, 1.00, 0.85, 0.80, 0.82,
     0.85, 0.80, 0.75, 0.78, 0.95, 1.35, 1.75, 1.80, 1.60, 1.35, 1.05, 0.75]
)
_HOURLY_SHARE = _HOURLY_WEIGHTS / _HOURLY_WEIGHTS.sum()  # share of a day's energy per hour


def _shape_at(hour_of_day: float) -> float:
    """Share of daily energy per hour at a fractional local hour (periodic linear interpolation)."""
    position = (hour_of_day - 0.5) % 24
    low = int(math.floor(position))
    frac = position - low
    return float(_HOURLY_SHARE[low] * (1 - frac) + _HOURLY_SHARE[(low + 1) % 24] * frac)


def _season(at: datetime) -> float:
    """Winter +20 %, summer -20 % (peak mid-January)."""
    day_of_year = at.timetuple().tm_yday
    return 1.0 + 0.2 * math.cos(2 * math.pi * (day_of_year - 15) / 365.25)


def household_kw(*, annual_kwh: float, slot_start: datetime) -> float:
    """Forecast average base load (kW) of one connection over the 15-minute slot starting at `slot_start`."""
    local = slot_start.astimezone(MARKET_TZ)
    midpoint_hour = local.hour + (local.minute + 7.5) / 60
    daily_kwh = annual_kwh / 365.25 * _season(local)
    return daily_kwh * _shape_at(midpoint_hour)  # share per hour x daily kWh = kW


def household_profile_kw(*, annual_kwh: float, slot_starts: Sequence[datetime]) -> np.ndarray:
    """Vector of household_kw over many slots (kW per slot)."""
    return np.array([household_kw(annual_kwh=annual_kwh, slot_start=start) for start in slot_starts])

