"""Our optimiser against the pilots' control rules on the same seeded sessions.

    .venv/bin/python -m bench.optimiser [--sessions N --congestion-points K --scenario residential|workplace
                                         --seed S --workers W]

Defaults 100000 / 1000 / residential / 1 / 2. Scenario: bench/_scenario.py (sampled from ../shared/data/ev-sessions).
One JSON line per strategy, in the order uncontrolled, equal_share (INVADE), flexpower (static 17:00-21:00 profile),
ours (last line). Figures:
- peak_reduction_pct: 100 x (1 - sum over points of the strategy's peak / the same sum uncontrolled), peak of base
  load + EV load over the whole horizon;
- over_limit_kw: worst slot of any point above its limit, avoidable part only: where our LP relaxation (min current
  relaxed, so a bound for every strategy that delivers what the sessions can physically take) shows the limit can
  hold, everything above the limit; where it cannot, what lies above that LP's peak;
- rebound_kw: worst point's peak above its limit in 21:00-23:00 local (the two hours after the evening window);
- short_kwh_feasible: kWh not delivered to sessions whose energy uncontrolled charging delivers in full;
- short_sessions_pct: share of all sessions that are such a feasible session left short by more than 0.01 kWh;
- wall_s: wall time of the strategy over all points (ours: scheduling spread over W worker processes, as Celery
  workers would, including starting the pool; scenario generation not counted).
Ours also reports wall_ratio_vs_equal_share, worker_cpu_s (CPU seconds of the scheduling workers: on a quiet
machine wall_s approaches worker_cpu_s / workers), min_current_violations (slots with 0 < |p| < minimum power),
points_limit_unattainable (points where no schedule keeps the limit) and lp_not_optimal.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from typing import Any

import numpy as np

from aggregator import strategies
from aggregator.optimiser.point import PointRequest, PointSessions, schedule_point
from bench import _scenario
from common.isp import ISP_HOURS

SHORT_KWH = 0.01
_SCENARIO: _scenario.Scenario | None = None  # inherited by forked workers: no pickling of the inputs


def _schedule_points(bounds: tuple[int, int]) -> tuple[float, list[tuple[int, np.ndarray, np.ndarray, float, int, bool]]]:
    """Worker: schedule points [first, last); per point (index, total load, delivered kWh per session, the load
    above which a slot counts as avoidably over the limit, min-current violations, optimal?), with the CPU seconds
    the worker spent (independent of how busy the machine is)."""
    cpu_began = time.process_time()
    scenario = _SCENARIO
    assert scenario is not None
    starts = scenario.point_starts()
    out = []
    for k in range(*bounds):
        rows = slice(int(starts[k]), int(starts[k + 1]))
        n = rows.stop - rows.start
        avail = scenario.avail(rows)
        sessions = PointSessions(
            avail=avail,
            max_kw=scenario.max_kw[rows],
            min_kw=scenario.min_kw[rows],
            discharge_kw=np.zeros(n),
            energy_kwh=scenario.energy_kwh[rows],
            flexible=np.ones(n, dtype=bool),
        )
        limit = np.full(scenario.slots, scenario.limit_kw[k])
        result = schedule_point(sessions, PointRequest(base_kw=scenario.base_kw[k], limit_kw=limit))
        p = np.abs(result.schedule_kw)
        lo = scenario.min_kw[rows][:, None] * avail
        violations = int(((p > 1e-6) & (p < lo - 1e-6)).sum())
        reference = scenario.limit_kw[k] if result.lp_over_limit_kw <= 1e-6 else max(result.lp_peak_kw,
                                                                                     scenario.limit_kw[k])
        out.append((k, result.total_kw, result.schedule_kw.sum(axis=1) * ISP_HOURS, reference, violations,
                    result.status == "Optimal"))
    return time.process_time() - cpu_began, out


def run_ours(scenario: _scenario.Scenario, workers: int) -> dict[str, Any]:
    global _SCENARIO
    _SCENARIO = scenario
    chunk = max(1, min(25, scenario.points // (workers * 8) or 1))
    tasks = [(first, min(first + chunk, scenario.points)) for first in range(0, scenario.points, chunk)]
    began = time.perf_counter()
    if workers <= 1:
        parts = [_schedule_points(task) for task in tasks]
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = list(pool.imap_unordered(_schedule_points, tasks))
    wall = time.perf_counter() - began
    results = [item for _, part in parts for item in part]
    cpu = sum(cpu_s for cpu_s, _ in parts)
    total = np.zeros((scenario.points, scenario.slots))
    delivered = np.zeros(scenario.sessions)
    lp_peak = np.zeros(scenario.points)
    starts = scenario.point_starts()
    violations = 0
    not_optimal = 0
    for k, point_total, point_delivered, reference, bad, optimal in results:
        total[k] = point_total
        delivered[starts[k] : starts[k + 1]] = point_delivered
        lp_peak[k] = reference
        violations += bad
        not_optimal += 0 if optimal else 1
    return {"total": total, "delivered": delivered, "lp_peak": lp_peak, "wall_s": wall, "cpu_s": cpu,
            "min_current_violations": violations, "not_optimal": not_optimal}


def figures(
    *, strategy: str, scenario: _scenario.Scenario, total: np.ndarray, delivered: np.ndarray, wall_s: float,
    uncontrolled_peak: np.ndarray, reachable_peak: np.ndarray, feasible: np.ndarray,
) -> dict[str, Any]:
    limit = scenario.limit_kw[:, None]
    peak = total.max(axis=1)
    avoidable = total - reachable_peak[:, None]
    short = np.where(feasible, np.maximum(scenario.energy_kwh - delivered, 0.0), 0.0)
    rebound = total[:, scenario.in_rebound] - limit
    return {
        "strategy": strategy,
        "sessions": scenario.sessions,
        "congestion_points": scenario.points,
        "peak_reduction_pct": round(100.0 * (1.0 - peak.sum() / uncontrolled_peak.sum()), 2),
        "over_limit_kw": round(max(float(avoidable.max(initial=0.0)), 0.0), 3),
        "rebound_kw": round(max(float(rebound.max(initial=0.0)), 0.0), 3),
        "short_kwh_feasible": round(float(short.sum()), 3),
        "short_sessions_pct": round(100.0 * float((short > SHORT_KWH).sum()) / max(scenario.sessions, 1), 3),
        "wall_s": round(wall_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--congestion-points", type=int, default=1_000)
    parser.add_argument("--scenario", choices=["residential", "workplace"], default="residential")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    generated = time.perf_counter()
    scenario = _scenario.generate(name=args.scenario, sessions=args.sessions, points=args.congestion_points,
                                  seed=args.seed)
    starts = scenario.point_starts()
    avail = scenario.avail()
    cap = scenario.max_kw[:, None] * avail
    feasible = cap.sum(axis=1) * ISP_HOURS >= scenario.energy_kwh - 1e-9
    print(f"# scenario {scenario.name} seed {scenario.seed}: {scenario.sessions} sessions over {scenario.points} "
          f"points, {feasible.mean() * 100:.1f} % feasible uncontrolled, generated in "
          f"{time.perf_counter() - generated:.2f} s; load {os.getloadavg()[0]:.2f}", flush=True)

    # Ours first (its LP relaxation gives the lowest reachable peak every strategy is judged against), printed last.
    ours = run_ours(scenario, args.workers)
    rows: list[dict[str, Any]] = []

    began = time.perf_counter()
    unc = strategies.uncontrolled(cap_kw=cap, energy_kwh=scenario.energy_kwh)
    unc_total = scenario.base_kw + _scenario.per_point_sum(unc, starts)
    unc_wall = time.perf_counter() - began
    unc_peak = unc_total.max(axis=1)
    common = {"scenario": scenario, "uncontrolled_peak": unc_peak, "reachable_peak": ours["lp_peak"],
              "feasible": feasible}
    rows.append(figures(strategy="uncontrolled", total=unc_total, delivered=unc.sum(axis=1) * ISP_HOURS,
                        wall_s=unc_wall, **common))
    del unc

    began = time.perf_counter()
    share = strategies.equal_share(
        avail=avail, max_kw=scenario.max_kw, min_kw=scenario.min_kw, energy_kwh=scenario.energy_kwh,
        arrival_s=scenario.arrival_s, point=scenario.point,
        headroom_kw=scenario.limit_kw[:, None] - scenario.base_kw,
    )
    share_total = scenario.base_kw + _scenario.per_point_sum(share, starts)
    share_wall = time.perf_counter() - began
    rows.append(figures(strategy="equal_share", total=share_total, delivered=share.sum(axis=1) * ISP_HOURS,
                        wall_s=share_wall, **common))
    del share

    began = time.perf_counter()
    flex = strategies.flexpower(
        avail=avail, max_kw=scenario.max_kw,
        window_kw=strategies.flexpower_window_kw(max_kw=scenario.max_kw, phases=scenario.phases),
        energy_kwh=scenario.energy_kwh, in_window=scenario.in_window,
    )
    flex_total = scenario.base_kw + _scenario.per_point_sum(flex, starts)
    rows.append(figures(strategy="flexpower", total=flex_total, delivered=flex.sum(axis=1) * ISP_HOURS,
                        wall_s=time.perf_counter() - began, **common))
    del flex

    ours_row = figures(strategy="ours", total=ours["total"], delivered=ours["delivered"], wall_s=ours["wall_s"],
                       **common)
    ours_row["wall_ratio_vs_equal_share"] = round(ours["wall_s"] / max(share_wall, 1e-9), 1)
    # CPU seconds of the scheduling workers: on a quiet machine the wall time approaches worker_cpu_s / workers.
    ours_row["worker_cpu_s"] = round(ours["cpu_s"], 2)
    ours_row["min_current_violations"] = ours["min_current_violations"]
    ours_row["points_limit_unattainable"] = int((ours["lp_peak"] > scenario.limit_kw + 1e-6).sum())
    ours_row["lp_not_optimal"] = ours["not_optimal"]
    ours_row["workers"] = args.workers
    rows.append(ours_row)
    print(f"# load after the run {os.getloadavg()[0]:.2f}", flush=True)
    for row in rows:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
