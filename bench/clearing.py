"""Time the DSO clearing recommendation (market.clearing.clear: build + solve, wall clock) on a generated market.

    .venv/bin/python -m bench.clearing [--offers 1000 --isps 96 --seed 1] [--profile]

The need follows an evening peak: 200-800 kW over a 16-ISP window (17:00-21:00 on a 96-ISP day; it scales with
--isps), zero elsewhere. Offers come from 40 aggregators, with 1-3 mutually exclusive options each; an option
reduces 5-200 kW on a contiguous ISP range inside the window, costs 0.05-0.60 EUR per kWh reduced and has a minimum
activation factor of 1.00, 0.50 or 0.20. Target (issue): under 5 s, gap <= 0.001, on the 2-core dev machine.

--profile also times the full model in one MILP (no core) and prints the build/solve split of both.

Last line: {"offers", "isps", "options", "seconds", "gap", "chosen", "short_isps", "total_cost_eur", "status"}.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from decimal import Decimal
from typing import Any

from market.clearing import ClearingProblem, OptionCandidate, clear

AGGREGATORS = 40
WINDOW_ISPS = 16


def market_generate(*, offers: int, isps: int, seed: int) -> ClearingProblem:
    rng = random.Random(seed)
    window = min(WINDOW_ISPS, isps)
    first = max(0, min(round(isps * 17 / 24), isps - window))  # 17:00 on a 96-ISP day
    need_w: dict[int, int] = {}
    for step in range(isps):
        inside = first <= step < first + window
        if not inside:
            need_w[step] = 0
            continue
        # A tent shaped peak: 200 kW at the window's edges, 800 kW in its middle, +-10 % noise.
        middle = 1 - abs((step - first + 0.5) - window / 2) / (window / 2)
        need_w[step] = int(1000 * (200 + 600 * middle) * rng.uniform(0.9, 1.1))
    options: list[OptionCandidate] = []
    for number in range(offers):
        offer_id = f"agr{rng.randrange(AGGREGATORS):02d}-offer{number:05d}"
        for option in range(rng.choice([1, 1, 2, 3])):
            length = rng.randint(1, window)
            start = rng.randint(first, first + window - length)
            kw = rng.uniform(5, 200)
            reduction_w = {step: int(kw * 1000 * rng.uniform(0.8, 1.0)) for step in range(start, start + length)}
            kwh = sum(reduction_w.values()) / 1000 * 0.25
            options.append(OptionCandidate(
                offer_id=offer_id,
                option_reference=f"opt{option}",
                price_eur=Decimal(str(round(kwh * rng.uniform(0.05, 0.60), 2))),
                min_activation_factor=Decimal(rng.choice(["1.00", "0.50", "0.20"])),
                reduction_w=reduction_w,
            ))
    return ClearingProblem(need_w=need_w, options=options)


def profile(problem: ClearingProblem) -> None:
    """Where `clear` spends its time (model building vs HiGHS), and the full model as one MILP for comparison (what
    the core scheme avoids). Wraps the module's private steps, so it is a separate run from the timed one."""
    import numpy as np

    from market import clearing

    spent = {"build": 0.0, "milp": 0.0, "lp": 0.0}
    solves: list[str] = []
    build, run, bounds = clearing._build, clearing._run, clearing.CheapestCoverMilp._option_bounds

    def timed_build(*args: Any, **kwargs: Any) -> Any:
        moment = time.perf_counter()
        try:
            return build(*args, **kwargs)
        finally:
            spent["build"] += time.perf_counter() - moment

    def timed_run(model: Any, *args: Any, **kwargs: Any) -> Any:
        moment = time.perf_counter()
        try:
            return run(model, *args, **kwargs)
        finally:
            spent["milp"] += time.perf_counter() - moment
            solves.append(f"{len(model.options)} options {time.perf_counter() - moment:.2f} s")

    def timed_bounds(self: Any, *args: Any, **kwargs: Any) -> Any:
        moment, before = time.perf_counter(), spent["build"]
        try:
            return bounds(self, *args, **kwargs)
        finally:
            spent["lp"] += time.perf_counter() - moment - (spent["build"] - before)

    clearing._build, clearing._run = timed_build, timed_run  # type: ignore[assignment]
    clearing.CheapestCoverMilp._option_bounds = timed_bounds  # type: ignore[method-assign]
    try:
        moment = time.perf_counter()
        clear(problem=problem)
        total = time.perf_counter() - moment
    finally:
        clearing._build, clearing._run = build, run  # type: ignore[assignment]
        clearing.CheapestCoverMilp._option_bounds = bounds  # type: ignore[method-assign]
    rest = total - sum(spent.values())
    print(f"profile: total {total:.2f} s = model building {spent['build']:.3f} s + LP relaxation {spent['lp']:.3f} s "
          f"+ MILP solves {spent['milp']:.2f} s ({'; '.join(solves)}) + the rest (arrays, greedy, rounding) "
          f"{rest:.3f} s", flush=True)

    inst = clearing._instance(problem)
    moment = time.perf_counter()
    model = clearing._build(inst, np.ones(inst.n, dtype=bool), stage="cost", budget_kw=clearing.SHORTFALL_TOLERANCE_KW)
    built = time.perf_counter() - moment
    moment = time.perf_counter()
    whole = clearing._run(model, inst, options={"mip_rel_gap": 0.001, "time_limit": 60.0})
    solved = time.perf_counter() - moment
    gap = clearing._relative_gap(inst.cost(whole.activation), whole.bound) if whole.activation is not None else None
    print(f"profile: the whole model as one MILP (HiGHS defaults, no core): build {built:.3f} s, solve {solved:.2f} s, "
          f"objective {whole.objective:.2f}, gap {gap}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offers", type=int, default=1000)
    parser.add_argument("--isps", type=int, default=96)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    problem = market_generate(offers=args.offers, isps=args.isps, seed=args.seed)
    if args.profile:
        profile(problem)
    moment = time.perf_counter()
    result = clear(problem=problem)
    seconds = time.perf_counter() - moment
    print(f"clearing {args.offers} offers ({len(problem.options)} options) over {args.isps} ISPs, seed {args.seed}: "
          f"{seconds:.2f} s, {result.status}, gap {result.mip_gap:.5f}, {len(result.chosen)} options chosen, "
          f"{result.total_cost_eur} EUR, {len(result.short_w)} ISPs short", flush=True)
    print(json.dumps({
        "offers": args.offers,
        "isps": args.isps,
        "options": len(problem.options),
        "seconds": round(seconds, 3),
        "gap": result.mip_gap,
        "chosen": len(result.chosen),
        "short_isps": len(result.short_w),
        "total_cost_eur": str(result.total_cost_eur),
        "status": result.status,
    }))


if __name__ == "__main__":
    main()
