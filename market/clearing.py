"""Clearing recommendation: the cheapest set of flex-offer options (and activation factors) that covers a DSO's need.

Pure module: plain dataclasses in, dataclasses out, no Django. The lead wires it to the models and the portal; the
algorithm is swappable by dotted path in settings (STYLE.md 3.8) through `ClearingAlgorithm`.

Domain (UFTP 3.1.0, UFTP-BRIEF 4.7/4.9): an offer has one or more mutually exclusive options, each with a price for
the whole option and a MinActivationFactor (maf). The DSO may order an option partially with an activation factor
`maf <= a <= 1`, which scales every ISP power *and* the price by `a`; maf 1.00 means all-or-nothing.

Formulation (`CheapestCoverMilp`), powers in kW inside the model (W / 1000) so coefficients stay near 1..1000:

    per candidate option o:  y_o in {0, 1} (chosen), a_o in [0, 1] (activation),  maf_o * y_o <= a_o <= y_o
                             (for maf_o = 1 the two coincide and a_o itself is the binary)
    per offer k:             sum_{o in k} y_o <= 1                          (options are mutually exclusive)
    per needed ISP t:        sum_o r_{o,t} * a_o + s_t >= need_t,  s_t >= 0  (s_t: shortfall)

    stage 1 ("cover"): S* = min sum_t s_t      (covered flex maximised; solved exactly, to within 0.5 W)
    stage 2 ("cost"):  min sum_o price_o * a_o  s.t.  sum_t s_t <= S* + 0.01 W

Only options that reduce something in a needed ISP get variables, so an option whose reductions all fall on ISPs
without need is never recommended (even at price 0: buying it could not help).

Solver: HiGHS through highspy, the model passed as numpy CSC arrays in one call. PuLP (the issue's suggestion)
builds the same full model in 0.04 s, but its HiGHS interface builds a fresh Highs per solve and takes no warm
start, both of which the core scheme below relies on; the full model solved through PuLP took 2.6-4.7 s.

Stage 1 is usually settled without a solve: every offer at its "best" option at activation 1 gives an upper bound
on the shortfall, `sum_t max(0, need_t - sum_k max_{o in k} r_{o,t})` a lower bound; when they meet (always when no
offer has more than one option) S* is proven. Otherwise HiGHS solves the stage-1 MILP.

Stage 2 solves a *core* of the options exactly instead of all of them, which is what makes 1,000 offers fast
(measured: the full MILP spends 2.6-8.5 s in root cuts and sub-MIPs over ~1,800 binaries, most of which HiGHS
itself later finds useless). From the LP relaxation's coverage duals u_t >= 0 we get the Lagrangian bound

    L = sum_t u_t need_t - max_t(u_t) * B + sum_k min(0, min_{o in k} d_o),   d_o = price_o - sum_t u_t r_{o,t}

(B: the shortfall budget) and, per option, `L + forced_o`: a lower bound on the cost of *any* solution that buys
o (forced_o >= 0 is the extra cost of making o its offer's choice at activation >= maf_o). The first core holds the
options with forced_o <= 0.25 % of L plus those of a known feasible cover, and is solved warm-started. Its dual
bound combined with `L + min forced_o` over the excluded options bounds the full problem. If that combined gap is
above the target, the core grows to every option with `L + forced_o <= incumbent` (the others cannot be part of a
cheaper solution) and is solved once more, warm-started, after which the core's own gap holds for the full problem.
The reported `mip_gap` is this combined gap: HiGHS's gap for the solver's problem (continuous activations).

Rounding: activation factors go to 2 decimals *after* solving, each rounded UP to the next 0.01 (capped at 1), so
coverage only grows and a factor never drops below maf (maf has 2 decimals). Costs are recomputed with the rounded
factors, so a recommendation can cost up to 0.01 * price per partially activated option more than the solver's
optimum, which `mip_gap` does not include. A last pass takes back 0.01 steps, priciest options first, wherever
every needed ISP keeps the solver's coverage; on the benchmark this halves that rounding cost (to ~0.1 %).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

import highspy
import numpy as np
import numpy.typing as npt

CENT = Decimal("0.01")
MAF_MIN = Decimal("0.01")
MAF_MAX = Decimal("1.00")

# Stage-2 shortfall budget above S*, in kW: 0.01 W. A 1 W slack would be allowed, but the cost stage is free to
# spend it (activating up to 1 W less), and where the round-up to 0.01 lands exactly on the grid it does not win it
# back, leaving a 1 W "short" ISP in the result. 0.01 W vanishes in the W rounding and is still 100x HiGHS's 1e-7
# primal feasibility tolerance.
SHORTFALL_TOLERANCE_KW = 1e-5
# Stage 1 stops once the shortfall is proven to within 0.5 W (the model is in kW).
COVER_ABS_GAP_KW = 5e-4
# First core: options whose forced extra cost is within 0.25 % of the Lagrangian bound. Swept on the benchmark
# (0.25/0.5/1/2 %): with 1,000 offers the integrality gap is 1-1.5 %, so a small first core only supplies a good
# incumbent for the exact second core; at 5,000 offers the gap is < 0.1 % and a 2 % core (1,250 options) took 5 s
# where the 0.25 % one (210 options) certified the target alone in 0.5 s.
CORE_FIRST_FRACTION = 0.0025
CORE_FIRST_MIN_EUR = 0.01
# A factor a is rounded as ceil(a * 100 - 1e-5) / 100: solver noise of 1e-7 above a grid point must not cost an
# extra cent step, and what it gives up (<= 1e-7 * r, i.e. < 0.1 W at 1 MW) is far below the W resolution.
ROUND_NOISE = 1e-5

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class OptionCandidate:
    """One offer option as the DSO could order it."""

    offer_id: str  # caller's id of the offer
    option_reference: str
    price_eur: Decimal  # for the whole option at activation 1.00
    min_activation_factor: Decimal  # 0.01..1.00; 1.00 = all-or-nothing
    reduction_w: Mapping[int, int]  # ISP index -> reduction offered in W (>= 0; the caller flips negative powers)


@dataclass(frozen=True)
class ClearingProblem:
    """What the DSO needs per ISP and the options it may buy it from."""

    need_w: Mapping[int, int]  # ISP -> reduction needed at least (>= 0); only ISPs with need > 0 matter
    options: Sequence[OptionCandidate]  # options of the same offer_id are mutually exclusive (at most one chosen)
    # Most reduction worth buying per ISP. Informational and ignored by CheapestCoverMilp: minimising cost already
    # avoids over-buying, except where indivisible (maf) options force it.
    max_useful_w: Mapping[int, int] | None = None


@dataclass(frozen=True)
class ChosenOption:
    """An option to order, with the activation factor to order it at."""

    offer_id: str
    option_reference: str
    activation_factor: Decimal  # 2 decimals, within [maf, 1]
    cost_eur: Decimal  # price * factor, rounded to cents


@dataclass(frozen=True)
class ClearingResult:
    """The recommendation: what to order, what it covers, what stays short, and how sure the solver is."""

    chosen: list[ChosenOption]  # sorted by (offer_id, option_reference)
    covered_w: dict[int, int]  # ISP -> reduction bought (sum of factor * reduction, rounded to W)
    short_w: dict[int, int]  # ISP -> need not covered (> 0 only); empty when fully covered
    total_cost_eur: Decimal
    status: str  # "optimal", "feasible" (time limit hit with a solution), "infeasible", "empty"
    mip_gap: float  # relative gap of the cost stage for the solver's problem (0.0 when proven)
    seconds: float


class ClearingAlgorithm:
    """Computes a clearing recommendation for one problem."""

    def compute(self, problem: ClearingProblem) -> ClearingResult:
        raise NotImplementedError(".compute() must be overridden")


def clear(*, problem: ClearingProblem, algorithm: ClearingAlgorithm | None = None) -> ClearingResult:
    """Recommend the cheapest cover of `problem.need_w`; `CheapestCoverMilp()` unless another algorithm is given."""
    return (algorithm or CheapestCoverMilp()).compute(problem)


# ---------------------------------------------------------------------------------------------------------------
# Instance in array form


@dataclass(frozen=True)
class _Instance:
    """Candidate options (sorted by offer, option) and needed ISPs as numpy arrays; powers in kW."""

    options: list[OptionCandidate]
    isps: list[int]  # needed ISPs, ascending; row t of the model is isps[t]
    need_kw: FloatArray  # (T,)
    price: FloatArray  # (n,)
    maf: FloatArray  # (n,)
    group: IntArray  # (n,) offer number 0..n_groups-1
    n_groups: int
    entry_option: IntArray  # (nnz,) reduction entries on needed ISPs, r > 0, grouped by option (ascending)
    entry_isp: IntArray  # (nnz,) row 0..T-1
    entry_kw: FloatArray  # (nnz,)
    entry_start: IntArray  # (n + 1,) option i's entries are entry_start[i]:entry_start[i + 1]

    @property
    def n(self) -> int:
        return len(self.options)

    def coverage_kw(self, activation: FloatArray) -> FloatArray:
        weighted = np.bincount(self.entry_isp, weights=activation[self.entry_option] * self.entry_kw,
                               minlength=len(self.isps))
        return weighted.astype(np.float64, copy=False)  # weighted bincount is float64 already; this tells mypy

    def shortfall_kw(self, activation: FloatArray) -> FloatArray:
        return np.maximum(self.need_kw - self.coverage_kw(activation), 0.0)

    def cost(self, activation: FloatArray) -> float:
        return float(self.price @ activation)


def _validate(problem: ClearingProblem) -> None:
    seen: set[tuple[str, str]] = set()
    for option in problem.options:
        key = (option.offer_id, option.option_reference)
        if key in seen:
            raise ValueError(f"Option {key} appears twice.")
        seen.add(key)
        maf = option.min_activation_factor
        if not (MAF_MIN <= maf <= MAF_MAX) or maf != maf.quantize(CENT):
            # Rounding factors up to 0.01 keeps them >= maf only when maf itself sits on the 0.01 grid.
            raise ValueError(f"Option {key}: min_activation_factor {maf} is not one of 0.01..1.00.")
        if any(value < 0 for value in option.reduction_w.values()):
            raise ValueError(f"Option {key}: reductions must be >= 0 W (flip the sign of offer powers first).")


def _instance(problem: ClearingProblem) -> _Instance:
    isps = sorted(isp for isp, need in problem.need_w.items() if need > 0)
    row_of = {isp: row for row, isp in enumerate(isps)}
    # Sorting makes the model, and so the answer, independent of the order the caller lists options in.
    ordered = sorted(problem.options, key=lambda o: (o.offer_id, o.option_reference))
    options: list[OptionCandidate] = []
    entries: list[tuple[int, int, float]] = []
    for option in ordered:
        useful = [(row_of[isp], watts) for isp, watts in option.reduction_w.items() if isp in row_of and watts > 0]
        if not useful:
            continue
        index = len(options)
        options.append(option)
        entries.extend((index, row, watts / 1000.0) for row, watts in useful)
    group_of: dict[str, int] = {}
    group = np.array([group_of.setdefault(o.offer_id, len(group_of)) for o in options], dtype=np.int64)
    entry_array = np.array(entries, dtype=np.float64).reshape(-1, 3)
    return _Instance(
        options=options,
        isps=isps,
        need_kw=np.array([problem.need_w[isp] / 1000.0 for isp in isps], dtype=np.float64),
        price=np.array([float(o.price_eur) for o in options], dtype=np.float64),
        maf=np.array([float(o.min_activation_factor) for o in options], dtype=np.float64),
        group=group,
        n_groups=len(group_of),
        entry_option=entry_array[:, 0].astype(np.int64),
        entry_isp=entry_array[:, 1].astype(np.int64),
        entry_kw=entry_array[:, 2].copy(),
        entry_start=np.searchsorted(entry_array[:, 0], np.arange(len(options) + 1)).astype(np.int64),
    )


def _greedy_cover(inst: _Instance) -> FloatArray:
    """Every offer at the option covering the most (capped) need, fully activated: a feasible stage-1 start."""
    useful = np.bincount(inst.entry_option, weights=np.minimum(inst.entry_kw, inst.need_kw[inst.entry_isp]),
                         minlength=inst.n)
    activation = np.zeros(inst.n)
    best: dict[int, int] = {}
    for index in range(inst.n):
        current = best.get(int(inst.group[index]))
        if current is None or useful[index] > useful[current]:
            best[int(inst.group[index])] = index
    activation[list(best.values())] = 1.0
    return activation


def _prune(inst: _Instance, activation: FloatArray, budget_kw: float) -> FloatArray:
    """Drop options from a cover, priciest per useful kWh first, while the shortfall stays within budget.

    The stage-1 cover activates one option of *every* offer; as the stage-2 warm start and core seed it would drag
    ~1,000 options into the core. The pruned cover is small and still feasible."""
    activation = activation.copy()
    useful = np.bincount(inst.entry_option, weights=np.minimum(inst.entry_kw, inst.need_kw[inst.entry_isp]),
                         minlength=inst.n)
    chosen = np.flatnonzero(activation > 0)
    per_kw = inst.price[chosen] / np.maximum(useful[chosen], 1e-12)
    coverage = inst.coverage_kw(activation)
    for index in chosen[np.argsort(-per_kw, kind="stable")]:
        entries = slice(inst.entry_start[index], inst.entry_start[index + 1])
        trial = coverage.copy()
        np.subtract.at(trial, inst.entry_isp[entries], activation[index] * inst.entry_kw[entries])
        if np.maximum(inst.need_kw - trial, 0.0).sum() <= budget_kw and inst.price[index] >= 0:
            coverage = trial
            activation[index] = 0.0
    return activation


def _shortfall_lower_bound_kw(inst: _Instance) -> float:
    """sum_t max(0, need_t - sum_k max_{o in k} r_{o,t}): no choice of one option per offer can cover more."""
    best = np.zeros((inst.n_groups, len(inst.isps)))
    np.maximum.at(best, (inst.group[inst.entry_option], inst.entry_isp), inst.entry_kw)
    return float(np.maximum(inst.need_kw - best.sum(axis=0), 0.0).sum())


# ---------------------------------------------------------------------------------------------------------------
# Model building (highspy arrays) and solving


@dataclass
class _Model:
    highs: highspy.Highs
    options: IntArray  # candidate index of each a column (a columns are 0..k-1)
    y_column: IntArray  # (k,) y column of each kept option, or -1 where maf = 1 (a is the binary)
    s_start: int  # s_t columns are s_start + t


@dataclass
class _Run:
    status: Literal["optimal", "feasible", "infeasible"]
    activation: FloatArray | None  # (n,) over all candidates, None without a solution
    objective: float
    bound: float


def _build(inst: _Instance, keep: npt.NDArray[np.bool_], *, stage: Literal["cover", "cost"],
           budget_kw: float = 0.0) -> _Model:
    """Pass the stage's model for the kept options to a new Highs as one CSC matrix (one call, no per-variable
    Python objects: ANCHORS 5 measured per-object builders as the main cost at scale)."""
    inf = highspy.kHighsInf
    n_rows_cover = len(inst.isps)
    kept = np.flatnonzero(keep)
    k = len(kept)
    column_of = np.full(inst.n, -1, dtype=np.int64)
    column_of[kept] = np.arange(k)
    partial = kept[inst.maf[kept] < 1.0]
    m = len(partial)
    y_column = np.full(k, -1, dtype=np.int64)
    y_column[column_of[partial]] = k + np.arange(m)
    s_start = k + m
    n_cols = s_start + n_rows_cover

    cols: list[IntArray] = []
    rows: list[IntArray] = []
    vals: list[FloatArray] = []

    def add(c: IntArray, r: IntArray, v: FloatArray) -> None:
        cols.append(c)
        rows.append(r)
        vals.append(v)

    # coverage rows 0..T-1: sum r a + s >= need
    in_core = keep[inst.entry_option]
    add(column_of[inst.entry_option[in_core]], inst.entry_isp[in_core], inst.entry_kw[in_core])
    add(s_start + np.arange(n_rows_cover), np.arange(n_rows_cover), np.ones(n_rows_cover))
    row_lower = [inst.need_kw]
    row_upper = [np.full(n_rows_cover, inf)]
    next_row = n_rows_cover

    # linking rows for partial options: a - y <= 0 and a - maf y >= 0
    if m:
        a_cols = column_of[partial]
        y_cols = y_column[a_cols]
        upper_rows = next_row + 2 * np.arange(m)
        lower_rows = upper_rows + 1
        add(a_cols, upper_rows, np.ones(m))
        add(y_cols, upper_rows, -np.ones(m))
        add(a_cols, lower_rows, np.ones(m))
        add(y_cols, lower_rows, -inst.maf[partial])
        row_lower.append(np.tile([-inf, 0.0], m))
        row_upper.append(np.tile([0.0, inf], m))
        next_row += 2 * m

    # one mutual-exclusion row per offer with two or more kept options: sum y <= 1
    groups = inst.group[kept]
    per_group = np.bincount(groups, minlength=inst.n_groups)
    shared = per_group[groups] >= 2
    if shared.any():
        mutex_groups = np.flatnonzero(per_group >= 2)
        row_of_group = np.full(inst.n_groups, -1, dtype=np.int64)
        row_of_group[mutex_groups] = next_row + np.arange(len(mutex_groups))
        a_cols = np.flatnonzero(shared)
        chosen_cols = np.where(y_column[a_cols] >= 0, y_column[a_cols], a_cols)
        add(chosen_cols, row_of_group[groups[shared]], np.ones(len(a_cols)))
        row_lower.append(np.full(len(mutex_groups), -inf))
        row_upper.append(np.ones(len(mutex_groups)))
        next_row += len(mutex_groups)

    if stage == "cost":
        add(s_start + np.arange(n_rows_cover), np.full(n_rows_cover, next_row), np.ones(n_rows_cover))
        row_lower.append(np.array([-inf]))
        row_upper.append(np.array([budget_kw]))
        next_row += 1

    col = np.concatenate(cols)
    row = np.concatenate(rows)
    val = np.concatenate(vals)
    order = np.lexsort((row, col))
    start = np.concatenate([[0], np.cumsum(np.bincount(col, minlength=n_cols))]).astype(np.int32)
    cost = np.zeros(n_cols)
    if stage == "cost":
        cost[:k] = inst.price[kept]
    else:
        cost[s_start:] = 1.0
    upper = np.ones(n_cols)
    upper[s_start:] = inf
    integrality = np.zeros(n_cols, dtype=np.int32)
    integrality[:k][inst.maf[kept] >= 1.0] = 1  # all-or-nothing: a is the binary
    integrality[k:s_start] = 1

    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    status = highs.passModel(
        n_cols, next_row, len(val), 1, 1, 0.0,
        cost, np.zeros(n_cols), upper,
        np.concatenate(row_lower), np.concatenate(row_upper),
        start, row[order].astype(np.int32), val[order], integrality,
    )
    if status != highspy.HighsStatus.kOk:
        raise RuntimeError(f"HiGHS rejected the clearing model: {status}")
    return _Model(highs=highs, options=kept, y_column=y_column, s_start=s_start)


def _set_start(model: _Model, inst: _Instance, activation: FloatArray) -> None:
    """Hand HiGHS a known feasible solution (a warm start): it then only searches for better ones."""
    k = len(model.options)
    values = np.zeros(model.s_start + len(inst.isps))
    values[:k] = activation[model.options]
    partial = model.y_column >= 0
    values[model.y_column[partial]] = (activation[model.options[partial]] > 0).astype(np.float64)
    values[model.s_start:] = inst.shortfall_kw(activation)
    solution = highspy.HighsSolution()
    solution.col_value = values.tolist()
    solution.value_valid = True
    model.highs.setSolution(solution)


def _run(model: _Model, inst: _Instance, *, options: Mapping[str, float | bool]) -> _Run:
    highs = model.highs
    for name, value in options.items():
        highs.setOptionValue(name, value)
    highs.run()
    status = highs.getModelStatus()
    info = highs.getInfo()
    statuses = highspy.HighsModelStatus
    if status == statuses.kInfeasible:
        return _Run(status="infeasible", activation=None, objective=math.inf, bound=-math.inf)
    if status not in (statuses.kOptimal, statuses.kTimeLimit, statuses.kInterrupt, statuses.kIterationLimit,
                      statuses.kSolutionLimit):
        raise RuntimeError(f"HiGHS could not solve the clearing model: {highs.modelStatusToString(status)}")
    if info.primal_solution_status != int(highspy.SolutionStatus.kSolutionStatusFeasible):
        return _Run(status="feasible", activation=None, objective=math.inf, bound=info.mip_dual_bound)
    values = np.asarray(highs.getSolution().col_value)
    activation = np.zeros(inst.n)
    activation[model.options] = np.clip(values[: len(model.options)], 0.0, 1.0)
    # a_o >= maf_o * y_o: a chosen option sits at >= maf (within tolerance); anything below half of maf is an unchosen
    # option's solver noise around 0.
    activation[activation < 0.5 * inst.maf] = 0.0
    return _Run(status="optimal" if status == statuses.kOptimal else "feasible", activation=activation,
                objective=info.objective_function_value, bound=info.mip_dual_bound)


def _relative_gap(upper: float, lower: float) -> float:
    """HiGHS's definition, (primal - dual) / |primal|, with 0 for a closed gap at a zero objective."""
    difference = upper - lower
    if difference <= 1e-6:  # HiGHS's default mip_abs_gap: closed for the solver too
        return 0.0
    return difference / abs(upper) if abs(upper) > 1e-9 else math.inf


