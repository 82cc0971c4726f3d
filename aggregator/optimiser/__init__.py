"""Portfolio optimiser for smart EV charging: the uncontrolled baseline, the flexibility an offer can promise, the
dispatch schedule that delivers an accepted order, and the per-slot power limits sent to charge points.

Pure Python (dataclasses + numpy + PuLP with its HiGHS backend); it never imports Django models, so Celery workers
and benchmarks can use it directly.

Time is cut into 15-minute slots counted in elapsed UTC time from `Horizon.start`, so DST days simply have 92 or 100
slots. Power is the average kW over a slot; energy in a slot is power x ISP_HOURS.

Modelling layers: the dispatch / re-optimisation LP, solved for every congestion point of a national portfolio, is
built straight into HiGHS from numpy CSR arrays (`point.schedule_point`, highspy's array API): ANCHORS section 5
shows Python-side model building with PuLP's per-variable objects dominating at scale. The offer LP, one point on
demand, keeps PuLP as the modelling layer (HiGHS as the solver). The min-current rule is an LP relaxation plus a
provably rule-keeping repair (`min_current`), not a MILP. The pilots' control rules live in aggregator.strategies.

Columns: p[s, t], the average charging power of session s in slot t, exists only where the car is plugged in
(possibly for part of the slot) and is bounded by max_power_kw x plugged-in fraction (and -max_discharge_kw x the
fraction for V2G). Sessions that are not flexible (opted out, boosted) charge exactly uncontrolled.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pulp

from aggregator.optimiser import point
from aggregator.optimiser.point import PointRequest, PointSchedule, PointSessions, schedule_point
from common.isp import ISP, ISP_HOURS, ceil_to_isp, floor_to_isp, is_isp_aligned

__all__ = [
    "DeviationBand", "DispatchResult", "Horizon", "OfferResult", "PointRequest", "PointSchedule", "PointSessions",
    "SessionInput", "availability", "deliverable_energy_kwh", "dispatch_optimise", "offer_optimise",
    "point_sessions", "profile_limits_w", "schedule_point", "uncontrolled_kw",
]

ISP_SECONDS = ISP.total_seconds()

# Results below this are solver noise (HiGHS works to ~1e-7 absolute), reported as exactly zero.
_ZERO_KW = 1e-6
_ZERO_KWH = 1e-6

# Offer objective (maximised), per kW of reduction in a requested slot. The reduction of a slot is split into
# _EVEN_TIERS equal tiers whose bonus falls from _EVEN_BONUS to _EVEN_BONUS / _EVEN_TIERS: a concave reward, so a
# kW in a slot that is barely covered is worth slightly more than one in a slot that is nearly full. That spreads the
# reduction evenly without a max-min row that one physically stuck slot would pin, and it can never cost more than
# _EVEN_BONUS (1 %) of the total reduction.
_EVEN_TIERS = 10
_EVEN_BONUS = 1e-2
# Soft DSO bands: each kW of band violation frees at most one kW-slot of charging, worth at most 1 + _EVEN_BONUS in
# reduction, so 100 makes a violation far more expensive than anything it could buy.
_OFFER_BAND_PENALTY = 100.0

# Dispatch objective: see point.py (drivers > capacity > order > DSO band > peak).

# Tie-breaker towards earlier charging (a car that leaves early is then already fuller), weight x (1 + t / slots)
# per kW-slot. Below every other term (below one even-spread tier step of 1e-3), yet slot-to-slot steps stay above
# HiGHS's 1e-7 dual tolerance for horizons of a few days.
_OFFER_EARLY_WEIGHT = 1e-4

_OPTIMAL = pulp.LpStatus[pulp.LpStatusOptimal]  # "Optimal"


def _as_utc(value: datetime, *, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {value!r}")
    # Note: aware datetimes sharing one tzinfo compare and subtract by wall clock, which is wrong across a DST change;
    # everything is moved to UTC first so all arithmetic here is elapsed time.
    return value.astimezone(UTC)


@dataclass(frozen=True)
class SessionInput:
    """One charging session as the optimiser sees it (arrival and departure are stored in UTC)."""

    key: str  # caller's id for the session
    arrival: datetime
    departure: datetime
    energy_kwh: float  # energy the driver wants by departure (for a session already running: what is still missing)
    max_power_kw: float  # min of EVSE and car
    # IEC 61851: below 6 A per phase a car does not charge, so every slot's power is 0 or at least this
    # (6 A x phases x 230 V, e.g. 1.38 kW on one phase, 4.14 kW on three).
    min_power_kw: float = 0.0
    # V2G: the car may feed back down to -max_discharge_kw; the energy by departure still holds. 0 = charge only.
    max_discharge_kw: float = 0.0
    # Driver preference: at least kWh by the given instant, e.g. ((07:00 tomorrow, 20.0),).
    min_energy_by: tuple[tuple[datetime, float], ...] = ()
    # False: opted out of flexibility or boosted: charges exactly uncontrolled (full power from arrival).
    flexible: bool = True

    def __post_init__(self) -> None:
        arrival = _as_utc(self.arrival, what="arrival")
        departure = _as_utc(self.departure, what="departure")
        if departure <= arrival:
            raise ValueError(f"session {self.key}: departure {departure} is not after arrival {arrival}")
        for name in ("energy_kwh", "max_power_kw", "min_power_kw", "max_discharge_kw"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"session {self.key}: {name} must be a finite number >= 0, got {value}")
        deadlines: list[tuple[datetime, float]] = []
        for instant, kwh in self.min_energy_by:
            if not (math.isfinite(kwh) and kwh >= 0):
                raise ValueError(f"session {self.key}: min_energy_by kWh must be a finite number >= 0, got {kwh}")
            deadlines.append((_as_utc(instant, what="min_energy_by instant"), float(kwh)))
        object.__setattr__(self, "arrival", arrival)
        object.__setattr__(self, "departure", departure)
        object.__setattr__(self, "min_energy_by", tuple(sorted(deadlines)))


@dataclass(frozen=True)
class Horizon:
    """`slots` consecutive 15-minute slots from `start` (UTC, ISP-aligned), counted in elapsed time."""

    start: datetime
    slots: int

    def __post_init__(self) -> None:
        start = _as_utc(self.start, what="horizon start")
        if not is_isp_aligned(start):
            raise ValueError(f"horizon start {start} is not on a 15-minute boundary")
        if self.slots < 0:
            raise ValueError(f"horizon needs slots >= 0, got {self.slots}")
        object.__setattr__(self, "start", start)

    @property
    def end(self) -> datetime:
        return self.start + self.slots * ISP

    def slot_start(self, index: int) -> datetime:
        return self.start + index * ISP

    def slot_of(self, instant: datetime) -> int:
        """Index of the slot containing the instant; < 0 before the horizon, >= slots after it."""
        return (_as_utc(instant, what="instant") - self.start) // ISP

    @classmethod
    def covering(cls, *, start: datetime, sessions: Sequence[SessionInput], min_end: datetime | None = None) -> Horizon:
        """From the ISP containing `start` to the 15-minute ceiling of the last departure (or `min_end` if later)."""
        first = floor_to_isp(start)
        ends = [session.departure for session in sessions]
        if min_end is not None:
            ends.append(_as_utc(min_end, what="min_end"))
        if not ends:
            return cls(start=first, slots=0)
        last = ceil_to_isp(max(ends))
        return cls(start=first, slots=max(0, (last - first) // ISP))


@dataclass(frozen=True)
class DeviationBand:
    """Allowed deviation of the EV load from the uncontrolled baseline in one slot, kW (None = unbounded)."""

    min_kw: float | None
    max_kw: float | None


def availability(*, horizon: Horizon, sessions: Sequence[SessionInput]) -> np.ndarray:
    """(n_sessions, slots): the fraction of each slot the car is plugged in; partial first/last slots, 0 outside."""
    n, slots = len(sessions), horizon.slots
    if n == 0 or slots == 0:
        return np.zeros((n, slots))
    # Seconds from the horizon start; whole seconds are exact in float, so 17:07 gives exactly 8/15 of its slot.
    arrival_s = np.array([(s.arrival - horizon.start).total_seconds() for s in sessions])
    departure_s = np.array([(s.departure - horizon.start).total_seconds() for s in sessions])
    edges_s = np.arange(slots + 1, dtype=float) * ISP_SECONDS
    overlap_s = np.minimum(departure_s[:, None], edges_s[None, 1:]) - np.maximum(arrival_s[:, None], edges_s[None, :-1])
    return np.clip(overlap_s / ISP_SECONDS, 0.0, 1.0)


def _avail_for(horizon: Horizon, sessions: Sequence[SessionInput], avail: np.ndarray | None) -> np.ndarray:
    if avail is None:
        return availability(horizon=horizon, sessions=sessions)
    avail = np.asarray(avail, dtype=float)
    if avail.shape != (len(sessions), horizon.slots):
        raise ValueError(f"avail has shape {avail.shape}, expected {(len(sessions), horizon.slots)}")
    return avail


def _slot_cap_kw(sessions: Sequence[SessionInput], avail: np.ndarray) -> np.ndarray:
    """(n, slots) highest average power per slot: max power x plugged-in fraction (0 for a car whose charger cannot
    reach its minimum current)."""
    max_power_kw = np.array(
        [s.max_power_kw if s.max_power_kw >= s.min_power_kw else 0.0 for s in sessions], dtype=float
    )
    return max_power_kw[:, None] * avail


def point_sessions(
    *, horizon: Horizon, sessions: Sequence[SessionInput], avail: np.ndarray | None = None
) -> PointSessions:
    """The array form of `sessions` that the point LP and the strategies work on."""
    avail = _avail_for(horizon, sessions, avail)
    dl_session: list[int] = []
    dl_slots: list[int] = []
    dl_kwh: list[float] = []
    dl_labels: list[str] = []
    for index, session in enumerate(sessions):
        for instant, kwh in session.min_energy_by:
            # Energy counts towards a deadline only from slots that end by it.
            dl_session.append(index)
            dl_slots.append(int(np.clip((instant - horizon.start) // ISP, 0, horizon.slots)))
            dl_kwh.append(kwh)
            dl_labels.append(instant.isoformat())
    return PointSessions(
        avail=avail,
        max_kw=np.array([s.max_power_kw for s in sessions], dtype=float),
        min_kw=np.array([s.min_power_kw for s in sessions], dtype=float),
        discharge_kw=np.array([s.max_discharge_kw for s in sessions], dtype=float),
        energy_kwh=np.array([s.energy_kwh for s in sessions], dtype=float),
        flexible=np.array([s.flexible for s in sessions], dtype=bool),
        deadline_session=np.array(dl_session, dtype=np.int64),
        deadline_slots=np.array(dl_slots, dtype=np.int64),
        deadline_kwh=np.array(dl_kwh, dtype=float),
        deadline_labels=tuple(dl_labels),
    )


def deliverable_energy_kwh(
    *, horizon: Horizon, sessions: Sequence[SessionInput], avail: np.ndarray | None = None
) -> np.ndarray:
    """Per session: the requested energy, capped at what max power can deliver while plugged in inside the horizon."""
    avail = _avail_for(horizon, sessions, avail)
    energy_kwh = np.array([s.energy_kwh for s in sessions], dtype=float)
    return np.minimum(energy_kwh, _slot_cap_kw(sessions, avail).sum(axis=1) * ISP_HOURS)


def uncontrolled_kw(
    *, horizon: Horizon, sessions: Sequence[SessionInput], avail: np.ndarray | None = None
) -> np.ndarray:
    """(n_sessions, slots) average kW when every car charges at full power from arrival until its deliverable energy
    is in (the last charging slot partly filled). Summed over sessions this is the EV part of the D-prognosis."""
    avail = _avail_for(horizon, sessions, avail)
    deliverable = deliverable_energy_kwh(horizon=horizon, sessions=sessions, avail=avail)
    return point.uncontrolled_from(_slot_cap_kw(sessions, avail), deliverable)


@dataclass(frozen=True)
class OfferResult:
    reduction_kw: dict[int, float]  # requested slot -> reduction below the uncontrolled baseline (>= 0)
    baseline_kw: np.ndarray  # (slots,) summed uncontrolled EV load
    schedule_kw: np.ndarray  # (n_sessions, slots) the schedule that achieves the reduction
    energy_shift_kwh: float  # sum of reduction x ISP_HOURS over the requested slots
    status: str  # solver status text, "Optimal" when solved
    solve_s: float  # wall-clock seconds to build and solve the LP


@dataclass(frozen=True)
class DispatchResult:
    schedule_kw: np.ndarray  # (n_sessions, slots) average kW per slot (negative: V2G discharge)
    shortfall_kwh: np.ndarray  # per session: requested energy the schedule does not deliver (0 when feasible)
    deficiency_kw: dict[int, float]  # ordered slot -> reduction not achieved (0 when met)
    peak_kw: float  # max over slots of base load + EV load
    status: str
    solve_s: float  # wall-clock seconds to build and solve the LP and repair the schedule
    # Per session: why it is short (e.g. "not enough time at max power: ...") or how the min-current repair had to
    # give way; '' when nothing is wrong.
    shortfall_reason: tuple[str, ...] = ()
    over_limit_kw: float = 0.0  # worst slot above capacity_kw (0 when kept or no limit)
    min_over_limit_kw: float = 0.0  # the LP relaxation's worst excess (least total excess): 0 iff the limit can hold
    lp_peak_kw: float = 0.0  # the lowest peak any schedule of these sessions can have (LP relaxation)


@dataclass
class _Charging:
    """The p[s, t] columns of either LP plus the numpy views needed to write rows and read the solution back."""

    avail: np.ndarray  # (n, slots)
    cap_kw: np.ndarray  # (n, slots) upper bound of p
    deliverable_kwh: np.ndarray  # (n,)
    uncontrolled_kw: np.ndarray  # (n, slots)
    baseline_kw: np.ndarray  # (slots,)
    fixed_kw: np.ndarray  # (slots,) uncontrolled load of the sessions that are not flexible
    flexible: np.ndarray  # (n,) bool
    session_index: np.ndarray  # (n_columns,) session of each column
    slot_index: np.ndarray  # (n_columns,) slot of each column
    columns: list[pulp.LpVariable]
    by_session: list[list[pulp.LpVariable]]
    by_slot: list[list[pulp.LpVariable]]

    def energy_rows(self) -> list[tuple[int, list[pulp.LpVariable], float]]:
        """(session, its columns, deliverable energy in kW-slots) for every session that has columns."""
        # Rows are written in kW-slots (kWh / ISP_HOURS) so every matrix coefficient is 1, which HiGHS likes best.
        target = np.minimum(self.deliverable_kwh / ISP_HOURS, self.cap_kw.sum(axis=1))
        return [(s, cols, float(target[s])) for s, cols in enumerate(self.by_session) if cols]

    def schedule(self) -> np.ndarray:
        values = np.fromiter((v.varValue or 0.0 for v in self.columns), dtype=float, count=len(self.columns))
        bounds = self.cap_kw[self.session_index, self.slot_index]
        schedule = np.where(self.flexible[:, None], 0.0, self.uncontrolled_kw)
        schedule[self.session_index, self.slot_index] = np.clip(values, 0.0, bounds)
        return schedule

    def early_terms(self, weight: float) -> list[tuple[pulp.LpVariable, float]]:
        """Cost weight x (1 + t / slots) per kW-slot: rises with time, so earlier charging wins ties."""
        # The constant 1 only adds weight x total energy, which the energy rows fix anyway; it keeps every cost at or
        # above `weight`, where HiGHS would otherwise warn about "excessively small costs" in the first slots.
        slots = max(self.cap_kw.shape[1], 1)
        coefs = weight * (1.0 + self.slot_index / slots)
        return list(zip(self.columns, coefs.tolist(), strict=True))


def _charging(prob: pulp.LpProblem, horizon: Horizon, sessions: Sequence[SessionInput]) -> _Charging:
    avail = availability(horizon=horizon, sessions=sessions)
    cap_kw = _slot_cap_kw(sessions, avail)
    deliverable = deliverable_energy_kwh(horizon=horizon, sessions=sessions, avail=avail)
    per_session = uncontrolled_kw(horizon=horizon, sessions=sessions, avail=avail)
    flexible = np.array([s.flexible for s in sessions], dtype=bool)
    # Columns only where a flexible car is plugged in and wants energy at all: a car plugged in for 12 of 36 hours
    # costs a third of the columns, and the LP never has to prove that absent cars draw nothing.
    mask = (cap_kw > 0) & (deliverable[:, None] > 0) & flexible[:, None]
    session_index, slot_index = np.nonzero(mask)
    columns = [
        prob.add_variable(f"p_{s}_{t}", lowBound=0.0, upBound=ub)
        for s, t, ub in zip(session_index.tolist(), slot_index.tolist(), cap_kw[mask].tolist(), strict=True)
    ]
    by_session: list[list[pulp.LpVariable]] = [[] for _ in sessions]
    by_slot: list[list[pulp.LpVariable]] = [[] for _ in range(horizon.slots)]
    for s, t, column in zip(session_index.tolist(), slot_index.tolist(), columns, strict=True):
        by_session[s].append(column)
        by_slot[t].append(column)
    return _Charging(
        avail=avail,
        cap_kw=cap_kw,
        deliverable_kwh=deliverable,
        uncontrolled_kw=per_session,
        baseline_kw=per_session.sum(axis=0),
        fixed_kw=per_session[~flexible].sum(axis=0) if len(sessions) else np.zeros(horizon.slots),
        flexible=flexible,
        session_index=session_index,
        slot_index=slot_index,
        columns=columns,
        by_session=by_session,
        by_slot=by_slot,
    )


def _add_row(
    prob: pulp.LpProblem,
    name: str,
    columns: Sequence[pulp.LpVariable],
    sense: int,
    rhs: float,
    *extra: tuple[pulp.LpVariable, float],
) -> None:
    """sum(columns) + sum(coef x extra column) <sense> rhs, built from a term list in one pass (no operator chains)."""
    expression = pulp.LpAffineExpression([(v, 1.0) for v in columns] + list(extra))
    prob.addConstraint(pulp.LpConstraint(expression, sense, name, float(rhs)))


def _add_soft_bands(
    prob: pulp.LpProblem,
    charging: _Charging,
    bands: Mapping[int, DeviationBand] | None,
    penalty: float,
) -> list[tuple[pulp.LpVariable, float]]:
    """min_kw <= P_t - U_t <= max_kw with non-negative violation columns; returns their (column, penalty) terms."""
    terms: list[tuple[pulp.LpVariable, float]] = []
    for t, band in (bands or {}).items():
        if not 0 <= t < len(charging.by_slot) or not charging.by_slot[t]:
            continue  # nothing controllable in this slot
        baseline = float(charging.baseline_kw[t] - charging.fixed_kw[t])  # the flexible part of the baseline
        if band.min_kw is not None:
            under = prob.add_variable(f"band_under_{t}", lowBound=0.0)
            _add_row(
                prob, f"band_min_{t}", charging.by_slot[t], pulp.LpConstraintGE, baseline + band.min_kw, (under, 1.0)
            )
            terms.append((under, penalty))
        if band.max_kw is not None:
            over = prob.add_variable(f"band_over_{t}", lowBound=0.0)
            _add_row(
                prob, f"band_max_{t}", charging.by_slot[t], pulp.LpConstraintLE, baseline + band.max_kw, (over, -1.0)
            )
            terms.append((over, penalty))
    return terms


def _add_deadline_rows(
    prob: pulp.LpProblem, horizon: Horizon, sessions: Sequence[SessionInput], charging: _Charging
) -> None:
    """Driver preferences: at least X kWh by T, capped at what full power from arrival reaches by T (so the LP
    stays feasible; the shortfall is reported by dispatch)."""
    arrays = point_sessions(horizon=horizon, sessions=sessions, avail=charging.avail)
    required_kwh = point.physics(arrays).deadline_kwh
    for i, (s, k) in enumerate(zip(arrays.deadline_session.tolist(), arrays.deadline_slots.tolist(), strict=True)):
        if required_kwh[i] <= 0 or not charging.flexible[s]:
            continue
        cols = [v for v, t in zip(charging.by_session[s], charging.slot_index[charging.session_index == s], strict=True)
                if t < k]
        _add_row(prob, f"deadline_{i}", cols, pulp.LpConstraintGE, float(required_kwh[i] / ISP_HOURS))


def _solve(prob: pulp.LpProblem, **highs_options: str) -> str:
    prob.solve(pulp.HiGHS(msg=False, **highs_options))
    return pulp.LpStatus[prob.status]


def offer_optimise(
    *,
    horizon: Horizon,
    sessions: Sequence[SessionInput],
    requested_max_reduction_kw: Mapping[int, float],
    bands: Mapping[int, DeviationBand] | None = None,
) -> OfferResult:
    """The largest reduction below the uncontrolled baseline the portfolio can deliver in each requested slot while
    still delivering every session's deliverable energy by its departure.

    LP (maximised):
      - p[s, t] in [0, max_power_kw x plugged-in fraction], only where the car is plugged in;
      - hard: sum_t p[s, t] x ISP_HOURS == deliverable energy of s (drivers are never traded for flexibility);
      - r_t in [0, min(cap_t, U_t)] and r_t <= U_t - P_t for each requested slot with cap_t > 0, where U_t is the
        summed uncontrolled load and P_t = sum_s p[s, t];
      - soft: band.min_kw <= P_t - U_t <= band.max_kw for slots in `bands` (e.g. the DSO's available ISPs, to keep the
        rebound in check), violations penalised at 100 per kW, far above the reward of reduction, so the LP is never
        infeasible and bands bind whenever they can;
      - objective: sum r_t, plus a concave even-spread bonus worth at most 1 % of it (see _EVEN_BONUS), plus a tiny
        tie-breaker towards earlier charging.

    `reduction_kw` has a key for every requested slot with cap > 0 (slots outside the horizon get 0.0); slots with
    cap <= 0 are ignored. If the solver does not report "Optimal", nothing is offered and the schedule is uncontrolled.
    """
    began = time.perf_counter()
    caps = {t: float(cap) for t, cap in requested_max_reduction_kw.items() if cap > 0}
    prob = pulp.LpProblem("ev_offer", pulp.LpMaximize)
    charging = _charging(prob, horizon, sessions)
    baseline = charging.baseline_kw

    def result(reduction: dict[int, float], schedule: np.ndarray, status: str) -> OfferResult:
        full = {t: reduction.get(t, 0.0) for t in caps}
        return OfferResult(
            reduction_kw=full,
            baseline_kw=baseline,
            schedule_kw=schedule,
            energy_shift_kwh=sum(full.values()) * ISP_HOURS,
            status=status,
            solve_s=time.perf_counter() - began,
        )

    # A slot can lose at most its whole baseline, so the reduction of slot t is bounded by min(cap_t, U_t).
    flexible_baseline = baseline - charging.fixed_kw
    ceilings = {t: min(cap, float(flexible_baseline[t])) for t, cap in caps.items() if 0 <= t < horizon.slots}
    ceilings = {t: c for t, c in ceilings.items() if c > 0 and charging.by_slot[t]}
    if not charging.columns:
        # No session can or needs to charge inside the horizon: nothing to shift, no solver needed.
        return result({}, charging.uncontrolled_kw.copy(), _OPTIMAL)

    for s, cols, target in charging.energy_rows():
        _add_row(prob, f"energy_{s}", cols, pulp.LpConstraintEQ, target)
    _add_deadline_rows(prob, horizon, sessions, charging)

    objective: list[tuple[pulp.LpVariable, float]] = []
    tiers_by_slot: dict[int, list[pulp.LpVariable]] = {}
    for t, ceiling in ceilings.items():
        tiers = [
            prob.add_variable(f"r_{t}_{k}", lowBound=0.0, upBound=ceiling / _EVEN_TIERS) for k in range(_EVEN_TIERS)
        ]
        tiers_by_slot[t] = tiers
        # Falling bonus per tier: a maximising LP fills the higher-paid lower tiers of every slot first.
        objective += [(r, 1.0 + _EVEN_BONUS * (_EVEN_TIERS - k) / _EVEN_TIERS) for k, r in enumerate(tiers)]
        _add_row(prob, f"reduce_{t}", charging.by_slot[t], pulp.LpConstraintLE, flexible_baseline[t],
                 *[(r, 1.0) for r in tiers])

    objective += [(v, -penalty) for v, penalty in _add_soft_bands(prob, charging, bands, _OFFER_BAND_PENALTY)]
    objective += [(v, -coef) for v, coef in charging.early_terms(_OFFER_EARLY_WEIGHT)]
    prob.setObjective(pulp.LpAffineExpression(objective))

    # Interior point (with crossover, so the schedule is still a vertex): on the offer LP, whose bands and tie-breaker
    # make dual simplex take ~15 iterations per session, it measured 3x faster at 1,000 sessions x 150 slots
    # (0.7 s vs 2.4 s) and no slower at 150 sessions. Dispatch is the other way round, so it keeps the default.
    status = _solve(prob, solver="ipm")
    if status != _OPTIMAL:
        return result({}, charging.uncontrolled_kw.copy(), status)

    schedule = charging.schedule()
    load = schedule.sum(axis=0)
    reduction: dict[int, float] = {}
    for t, tiers in tiers_by_slot.items():
        value = sum(r.varValue or 0.0 for r in tiers)
        # Never report more than the schedule really achieves (guards against solver tolerance).
        value = min(value, ceilings[t], float(baseline[t] - load[t]))
        reduction[t] = value if value > _ZERO_KW else 0.0
    return result(reduction, schedule, status)


def dispatch_optimise(
    *,
    horizon: Horizon,
    sessions: Sequence[SessionInput],
    ordered_reduction_kw: Mapping[int, float],
    base_load_kw: np.ndarray | None = None,
    bands: Mapping[int, DeviationBand] | None = None,
    capacity_kw: float | np.ndarray | None = None,
) -> DispatchResult:
    """Charging schedule that delivers an accepted order, keeps the point's capacity limit in every slot of the
    horizon and has the lowest peak: the highspy point LP (`point.schedule_point`, ranking drivers > capacity >
    order > DSO band > peak) followed by the min-current repair.

    `shortfall_kwh` compares with the energy the driver requested, so a session that cannot physically get its
    energy in time shows up, with `shortfall_reason`. `deficiency_kw` has a key for every ordered slot
    (out-of-horizon slots report the whole order as not achieved). `capacity_kw` is one limit for the whole horizon
    or one per slot. Physics never raises: what cannot be met is reported.
    """
    began = time.perf_counter()
    if base_load_kw is None:
        base = np.zeros(horizon.slots)
    else:
        base = np.asarray(base_load_kw, dtype=float)
        if base.shape != (horizon.slots,):
            raise ValueError(f"base_load_kw has shape {base.shape}, expected {(horizon.slots,)}")
    limit: np.ndarray | None = None
    if capacity_kw is not None:
        limit = np.broadcast_to(np.asarray(capacity_kw, dtype=float), (horizon.slots,)).copy()
    orders = {t: float(kw) for t, kw in ordered_reduction_kw.items()}
    ordered = np.zeros(horizon.slots)
    for t, kw in orders.items():
        if 0 <= t < horizon.slots and kw > 0:
            ordered[t] = kw
    band_min = np.full(horizon.slots, np.nan)
    band_max = np.full(horizon.slots, np.nan)
    for t, band in (bands or {}).items():
        if 0 <= t < horizon.slots:
            band_min[t] = np.nan if band.min_kw is None else band.min_kw
            band_max[t] = np.nan if band.max_kw is None else band.max_kw
    result = schedule_point(
        point_sessions(horizon=horizon, sessions=sessions),
        PointRequest(base_kw=base, limit_kw=limit, ordered_reduction_kw=ordered, band_min_kw=band_min,
                     band_max_kw=band_max),
    )
    load = result.schedule_kw.sum(axis=0)
    deficiency: dict[int, float] = {}
    for t, kw in orders.items():
        missed = kw - float(result.baseline_kw[t] - load[t]) if 0 <= t < horizon.slots else kw
        deficiency[t] = missed if missed > _ZERO_KW else 0.0
    return DispatchResult(
        schedule_kw=result.schedule_kw,
        shortfall_kwh=result.shortfall_kwh,
        deficiency_kw=deficiency,
        peak_kw=result.peak_kw,
        status=result.status,
        solve_s=time.perf_counter() - began,
        shortfall_reason=result.reasons,
        over_limit_kw=result.over_limit_kw,
        min_over_limit_kw=result.lp_over_limit_kw,
        lp_peak_kw=result.lp_peak_kw,
    )


_PROFILE_NOISE_KW = 0.005  # 5 W


def profile_limits_w(
    *, schedule_kw_row: np.ndarray, avail_row: np.ndarray, max_power_kw: float | None = None
) -> list[int]:
    """Instantaneous power limit (integer W) per slot for an OCPI charging profile of one session.

    The plan is an average over the whole slot, but the car only draws while plugged in, so the limit is the planned
    average divided by the plugged-in fraction: a car plugged in for 8 of 15 minutes gets the energy planned for that
    slot. 0 where the car is absent or nothing is planned. Rounded up to the next W (so the energy fits), then clipped
    at `max_power_kw` (floored to a W) when given; the plan itself never exceeds max power x plugged-in fraction.
    """
    plan_kw = np.asarray(schedule_kw_row, dtype=float)
    avail = np.asarray(avail_row, dtype=float)
    if plan_kw.shape != avail.shape:
        raise ValueError(f"schedule row {plan_kw.shape} and availability row {avail.shape} differ in shape")
    # Plans below a few W are solver noise, not charging: no car draws them, and they only add profile periods.
    active = (avail > 0) & (plan_kw > _PROFILE_NOISE_KW)
    limit_w = np.zeros_like(plan_kw)
    limit_w[active] = plan_kw[active] / avail[active] * 1000.0
    # The small allowance stops float noise (3700.0000000004 W) from adding a whole W.
    limit_w = np.ceil(limit_w - 1e-6)
    if max_power_kw is not None:
        limit_w = np.minimum(limit_w, math.floor(max_power_kw * 1000.0 + 1e-6))
    return [int(w) for w in np.maximum(limit_w, 0.0)]
