"""The IEC 61851 minimum-current rule as a repair after the LP: every slot of a controlled session ends at 0 or at
least its minimum power (min current x phases x 230 V, times the plugged-in fraction of the slot), in both
directions for V2G.

Why a repair and not a MILP: the exact rule needs one binary per session-slot; ANCHORS section 5 measured that MILP
at ~4 s per 1,000 EVs against ~0.1 s for the LP, too slow for a national run. A vertex of the LP has at most one
fractional value per row (sessions + slots), so only a few slots per session fall below the minimum, and moving
their energy is cheap.

The repair, per session, in slot order (earlier is always safe for deadlines and the V2G floor; a session with
neither fills the slots with the lowest total load first):
  1. every slot with 0 < p < min is set to 0 and its energy becomes `need` (a small discharge is set to 0 when the
     slot has room for the extra load, otherwise widened to the minimum, the difference joining `need`);
  2. `need` goes first into slots already charging (up to max power) and then into empty plugged-in slots opened
     at >= min power; an empty slot opened for less than its minimum borrows the difference from a charging slot
     that stays >= min, so the energy is exact; only when no slot can lend it does the driver get up to one
     minimum-power slot extra (never less);
  3. step 2 runs under the LP's own peak first, then a little above it in growing steps (0.25 to 8 kW, so a
     session whose whole stay sits at the peak spreads its extra thinly), then under the uncontrolled peak, then
     under the hard ceiling (capacity limit, order, DSO band; no stage is ever above it), and only then above it,
     which the result reports; a split that leaves a trickle, or extra energy, is allowed only at the hard ceiling;
  4. the session is checked (energy, deadlines, V2G floor); if anything fails it falls back to uncontrolled
     charging with its last slot rounded up to the minimum, which meets every physically possible deadline.
Why the rule holds: step 1 removes every value in (0, min); step 2 only raises values that are >= min, opens slots
at >= min, and lowers a lender no further than its minimum; the fallback only has full-power slots and one slot at
>= min. The energy never drops below the target: every kWh taken out in step 1 is put back in step 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.isp import ISP_HOURS

_NOISE_KW = 1e-7  # LP values below this are solver noise: exactly 0
_TOL_KWH = 1e-6


def enforce_min_power(
    *,
    schedule: np.ndarray,
    lo_kw: np.ndarray,
    cap_kw: np.ndarray,
    dcap_kw: np.ndarray,
    target_kwh: np.ndarray,
    flexible: np.ndarray,
    deadline_session: np.ndarray,
    deadline_slots: np.ndarray,
    deadline_kwh: np.ndarray,
    total_kw: np.ndarray,
    ceilings_kw: Sequence[np.ndarray],
) -> dict[int, str]:
    """Repair `schedule` (n, slots) in place; `total_kw` (slots,) is the point's total load and is kept in step.
    `ceilings_kw` are the total-load ceilings per slot tried in turn, the last one being the hard one (limit, order,
    band). Returns a note per session whose repair had to give way (over the limit, extra energy, fallback)."""
    flex = flexible.astype(bool)[:, None]
    magnitude = np.abs(schedule)
    noise = flex & (magnitude > 0) & (magnitude < _NOISE_KW)
    if noise.any():
        total_kw -= np.where(noise, schedule, 0.0).sum(axis=0)
        schedule[noise] = 0.0
        magnitude = np.abs(schedule)
    small = flex & (magnitude >= _NOISE_KW) & (magnitude < lo_kw - _NOISE_KW)
    # Values a hair under the minimum are the minimum (the LP works to ~1e-7).
    near = flex & (magnitude >= lo_kw - _NOISE_KW) & (magnitude < lo_kw) & (lo_kw > 0)
    if near.any():
        snapped = np.sign(schedule[near]) * lo_kw[near]
        total_kw += np.bincount(np.nonzero(near)[1], weights=snapped - schedule[near], minlength=len(total_kw))
        schedule[near] = snapped
    deadlines: dict[int, list[tuple[int, float]]] = {}
    for s, k, kwh in zip(deadline_session.tolist(), deadline_slots.tolist(), deadline_kwh.tolist(), strict=True):
        deadlines.setdefault(s, []).append((k, kwh))
    notes: dict[int, str] = {}
    hard = ceilings_kw[-1]
    for s in np.flatnonzero(small.any(axis=1)).tolist():
        lp_row = schedule[s].copy()
        session_deadlines = deadlines.get(s, [])
        repair = _SessionRepair(
            row=schedule[s],
            lo=lo_kw[s],
            cap=cap_kw[s],
            v2g=bool(dcap_kw[s].sum() > 0),
            free_order=s not in deadlines,
            total=total_kw,
            ceilings=ceilings_kw,
        )
        note = repair.run()
        ok = _session_ok(schedule[s], lo_kw[s], float(target_kwh[s]), session_deadlines, repair.v2g)
        if ok and not repair.gave_way:
            if note:
                notes[s] = note
            continue
        # The repair broke a deadline or went above the hard ceiling. Before charging the car uncontrolled, try the
        # other way round: raise each small slot to the minimum and borrow the difference from the session's own
        # charging slots. With a deadline inside an order window this keeps the order that moving the energy to
        # after the deadline could not (2.7 + 1.3 kW with a 1.38 kW minimum becomes 2.62 + 1.38, not 3.7 + 0.3).
        options: list[tuple[np.ndarray, str]] = []
        if ok:
            options.append((schedule[s].copy(), note))
        _replace_row(schedule, s, total_kw, lp_row)
        rounded = _rounded_up(lp_row, lo_kw[s])
        if rounded is not None and _session_ok(rounded, lo_kw[s], float(target_kwh[s]), session_deadlines,
                                               repair.v2g):
            options.append((rounded, "min-current rule: a slot raised to the minimum, borrowing from another"))
        if not options:
            options.append((_uncontrolled_rounded(cap_kw[s], lo_kw[s], float(target_kwh[s])),
                            "min-current rule: the repaired schedule broke a deadline, so the car charges "
                            "uncontrolled"))
        before = _over_kw(total_kw, hard)
        excess = [_over_kw(total_kw + row - lp_row, hard) - before for row, _ in options]
        best = int(np.argmin(excess))  # ties keep the earlier option: the repair, then rounding up, then fallback
        row, note = options[best]
        _replace_row(schedule, s, total_kw, row)
        if excess[best] > _NOISE_KW and "above the limit" not in note:
            note = f"{note}; {excess[best]:.2f} kW above the limit to keep the energy"
        notes[s] = note
    return notes


def _replace_row(schedule: np.ndarray, s: int, total_kw: np.ndarray, row: np.ndarray) -> None:
    total_kw += row - schedule[s]
    schedule[s] = row


def _over_kw(total_kw: np.ndarray, ceiling: np.ndarray) -> float:
    """How far the total load goes above a ceiling, summed over slots (0 when it never does)."""
    return float(np.maximum(total_kw - ceiling, 0.0).sum())


def _rounded_up(row: np.ndarray, lo: np.ndarray) -> np.ndarray | None:
    """`row` with every slot in (0, min) raised to the minimum, the difference taken back from the latest slots
    charging above their minimum (moving energy earlier, which never breaks a deadline) and then from earlier ones.
    None when the other slots cannot lend all of it (the car would be planned more than it takes: a full car stops
    drawing, and the plan would overstate the load), and for a discharging row, whose small values the main repair
    handles."""
    if (row < -_NOISE_KW).any():
        return None
    rounded = row.copy()
    small = (rounded >= _NOISE_KW) & (rounded < lo - _NOISE_KW)
    extra = float((lo[small] - rounded[small]).sum())
    rounded[small] = lo[small]
    lenders = np.flatnonzero(~small & (rounded - lo > _NOISE_KW))
    last_small = int(np.flatnonzero(small)[-1]) if small.any() else -1
    for t in [*lenders[lenders > last_small][::-1].tolist(), *lenders[lenders < last_small][::-1].tolist()]:
        if extra <= _NOISE_KW:
            break
        cut = min(float(rounded[t] - lo[t]), extra)
        rounded[t] -= cut
        extra -= cut
    return rounded if extra <= _NOISE_KW else None


class _SessionRepair:
    def __init__(self, *, row: np.ndarray, lo: np.ndarray, cap: np.ndarray, v2g: bool, free_order: bool,
                 total: np.ndarray, ceilings: Sequence[np.ndarray]) -> None:
        self.row, self.lo, self.cap, self.v2g = row, lo, cap, v2g
        # Without deadlines or a V2G floor the slot order is free: fill the lowest total load first (valleys).
        self.free_order = free_order and not v2g
        self.total, self.ceilings, self.hard = total, ceilings, ceilings[-1]
        self.gave_way = False  # set when the energy could only be kept above the hard ceiling

    def _set(self, t: int, value: float) -> None:
        self.total[t] += value - self.row[t]
        self.row[t] = value

    def run(self) -> str:
        row, lo = self.row, self.lo
        need = 0.0  # kW-slots still to place (negative: surplus)
        for t in np.flatnonzero((row <= -_NOISE_KW) & (row > -lo + _NOISE_KW)).tolist():
            x = -float(row[t])
            if self.hard[t] - self.total[t] >= x:
                self._set(t, 0.0)
                need -= x
            else:
                self._set(t, -float(lo[t]))
                need += float(lo[t]) - x
        positive = np.flatnonzero((row >= _NOISE_KW) & (row < lo - _NOISE_KW))
        need += float(row[positive].sum())
        self.total[positive] -= row[positive]
        row[positive] = 0.0

        notes: list[str] = []
        if need > _NOISE_KW:
            for index, ceiling in enumerate(self.ceilings):
                need = self._raise(need, ceiling)
                need = self._open(need, ceiling, notes, final=index == len(self.ceilings) - 1)
                if need <= _NOISE_KW:
                    break
            if need > _NOISE_KW:
                before = self.total.copy()
                unlimited = np.full_like(self.total, np.inf)
                need = self._raise(need, unlimited)
                need = self._open(need, unlimited, notes, final=True)
                excess = float(np.max(self.total - self.hard, initial=0.0) - np.max(before - self.hard, initial=0.0))
                self.gave_way = excess > _NOISE_KW
                notes.append(f"min-current rule: {max(excess, 0.0):.2f} kW above the limit to keep the energy")
        elif need < -_NOISE_KW:
            self._trim(-need)
        return "; ".join(notes)

    def _ordered(self, slots: np.ndarray) -> np.ndarray:
        if self.free_order and len(slots) > 1:
            return slots[np.argsort(self.total[slots], kind="stable")]
        return slots

    def _raise(self, need: float, ceiling: np.ndarray) -> float:
        """Add to slots already charging at >= min (earliest or lowest load first), up to max power and ceiling."""
        row = self.row
        big = self._ordered(np.flatnonzero((row >= self.lo) & (row >= _NOISE_KW) & (self.cap - row > _NOISE_KW)))
        if not len(big) or need <= _NOISE_KW:
            return need
        room = np.clip(np.minimum(self.cap[big] - row[big], ceiling[big] - self.total[big]), 0.0, None)
        cum = np.cumsum(room)
        take = np.clip(need - (cum - room), 0.0, room)
        row[big] += take
        self.total[big] += take
        return need - float(take.sum())

    def _open(self, need: float, ceiling: np.ndarray, notes: list[str], *, final: bool) -> float:
        """Open empty plugged-in slots at >= min power (earliest or lowest load first), borrowing to keep the energy
        exact."""
        row, lo, cap = self.row, self.lo, self.cap
        candidates = self._ordered(np.flatnonzero((row == 0.0) & (cap > _NOISE_KW) & (ceiling - self.total >= lo)))
        # First pass: only parts that leave nothing or at least a minimum-power slot's worth for later.
        for t in candidates.tolist():
            if need < lo[t] or need <= _NOISE_KW or row[t] != 0.0:
                continue
            room = float(min(cap[t], ceiling[t] - self.total[t]))
            if room < lo[t]:
                continue
            if room >= need:
                value = need
            elif need - room >= lo[t]:
                value = room
            elif need - lo[t] >= lo[t]:
                value = need - float(lo[t])  # < room; leaves exactly one minimum for another slot
            else:
                continue
            self._set(t, value)
            need -= value
        # Second pass: what is left (less than a minimum, or no slot could split it) opens one slot at >= minimum,
        # borrowing the difference from a charging slot; splits that would leave a trickle, and the extra energy
        # when nothing can lend, only under the last (hard) ceiling, after every lower ceiling was tried.
        for t in candidates.tolist():
            if need <= _NOISE_KW:
                break
            if row[t] != 0.0:
                continue
            room = float(min(cap[t], ceiling[t] - self.total[t]))
            if room < lo[t]:
                continue
            if need >= lo[t]:
                if final:
                    value = min(room, need)
                    self._set(t, value)
                    need -= value
                continue
            excess = float(lo[t]) - need
            lenders = np.flatnonzero((row - lo >= excess) & (row >= _NOISE_KW) & (np.arange(len(row)) != t))
            later = lenders[lenders > t]
            if len(later):
                lender = int(later[-1])  # the latest: moving its energy earlier never breaks a deadline
            elif len(lenders):
                lender = int(lenders[-1])
            else:
                lender = -1
            if lender >= 0:
                self._set(lender, float(row[lender]) - excess)
            elif final:
                notes.append(f"min-current rule: {excess * ISP_HOURS:.2f} kWh more than requested")
            else:
                continue
            self._set(t, float(lo[t]))
            need = 0.0
        return need

    def _trim(self, surplus: float) -> None:
        """Take a surplus back from the latest charging slots, never below their minimum (less load: always safe)."""
        row = self.row
        for t in np.flatnonzero(row >= _NOISE_KW)[::-1].tolist():
            if surplus <= _NOISE_KW:
                return
            cut = min(float(row[t] - self.lo[t]), surplus)
            if cut > 0:
                self._set(t, float(row[t]) - cut)
                surplus -= cut


def _session_ok(row: np.ndarray, lo: np.ndarray, target_kwh: float, deadlines: list[tuple[int, float]],
                v2g: bool) -> bool:
    reached = np.cumsum(row) * ISP_HOURS
    if len(reached) and reached[-1] < target_kwh - _TOL_KWH:
        return False
    for k, kwh in deadlines:
        if k > 0 and reached[min(k, len(reached)) - 1] < kwh - _TOL_KWH:
            return False
    return not (v2g and len(reached) and reached.min() < -_TOL_KWH)


def _uncontrolled_rounded(cap: np.ndarray, lo: np.ndarray, target_kwh: float) -> np.ndarray:
    """Full power from arrival until the target is in, the last slot raised to the minimum if it falls below."""
    cap_slots = cap.copy()
    before = np.concatenate([[0.0], np.cumsum(cap_slots)[:-1]])
    row = np.clip(target_kwh / ISP_HOURS - before, 0.0, cap_slots)
    partial = (row > 0) & (row < lo)
    row[partial] = lo[partial]
    return row