# ---------------------------------------------------------------------------------------------------------------
# The default algorithm


class CheapestCoverMilp(ClearingAlgorithm):
    """Lexicographic MILP in HiGHS: maximise covered flex, then minimise cost (see the module docstring)."""

    # HiGHS options for the cost stage. Restarts re-run the whole root cut loop after each round of reduced-cost
    # fixing; on 5 saved benchmark cores (1,000 offers, ~280 options each) turning them off cut the 5 solves from
    # 20.0 s to 6.6 s. Turning off the heuristics as well (sub-MIPs took 60 % of one logged solve) looked better
    # there, but over 13 end-to-end cases (1,000-5,000 offers, all-or-nothing too) it was a wash within this VM's
    # noise and left the 5,000-offer core without incumbents, so they stay at the default. Buying nothing is always
    # feasible (shortfall variables), so this algorithm never reports "infeasible".
    COST_STAGE_OPTIONS: Mapping[str, float | bool] = {"mip_allow_restart": False}

    def __init__(self, *, mip_rel_gap: float = 0.001, time_limit_s: float = 30.0) -> None:
        self.mip_rel_gap = mip_rel_gap
        self.time_limit_s = time_limit_s

    def compute(self, problem: ClearingProblem) -> ClearingResult:
        started = time.perf_counter()
        _validate(problem)
        inst = _instance(problem)
        if not inst.isps:
            return _result(problem, inst, None, status="empty", gap=0.0, started=started)
        if inst.n == 0:
            # Nothing can reduce a needed ISP: buying nothing is optimal, and everything stays short.
            return _result(problem, inst, np.zeros(0), status="optimal", gap=0.0, started=started)
        deadline = started + self.time_limit_s

        incumbent, cover_status = self._cover_stage(inst, deadline)
        budget_kw = float(inst.shortfall_kw(incumbent).sum()) + SHORTFALL_TOLERANCE_KW
        incumbent = _prune(inst, incumbent, budget_kw)
        activation, status, gap = self._cost_stage(inst, incumbent, budget_kw, deadline)
        if cover_status == "feasible":
            status = "feasible"
        return _result(problem, inst, activation, status=status, gap=gap, started=started)

    def _remaining(self, deadline: float) -> float:
        return max(deadline - time.perf_counter(), 0.001)

    def _cover_stage(self, inst: _Instance, deadline: float) -> tuple[FloatArray, str]:
        """Stage 1: a feasible activation vector whose shortfall is S*, and whether S* is proven."""
        greedy = _greedy_cover(inst)
        if inst.shortfall_kw(greedy).sum() <= _shortfall_lower_bound_kw(inst) + COVER_ABS_GAP_KW:
            return greedy, "optimal"
        model = _build(inst, np.ones(inst.n, dtype=bool), stage="cover")
        _set_start(model, inst, greedy)
        run = _run(model, inst, options={"mip_rel_gap": 0.0, "mip_abs_gap": COVER_ABS_GAP_KW,
                                         "time_limit": self._remaining(deadline)})
        if run.activation is None or inst.shortfall_kw(run.activation).sum() > inst.shortfall_kw(greedy).sum():
            return greedy, "feasible"
        return run.activation, run.status

    def _cost_stage(self, inst: _Instance, start: FloatArray, budget_kw: float,
                    deadline: float) -> tuple[FloatArray, str, float]:
        """Stage 2 on a core of options (module docstring); returns activation, status and the combined gap."""
        everything = np.ones(inst.n, dtype=bool)
        forced, lagrangian = self._option_bounds(inst, budget_kw)
        if forced is None:
            keep = everything
        else:
            first = max(CORE_FIRST_FRACTION * abs(lagrangian), CORE_FIRST_MIN_EUR)
            keep = (forced <= first) | (start > 0)
        incumbent, best = start, inst.cost(start)
        status: str = "feasible"
        gap = math.inf
        while True:
            model = _build(inst, keep, stage="cost", budget_kw=budget_kw)
            _set_start(model, inst, incumbent)
            run = _run(model, inst, options={**self.COST_STAGE_OPTIONS, "mip_rel_gap": self.mip_rel_gap,
                                             "time_limit": self._remaining(deadline)})
            if run.activation is not None and inst.cost(run.activation) <= best + 1e-9:
                incumbent, best = run.activation, inst.cost(run.activation)
            excluded = ~keep
            bound = run.bound
            if forced is not None and excluded.any():
                bound = min(bound, lagrangian + float(forced[excluded].min()))
            gap = _relative_gap(best, bound)
            status = run.status if run.status != "infeasible" else "feasible"
            if status != "optimal" or gap <= self.mip_rel_gap + 1e-12 or not excluded.any() or forced is None:
                break
            # Grow the core to every option that could still be part of a solution cheaper than the incumbent.
            grown = keep | (forced <= best - lagrangian + 1e-9 * max(1.0, abs(best))) | (incumbent > 0)
            if time.perf_counter() >= deadline or np.array_equal(grown, keep):
                # Nothing to add: the excluded options cannot beat the incumbent, so the core's own gap holds.
                if np.array_equal(grown, keep):
                    gap = _relative_gap(best, run.bound)
                else:
                    status = "feasible"
                break
            keep = grown
        if status == "optimal" and gap > self.mip_rel_gap + 1e-12:
            status = "feasible"
        return incumbent, status, gap

    def _option_bounds(self, inst: _Instance, budget_kw: float) -> tuple[FloatArray | None, float]:
        """Lagrangian bound L from the LP relaxation's coverage duals, and forced_o per option (module docstring)."""
        model = _build(inst, np.ones(inst.n, dtype=bool), stage="cost", budget_kw=budget_kw)
        model.highs.setOptionValue("solve_relaxation", True)
        model.highs.run()
        solution = model.highs.getSolution()
        if model.highs.getModelStatus() != highspy.HighsModelStatus.kOptimal or not solution.dual_valid:
            return None, -math.inf
        u = np.maximum(np.asarray(solution.row_dual[: len(inst.isps)]), 0.0)
        reduced = inst.price - np.bincount(inst.entry_option, weights=u[inst.entry_isp] * inst.entry_kw,
                                           minlength=inst.n)
        base = np.zeros(inst.n_groups)
        np.minimum.at(base, inst.group, reduced)
        lagrangian = float(u @ inst.need_kw - u.max() * budget_kw + base.sum())
        own = np.where(reduced < 0, reduced, reduced * inst.maf)
        return own - base[inst.group], lagrangian


