"""The control rules the Dutch pilots used, as baselines our optimiser must beat (DOMAIN.md), vectorised with numpy
over whole portfolios: every function takes all sessions of all congestion points at once, one row per session.

- uncontrolled: full power from arrival until the energy is in (what a car does on its own; the D-prognosis).
- equal_share (INVADE, 1,000 charge points): every quarter-hour, the capacity left under the point's limit is
  divided equally over the sessions still charging, never below the minimum current (6 A per phase, IEC 61851):
  when the capacity cannot give every running session its minimum, the earliest arrivals get it and the others
  wait for a later quarter-hour. The rule knows nothing about departures, so some drivers leave short.
- flexpower (Amsterdam's static profile): a lower per-session limit 17:00-21:00 local (8 A per phase) and full power
  otherwise; no knowledge of the grid at all, so the evening peak moves to 21:00 (the rebound the pilots saw).

Shapes: cap_kw / avail (n, slots) with the plugged-in fraction folded in (max power x fraction); power is the average
kW of a slot and energy power x ISP_HOURS, as in aggregator.optimiser.
"""

from __future__ import annotations

import numpy as np

from aggregator.optimiser.point import uncontrolled_from
from common.isp import ISP_HOURS

VOLTS = 230.0
MIN_AMPS = 6.0  # IEC 61851: below this a car does not charge
FLEXPOWER_WINDOW_AMPS = 8.0  # per phase, 17:00-21:00
_EPS_KWH = 1e-9


def min_power_kw(phases: np.ndarray) -> np.ndarray:
    """IEC 61851 minimum charging power: 6 A x phases x 230 V (1.38 kW single-phase, 4.14 kW three-phase)."""
    return MIN_AMPS * np.asarray(phases, dtype=float) * VOLTS / 1000.0


def uncontrolled(*, cap_kw: np.ndarray, energy_kwh: np.ndarray) -> np.ndarray:
    """(n, slots) full power from arrival until the requested energy (or all the stay allows) is in."""
    deliverable = np.minimum(energy_kwh, cap_kw.sum(axis=1) * ISP_HOURS)
    return uncontrolled_from(cap_kw, deliverable)


def equal_share(
    *,
    avail: np.ndarray,
    max_kw: np.ndarray,
    min_kw: np.ndarray,
    energy_kwh: np.ndarray,
    arrival_s: np.ndarray,
    point: np.ndarray,
    headroom_kw: np.ndarray,
) -> np.ndarray:
    """(n, slots) INVADE's equal-share rule.

    avail (n, slots) plugged-in fraction; max_kw / min_kw / energy_kwh / arrival_s (n,); point (n,) index of the
    session's congestion point; headroom_kw (points, slots) = limit - base load (capacity left for charging).
    Per slot and point: the sessions still charging are admitted in arrival order while their minimum powers fit in
    the headroom; the admitted sessions share the headroom equally: each gets the same level, raised to its minimum
    and cut at its max power and at what it still needs, with the level as high as the headroom allows (what one
    car cannot use goes to the others). Instantaneous power, times the plugged-in fraction for the slot average.
    """
    n, slots = avail.shape
    points = headroom_kw.shape[0]
    schedule = np.zeros((n, slots))
    if n == 0:
        return schedule
    remaining = energy_kwh.astype(float).copy()
    order = np.lexsort((np.arange(n), arrival_s, point))  # by point, then arrival
    sorted_point = point[order]
    first_of_point = np.searchsorted(sorted_point, np.arange(points))
    for t in range(slots):
        running = (avail[:, t] > 0) & (remaining > _EPS_KWH) & (max_kw >= min_kw)
        room = np.maximum(headroom_kw[:, t], 0.0)
        need_sorted = np.where(running[order], min_kw[order], 0.0)
        cum = np.cumsum(need_sorted)
        # Minimum power claimed in arrival order within the point (cumsum restarted at each point's first row).
        before_point = np.concatenate([[0.0], cum])[first_of_point]
        within = cum - before_point[sorted_point]
        admitted_sorted = running[order] & (within <= room[sorted_point] + 1e-9)
        admitted = np.zeros(n, dtype=bool)
        admitted[order] = admitted_sorted
        # Instantaneous kW: at most max power and what the car still needs; the minimum unless it needs less.
        plugged = np.maximum(avail[:, t], 1e-12)
        upper = np.where(admitted, np.minimum(max_kw, remaining / (ISP_HOURS * plugged)), 0.0)
        lower = np.minimum(min_kw, upper)
        level = _equal_level(room=room, point=point, lower=lower, upper=upper, admitted=admitted)
        power = np.where(admitted, np.clip(level[point], lower, upper) * avail[:, t], 0.0)
        power = np.minimum(power, remaining / ISP_HOURS)
        schedule[:, t] = power
        remaining -= power * ISP_HOURS
    return schedule


def _equal_level(*, room: np.ndarray, point: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                 admitted: np.ndarray, steps: int = 30) -> np.ndarray:
    """Per point the equal share: the highest level L with sum of clip(L, lower, upper) over its admitted sessions
    within its room (bisection, all points at once). Admission guarantees the lower bounds fit."""
    points = len(room)
    low = np.zeros(points)
    high = np.maximum(np.bincount(point, weights=upper, minlength=points), 0.0) + 1.0
    high = np.minimum(high, room + 1.0)
    sel = np.flatnonzero(admitted)
    sel_point, sel_lower, sel_upper = point[sel], lower[sel], upper[sel]
    for _ in range(steps):
        mid = (low + high) / 2
        used = np.bincount(sel_point, weights=np.clip(mid[sel_point], sel_lower, sel_upper), minlength=points)
        fits = used <= room + 1e-9
        low = np.where(fits, mid, low)
        high = np.where(fits, high, mid)
    return low


def flexpower_window_kw(*, max_kw: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Per-session limit inside the Flexpower window: 8 A per phase, never above the session's max power."""
    return np.minimum(max_kw, FLEXPOWER_WINDOW_AMPS * np.asarray(phases, dtype=float) * VOLTS / 1000.0)


def flexpower(
    *, avail: np.ndarray, max_kw: np.ndarray, window_kw: np.ndarray, energy_kwh: np.ndarray, in_window: np.ndarray
) -> np.ndarray:
    """(n, slots) Flexpower's static profile: full power from arrival, but at most window_kw (n,) in the slots where
    in_window (slots,) is True (17:00-21:00 local), until the energy is in."""
    limit_kw = np.where(in_window[None, :], window_kw[:, None], max_kw[:, None])
    return uncontrolled(cap_kw=limit_kw * avail, energy_kwh=energy_kwh)
