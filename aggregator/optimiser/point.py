"""One congestion point's scheduling LP, built straight into HiGHS from numpy arrays: the hot path of dispatch,
re-optimisation and bench.optimiser.

Why highspy arrays and not PuLP here: ../shared/ANCHORS.md section 5 measured PuLP's per-variable objects at ~77 ms
of Python model building per congestion point (100 sessions x 96 slots), against < 1 ms for the same model passed to
`Highs.passModel` as CSR arrays; with 1,000 points per national run that is the difference between a build that
dominates and one that does not show. The offer LP (one point, on demand) keeps PuLP as the modelling layer.

Everything is in slots of the horizon (15 minutes of elapsed time, so DST days have 92 or 100 slots) and in kW:
p[s, t] is the average net power of session s in slot t (negative = V2G discharge). Energy rows are written in
kW-slots (kWh / ISP_HOURS) so every matrix coefficient is +-1.

LP (minimised); only column bounds are hard, every row is soft with a ranked penalty, so it always solves:
  1. energy: sum_t p[s, t] + short_s == deliverable_s (1e4 per kW-slot short: drivers first);
     driver deadlines: sum_{t < k} p[s, t] + late == required (also 1e4);
  2. capacity: fixed_t + P_t <= limit_t + over_t in EVERY slot of the horizon (1e3 per kW-slot): the limit holds
     wherever the portfolio can hold it, and where it cannot the total excess is the least possible (one
     unavoidable slot does not relax the others);
  3. order: P_t <= U_t - ordered_t + def_t per ordered slot (1e2 per kW);
  4. DSO bands on the deviation from the baseline (10 per kW);
  5. peak >= fixed_t + P_t in every slot (1 per kW): valley filling, no rebound peak after a window;
  6. a tiny tie-breaker towards earlier charging (a car that leaves early is then already fuller) and a small cost
     on discharge, so V2G only cycles energy when that lowers a higher-ranked term.
V2G sessions get p = c - d with c, d >= 0 and a floor sum_{t <= k} p[s, t] >= 0 in every slot (the battery never
goes below what the car arrived with: we do not know its state of charge).

The min-current rule (0 or >= min power in every slot) is not in the LP: binaries per session-slot would make a
MILP ~10x slower (ANCHORS: 4 s per 1,000 EVs). The LP relaxation is solved and then repaired by
`min_current.enforce_min_power`, which provably keeps the rule, the energy and the limits (see its docstring); the
LP's peak stays a valid lower bound for every schedule (`lp_peak_kw`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import highspy
import numpy as np

from aggregator.optimiser import min_current
from common.isp import ISP_HOURS

_SHORTFALL_PENALTY = 1e4
_CAPACITY_PENALTY = 1e3
_ORDER_PENALTY = 1e2
_BAND_PENALTY = 1e1
_PEAK_WEIGHT = 1.0
_EARLY_WEIGHT = 1e-3
_DISCHARGE_COST = 3e-3  # > the largest early tie-breaker difference (1e-3): cycling costs more than it gains
_ZERO_KWH = 1e-6
_REPAIR_STEPS_KW = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
_INF = highspy.kHighsInf

OPTIMAL = "Optimal"


@dataclass(frozen=True)
class PointSessions:
    """The sessions behind one congestion point as arrays over a horizon of `slots` slots."""

    avail: np.ndarray  # (n, slots) plugged-in fraction of each slot
    max_kw: np.ndarray  # (n,)
    min_kw: np.ndarray  # (n,) IEC 61851 minimum while charging (0 = none)
    discharge_kw: np.ndarray  # (n,) V2G limit (0 = charge only)
    energy_kwh: np.ndarray  # (n,) requested by departure
    flexible: np.ndarray  # (n,) bool; False = charges uncontrolled
    # Driver deadlines: session deadline_session[i] wants deadline_kwh[i] within slots [0, deadline_slots[i]).
    deadline_session: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    deadline_slots: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    deadline_kwh: np.ndarray = field(default_factory=lambda: np.zeros(0))
    deadline_labels: tuple[str, ...] = ()  # how a reason names each deadline (default: its slot)

    @property
    def n(self) -> int:
        return int(self.avail.shape[0])

    @property
    def slots(self) -> int:
        return int(self.avail.shape[1])


@dataclass(frozen=True)
class Physics:
    """What each session can physically do, and what it gets uncontrolled."""

    cap_kw: np.ndarray  # (n, slots) highest average charging power per slot
    lo_kw: np.ndarray  # (n, slots) lowest non-zero average power per slot (min current x plugged-in fraction)
    dcap_kw: np.ndarray  # (n, slots) highest average discharging power per slot
    deliverable_kwh: np.ndarray  # (n,) requested energy capped at what max power delivers while plugged in
    deadline_kwh: np.ndarray  # (m,) deadline energy capped at what max power delivers before the deadline
    uncontrolled_kw: np.ndarray  # (n, slots) full power from arrival until the deliverable energy is in
    reasons: list[str]  # per session: why the request cannot be met in full ('' when it can)


def physics(sessions: PointSessions) -> Physics:
    avail = sessions.avail
    # A car whose charger cannot reach the minimum current cannot charge at all.
    can_charge = sessions.max_kw >= sessions.min_kw
    max_kw = np.where(can_charge, sessions.max_kw, 0.0)
    cap = max_kw[:, None] * avail
    lo = np.minimum(sessions.min_kw[:, None] * avail, cap)
    dcap = np.where(sessions.flexible, sessions.discharge_kw, 0.0)[:, None] * avail
    possible_kwh = cap.sum(axis=1) * ISP_HOURS
    deliverable = np.minimum(sessions.energy_kwh, possible_kwh)
    uncontrolled = uncontrolled_from(cap, deliverable)
    reasons = [""] * sessions.n
    for s in np.flatnonzero(deliverable < sessions.energy_kwh - _ZERO_KWH).tolist():
        if not can_charge[s]:
            reasons[s] = (
                f"max power {sessions.max_kw[s]:.2f} kW is below the minimum charging power "
                f"{sessions.min_kw[s]:.2f} kW: the car cannot charge"
            )
        else:
            reasons[s] = (
                f"not enough time at max power: {possible_kwh[s]:.2f} of {sessions.energy_kwh[s]:.2f} kWh "
                "possible by departure"
            )
    # Energy reachable by each deadline at full power from arrival (the uncontrolled profile is the fastest).
    before = np.zeros(len(sessions.deadline_session))
    if len(before):
        reach = np.cumsum(cap, axis=1) * ISP_HOURS
        k = np.clip(sessions.deadline_slots, 0, sessions.slots)
        padded = np.concatenate([np.zeros((sessions.n, 1)), reach], axis=1)
        before = padded[sessions.deadline_session, k]
    deadline = np.minimum(np.minimum(sessions.deadline_kwh, before), deliverable[sessions.deadline_session])
    for i in np.flatnonzero(deadline < sessions.deadline_kwh - _ZERO_KWH).tolist():
        s = int(sessions.deadline_session[i])
        label = sessions.deadline_labels[i] if i < len(sessions.deadline_labels) else (
            f"slot {int(sessions.deadline_slots[i])}"
        )
        text = (
            f"cannot reach {sessions.deadline_kwh[i]:.2f} kWh by {label} even at max power "
            f"({deadline[i]:.2f} kWh possible)"
        )
        reasons[s] = f"{reasons[s]}; {text}" if reasons[s] else text
    return Physics(cap, lo, dcap, deliverable, deadline, uncontrolled, reasons)


def uncontrolled_from(cap_kw: np.ndarray, deliverable_kwh: np.ndarray) -> np.ndarray:
    """(n, slots) full power from arrival until the deliverable energy is in (the last slot partly filled)."""
    cap_kwh = cap_kw * ISP_HOURS
    before = np.zeros_like(cap_kwh)
    if cap_kwh.shape[1] > 1:
        before[:, 1:] = np.cumsum(cap_kwh, axis=1)[:, :-1]
    return np.clip(deliverable_kwh[:, None] - before, 0.0, cap_kwh) / ISP_HOURS


@dataclass(frozen=True)
class PointRequest:
    """What the point asks of its sessions; all arrays are (slots,) kW."""

    base_kw: np.ndarray  # non-EV load (forecast)
    limit_kw: np.ndarray | None = None  # capacity limit of the point for base + EV load (inf = none)
    ordered_reduction_kw: np.ndarray | None = None  # reduction below the uncontrolled baseline (0 = none)
    band_min_kw: np.ndarray | None = None  # allowed EV deviation from the baseline (nan = none)
    band_max_kw: np.ndarray | None = None


@dataclass(frozen=True)
class PointSchedule:
    schedule_kw: np.ndarray  # (n, slots) average net kW per slot
    shortfall_kwh: np.ndarray  # (n,) requested energy not delivered
    reasons: tuple[str, ...]  # per session: why it is short or how the min-current repair coped ('' = nothing)
    baseline_kw: np.ndarray  # (slots,) summed uncontrolled EV load
    total_kw: np.ndarray  # (slots,) base + EV load
    peak_kw: float  # max of total_kw
    # The LP relaxation's peak: where the limit can hold, no schedule of these sessions has a lower one; where it
    # cannot, the lowest peak among the schedules with the least total excess.
    lp_peak_kw: float
    over_limit_kw: float  # worst slot above the limit (0 when none or no limit)
    lp_over_limit_kw: float  # the LP's worst slot above the limit: 0 exactly when the limit can be kept
    status: str
    build_s: float
    solve_s: float
    repair_s: float


class _Rows:
    """Row-wise triplets collected per block, turned into one CSR matrix at the end."""

    def __init__(self) -> None:
        self.count = 0
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []

    def add(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """rows are local (0 .. len(lower)-1) and are shifted past the rows already added."""
        self.rows.append(rows.astype(np.int64) + self.count)
        self.cols.append(cols.astype(np.int64))
        self.vals.append(vals.astype(float))
        self.lower.append(lower.astype(float))
        self.upper.append(upper.astype(float))
        self.count += len(lower)

    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rows = np.concatenate(self.rows) if self.rows else np.zeros(0, dtype=np.int64)
        cols = np.concatenate(self.cols) if self.cols else np.zeros(0, dtype=np.int64)
        vals = np.concatenate(self.vals) if self.vals else np.zeros(0)
        order = np.argsort(rows, kind="stable")
        start = np.searchsorted(rows[order], np.arange(self.count + 1)).astype(np.int32)
        lower = np.concatenate(self.lower) if self.lower else np.zeros(0)
        upper = np.concatenate(self.upper) if self.upper else np.zeros(0)
        return start, cols[order].astype(np.int32), vals[order], lower, upper


_HIGHS: highspy.Highs | None = None


def _highs() -> highspy.Highs:
    """One HiGHS instance per process (Celery worker / pool process), reused for every point."""
    global _HIGHS
    if _HIGHS is None:
        _HIGHS = highspy.Highs()
        _HIGHS.setOptionValue("output_flag", False)
        # Presolve finds nothing to remove in this LP (columns exist only where a car can charge) and costs ~30 %
        # of the solve time per point, measured on 100-session residential points.
        _HIGHS.setOptionValue("presolve", "off")
        # No "threads" option: HiGHS's thread scheduler is process-wide and PuLP's HiGHS may have started it first
        # (setting it afterwards makes run() fail); the dual simplex is serial anyway.
    return _HIGHS


def schedule_point(sessions: PointSessions, request: PointRequest) -> PointSchedule:
    """Schedule one congestion point: the LP above, then the min-current repair."""
    began = time.perf_counter()
    n, slots = sessions.n, sessions.slots
    phys = physics(sessions)
    base = np.asarray(request.base_kw, dtype=float)
    if base.shape != (slots,):
        raise ValueError(f"base_kw has shape {base.shape}, expected {(slots,)}")
    flexible = sessions.flexible.astype(bool)
    baseline = phys.uncontrolled_kw.sum(axis=0)
    fixed = base + phys.uncontrolled_kw[~flexible].sum(axis=0)  # load nobody controls
    flex_baseline = baseline - phys.uncontrolled_kw[~flexible].sum(axis=0)
    limit = _slot_array(request.limit_kw, slots, np.inf)
    ordered = _slot_array(request.ordered_reduction_kw, slots, 0.0)
    band_min = _slot_array(request.band_min_kw, slots, np.nan)
    band_max = _slot_array(request.band_max_kw, slots, np.nan)

    v2g = flexible & (phys.dcap_kw.sum(axis=1) > 0)
    wants = flexible & (phys.deliverable_kwh > 0)
    c_mask = (phys.cap_kw > 0) & (wants | v2g)[:, None]
    d_mask = (phys.dcap_kw > 0) & v2g[:, None]
    c_s, c_t = np.nonzero(c_mask)
    d_s, d_t = np.nonzero(d_mask)
    n_c, n_d = len(c_s), len(d_s)
    schedule = phys.uncontrolled_kw.copy()
    schedule[flexible] = 0.0

    status = OPTIMAL
    lp_peak = float(fixed.max()) if slots else 0.0
    build_s = solve_s = repair_s = 0.0
    if n_c + n_d:
        # Column layout: [c | d | short per session with columns | late per deadline | peak | load_t | over_t |
        # def | bands]
        sess_cols = np.flatnonzero(np.bincount(np.concatenate([c_s, d_s]), minlength=n) > 0)
        short_col = np.full(n, -1, dtype=np.int64)
        short_col[sess_cols] = n_c + n_d + np.arange(len(sess_cols))
        next_col = n_c + n_d + len(sess_cols)
        dl_mask = short_col[sessions.deadline_session] >= 0 if len(sessions.deadline_session) else np.zeros(0, bool)
        dl_idx = np.flatnonzero(dl_mask & (phys.deadline_kwh > _ZERO_KWH))
        late_col = next_col + np.arange(len(dl_idx))
        next_col += len(dl_idx)
        peak_col = next_col
        next_col += 1
        slot_has = np.zeros(slots, dtype=bool)
        slot_has[c_t] = True
        slot_has[d_t] = True
        active = np.flatnonzero(slot_has)
        # Per active slot: its total load split as load_t (<= limit_t) + over_t (>= 0, penalised).
        load_col = np.full(slots, -1, dtype=np.int64)
        load_col[active] = next_col + np.arange(len(active))
        next_col += len(active)
        limited = active[np.isfinite(limit[active])]
        over_col = np.full(slots, -1, dtype=np.int64)
        over_col[limited] = next_col + np.arange(len(limited))
        next_col += len(limited)
        order_slots = np.flatnonzero((ordered > 0) & slot_has)
        def_col = next_col + np.arange(len(order_slots))
        next_col += len(order_slots)
        bmax_slots = np.flatnonzero(np.isfinite(band_max) & slot_has)
        bmin_slots = np.flatnonzero(np.isfinite(band_min) & slot_has)
        bmax_col = next_col + np.arange(len(bmax_slots))
        next_col += len(bmax_slots)
        bmin_col = next_col + np.arange(len(bmin_slots))
        next_col += len(bmin_slots)
        n_cols = next_col

        lower = np.zeros(n_cols)
        upper = np.full(n_cols, _INF)
        cost = np.zeros(n_cols)
        upper[:n_c] = phys.cap_kw[c_s, c_t]
        upper[n_c : n_c + n_d] = phys.dcap_kw[d_s, d_t]
        target = phys.deliverable_kwh / ISP_HOURS  # kW-slots
        upper[short_col[sess_cols]] = np.maximum(target[sess_cols], 0.0)
        cost[:n_c] = _EARLY_WEIGHT * (1.0 + c_t / max(slots, 1))
        cost[n_c : n_c + n_d] = _DISCHARGE_COST
        cost[short_col[sess_cols]] = _SHORTFALL_PENALTY
        cost[late_col] = _SHORTFALL_PENALTY
        # The peak is at least the load nobody controls in slots without columns; without V2G also in every slot
        # (a helpful bound), with V2G the EV load can go below zero and cancel part of it.
        inactive = fixed[~slot_has]
        lower[peak_col] = max(float(inactive.max(initial=-_INF)), lp_peak if not v2g.any() else -_INF)
        cost[peak_col] = _PEAK_WEIGHT
        lower[load_col[active]] = -_INF
        upper[load_col[active]] = np.where(np.isfinite(limit[active]), limit[active], _INF)
        cost[over_col[limited]] = _CAPACITY_PENALTY
        cost[def_col] = _ORDER_PENALTY
        cost[bmax_col] = _BAND_PENALTY
        cost[bmin_col] = _BAND_PENALTY

        # Net-power entries of every (session, slot) column: +1 for charge, -1 for discharge.
        p_cols = np.arange(n_c + n_d)
        p_s = np.concatenate([c_s, d_s])
        p_t = np.concatenate([c_t, d_t])
        p_v = np.concatenate([np.ones(n_c), -np.ones(n_d)])

        rows = _Rows()
        # 1. energy per session: sum p + short == target
        row_of_session = np.full(n, -1, dtype=np.int64)
        row_of_session[sess_cols] = np.arange(len(sess_cols))
        rows.add(
            np.concatenate([row_of_session[p_s], np.arange(len(sess_cols))]),
            np.concatenate([p_cols, short_col[sess_cols]]),
            np.concatenate([p_v, np.ones(len(sess_cols))]),
            target[sess_cols],
            target[sess_cols],
        )
        # Driver deadlines: sum_{t < k} p + late >= required.
        if len(dl_idx):
            dl_s = sessions.deadline_session[dl_idx]
            dl_k = sessions.deadline_slots[dl_idx]
            required = phys.deadline_kwh[dl_idx] / ISP_HOURS
            r, c, v = [], [], []
            for i, (s, k) in enumerate(zip(dl_s.tolist(), dl_k.tolist(), strict=True)):
                hit = np.flatnonzero((p_s == s) & (p_t < k))
                r.append(np.full(len(hit) + 1, i))
                c.append(np.concatenate([p_cols[hit], [late_col[i]]]))
                v.append(np.concatenate([p_v[hit], [1.0]]))
            rows.add(np.concatenate(r), np.concatenate(c), np.concatenate(v), required, np.full(len(dl_idx), _INF))
        # V2G floor: the cumulative net energy of a V2G session never drops below zero.
        v2g_sessions = np.flatnonzero(v2g)
        if len(v2g_sessions):
            r, c, v, count = [], [], [], 0
            for s in v2g_sessions.tolist():
                own = np.flatnonzero(p_s == s)
                own_slots = np.unique(p_t[own])
                for k in own_slots.tolist():
                    hit = own[p_t[own] <= k]
                    r.append(np.full(len(hit), count))
                    c.append(p_cols[hit])
                    v.append(p_v[hit])
                    count += 1
            rows.add(np.concatenate(r), np.concatenate(c), np.concatenate(v), np.zeros(count), np.full(count, _INF))

        # The only rows with every p column of a slot: P_t - load_t - over_t == -fixed_t. Every other slot row
        # (peak, order, band) then needs just load_t + over_t and one more column, which keeps the matrix at about one
        # entry per p column besides the energy rows (ANCHORS: watch the nonzeros).
        row_of_slot = np.full(slots, -1, dtype=np.int64)
        row_of_slot[active] = np.arange(len(active))
        has_over = over_col[active] >= 0
        rows.add(
            np.concatenate([row_of_slot[p_t], row_of_slot[active], row_of_slot[active[has_over]]]),
            np.concatenate([p_cols, load_col[active], over_col[active[has_over]]]),
            np.concatenate([p_v, -np.ones(len(active)), -np.ones(int(has_over.sum()))]),
            -fixed[active],
            -fixed[active],
        )

        def slot_rows(slot_ids: np.ndarray, extra_cols: np.ndarray, extra_val: float, lo: np.ndarray,
                      up: np.ndarray) -> None:
            """lo <= load_t + over_t + extra_val x extra column <= up for each slot."""
            local = np.arange(len(slot_ids))
            over = over_col[slot_ids] >= 0
            rows.add(
                np.concatenate([local, local[over], local]),
                np.concatenate([load_col[slot_ids], over_col[slot_ids[over]], extra_cols]),
                np.concatenate([np.ones(len(slot_ids)), np.ones(int(over.sum())), np.full(len(slot_ids), extra_val)]),
                lo,
                up,
            )

        # 5. peak: total_t - peak <= 0
        slot_rows(active, np.full(len(active), peak_col), -1.0, np.full(len(active), -_INF), np.zeros(len(active)))
        # 3. order: P_t <= U_t - ordered_t + def_t, with P_t = total_t - fixed_t
        if len(order_slots):
            slot_rows(order_slots, def_col, -1.0, np.full(len(order_slots), -_INF),
                      fixed[order_slots] + flex_baseline[order_slots] - ordered[order_slots])
        # 4. bands: U_t + min_t <= P_t (+ under_t), P_t (- over_t) <= U_t + max_t
        if len(bmax_slots):
            slot_rows(bmax_slots, bmax_col, -1.0, np.full(len(bmax_slots), -_INF),
                      fixed[bmax_slots] + flex_baseline[bmax_slots] + band_max[bmax_slots])
        if len(bmin_slots):
            slot_rows(bmin_slots, bmin_col, 1.0, fixed[bmin_slots] + flex_baseline[bmin_slots] + band_min[bmin_slots],
                      np.full(len(bmin_slots), _INF))

        start, index, value, row_lower, row_upper = rows.csr()
        # Float noise like 2e-15 kW in a right-hand side is zero (HiGHS warns about "excessively small bounds").
        row_lower[np.abs(row_lower) < 1e-9] = 0.0
        row_upper[np.abs(row_upper) < 1e-9] = 0.0
        highs = _highs()
        highs.clearModel()
        highs.passModel(
            n_cols, rows.count, len(index), 2, 1, 0.0,  # rowwise, minimise, no offset
            cost, lower, upper, row_lower, row_upper, start, index, value, np.zeros(n_cols, dtype=np.int32),
        )
        build_s = time.perf_counter() - began
        highs.run()
        solve_s = time.perf_counter() - began - build_s
        model_status = highs.getModelStatus()
        if model_status == highspy.HighsModelStatus.kOptimal:
            values = np.asarray(highs.getSolution().col_value)
            schedule[c_s, c_t] += np.clip(values[:n_c], 0.0, upper[:n_c])
            schedule[d_s, d_t] -= np.clip(values[n_c : n_c + n_d], 0.0, upper[n_c : n_c + n_d])
            lp_peak = float(values[peak_col])
        else:
            # Drivers first: without a solution every flexible session charges uncontrolled.
            status = highs.modelStatusToString(model_status)
            schedule[flexible] = phys.uncontrolled_kw[flexible]

    lp_total = base + schedule.sum(axis=0)
    lp_over = float(np.max(lp_total - limit, initial=0.0)) if slots else 0.0
    # Ceilings for the min-current repair: the LP's own peak, a little above it in growing steps (so a session whose
    # whole stay sits at the peak spreads its extra over several slots), the uncontrolled peak, the hard ceiling.
    hard = _ceiling(limit, ordered, band_max, fixed, flex_baseline)
    lp_level = max(lp_peak, float(lp_total.max(initial=0.0)))
    uncontrolled_peak = float((base + baseline).max(initial=0.0))
    repair_began = time.perf_counter()
    notes = min_current.enforce_min_power(
        schedule=schedule,
        lo_kw=phys.lo_kw,
        cap_kw=phys.cap_kw,
        dcap_kw=phys.dcap_kw,
        target_kwh=phys.deliverable_kwh,
        flexible=flexible,
        deadline_session=sessions.deadline_session,
        deadline_slots=sessions.deadline_slots,
        deadline_kwh=phys.deadline_kwh,
        total_kw=lp_total.copy(),
        ceilings_kw=[np.minimum(hard, lp_level + step) for step in _REPAIR_STEPS_KW]
        + [np.minimum(hard, max(lp_level, uncontrolled_peak)), hard],
    )
    repair_s = time.perf_counter() - repair_began

    total = base + schedule.sum(axis=0)
    delivered = schedule.sum(axis=1) * ISP_HOURS
    shortfall = np.maximum(sessions.energy_kwh - delivered, 0.0)
    shortfall[shortfall < _ZERO_KWH] = 0.0
    reasons = list(phys.reasons)
    for s, note in notes.items():
        reasons[s] = f"{reasons[s]}; {note}" if reasons[s] else note
    for s in np.flatnonzero((shortfall > 0) & (phys.deliverable_kwh - delivered > _ZERO_KWH)).tolist():
        if not reasons[s]:
            reasons[s] = "the solver found no schedule that delivers it"
    return PointSchedule(
        schedule_kw=schedule,
        shortfall_kwh=shortfall,
        reasons=tuple(reasons),
        baseline_kw=baseline,
        total_kw=total,
        peak_kw=float(total.max()) if slots else 0.0,
        lp_peak_kw=lp_peak,
        over_limit_kw=max(float(np.max(total - limit, initial=0.0)), 0.0) if slots else 0.0,
        lp_over_limit_kw=max(lp_over, 0.0),
        status=status,
        build_s=build_s,
        solve_s=solve_s,
        repair_s=repair_s,
    )


def _slot_array(values: np.ndarray | None, slots: int, default: float) -> np.ndarray:
    if values is None:
        return np.full(slots, default)
    array = np.asarray(values, dtype=float)
    if array.shape != (slots,):
        raise ValueError(f"per-slot array has shape {array.shape}, expected {(slots,)}")
    return array


def _ceiling(limit: np.ndarray, ordered: np.ndarray, band_max: np.ndarray, fixed: np.ndarray,
             flex_baseline: np.ndarray) -> np.ndarray:
    """Highest total load (base + EV) per slot that keeps the limit, the order and the DSO's band."""
    ceiling = limit.copy()
    ordered_slots = ordered > 0
    ceiling[ordered_slots] = np.minimum(
        ceiling[ordered_slots], fixed[ordered_slots] + flex_baseline[ordered_slots] - ordered[ordered_slots]
    )
    banded = np.isfinite(band_max)
    ceiling[banded] = np.minimum(ceiling[banded], fixed[banded] + flex_baseline[banded] + band_max[banded])
    return ceiling