# ---------------------------------------------------------------------------------------------------------------
# Result


def _round_factors(inst: _Instance, activation: FloatArray) -> dict[int, int]:
    """Activation factors in hundredths per chosen option: each rounded UP to the grid, then lowered again where
    the rounding over-covers.

    Rounding up keeps every ISP's coverage at or above the solver's, so the solution stays feasible. It can add
    0.01 * price per partially activated option; on the benchmark that was ~0.2 %, more than the 0.1 % gap. The
    second pass therefore walks the options from the priciest down and takes back whole 0.01 steps while every
    needed ISP keeps at least the solver's coverage (exact integer arithmetic in W x 1/100)."""
    chosen = [int(index) for index in np.flatnonzero(activation > 0)]
    hundredths: dict[int, int] = {}
    for index in chosen:
        floor = round(inst.maf[index] * 100)  # maf is on the 0.01 grid (validated)
        hundredths[index] = min(max(math.ceil(activation[index] * 100 - ROUND_NOISE), floor), 100)
    reductions: dict[int, list[tuple[int, int]]] = {}
    for index in chosen:
        entries = slice(inst.entry_start[index], inst.entry_start[index + 1])
        reductions[index] = [(row, round(kw * 1000))
                             for row, kw in zip(inst.entry_isp[entries].tolist(), inst.entry_kw[entries].tolist(),
                                                strict=True)]
    # The solver's coverage, floored to 0.01 W (what that gives up vanishes when covered_w is rounded to W).
    target = [min(round(need * 100_000), math.floor(covered * 100_000))
              for need, covered in zip(inst.need_kw.tolist(), inst.coverage_kw(activation).tolist(), strict=True)]
    coverage = [0] * len(inst.isps)
    for index in chosen:
        for row, watts in reductions[index]:
            coverage[row] += hundredths[index] * watts
    for index in sorted(chosen, key=lambda i: (-inst.price[i], i)):
        if inst.price[index] <= 0:
            continue
        steps = hundredths[index] - round(inst.maf[index] * 100)
        for row, watts in reductions[index]:
            steps = min(steps, max(coverage[row] - target[row], 0) // watts)
        if steps > 0:
            hundredths[index] -= steps
            for row, watts in reductions[index]:
                coverage[row] -= steps * watts
    return hundredths


def _result(problem: ClearingProblem, inst: _Instance, activation: FloatArray | None, *, status: str, gap: float,
            started: float) -> ClearingResult:
    chosen: list[ChosenOption] = []
    covered: dict[int, Decimal] = {isp: Decimal(0) for isp in inst.isps}
    if activation is not None:
        for index, hundredths in _round_factors(inst, activation).items():
            option = inst.options[index]
            factor = (Decimal(hundredths) / 100).quantize(CENT)
            chosen.append(ChosenOption(
                offer_id=option.offer_id,
                option_reference=option.option_reference,
                activation_factor=factor,
                cost_eur=(option.price_eur * factor).quantize(CENT, rounding=ROUND_HALF_UP),
            ))
            for isp, watts in option.reduction_w.items():
                covered[isp] = covered.get(isp, Decimal(0)) + factor * watts
    chosen.sort(key=lambda c: (c.offer_id, c.option_reference))
    covered_w = {isp: int(covered[isp].quantize(Decimal(1), rounding=ROUND_HALF_UP)) for isp in sorted(covered)}
    short_w = {isp: problem.need_w[isp] - covered_w[isp] for isp in inst.isps
               if problem.need_w[isp] > covered_w[isp]}
    return ClearingResult(
        chosen=chosen,
        covered_w=covered_w,
        short_w=short_w,
        total_cost_eur=sum((c.cost_eur for c in chosen), Decimal("0.00")),
        status=status,
        mip_gap=gap,
        seconds=time.perf_counter() - started,
    )
