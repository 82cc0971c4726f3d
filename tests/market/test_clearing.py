"""market.clearing: the DSO's cheapest-cover recommendation. Pure functions, no database.

Hand-computed optima first, then randomised cross-checks against independent references: brute-force enumeration of
the option choices (max cover, and min cost for all-or-nothing instances) and an LP relaxation built with PuLP and
solved by CBC (a lower bound on cost).
"""

from __future__ import annotations

import itertools
import random
from decimal import ROUND_HALF_UP, Decimal

import pulp
import pytest

from market.clearing import (
    CheapestCoverMilp,
    ClearingAlgorithm,
    ClearingProblem,
    ClearingResult,
    OptionCandidate,
    clear,
)

KW = 1000


def option(offer: str, price: str, maf: str = "1.00", *, ref: str = "1", **reduction_kw: float) -> OptionCandidate:
    """reduction_kw as isp<N>=kW, e.g. option("A", "6.00", isp1=60)."""
    return OptionCandidate(
        offer_id=offer,
        option_reference=ref,
        price_eur=Decimal(price),
        min_activation_factor=Decimal(maf),
        reduction_w={int(key.removeprefix("isp")): int(kw * KW) for key, kw in reduction_kw.items()},
    )


def chosen_factors(result: ClearingResult) -> dict[tuple[str, str], Decimal]:
    return {(c.offer_id, c.option_reference): c.activation_factor for c in result.chosen}


def assert_consistent(problem: ClearingProblem, result: ClearingResult) -> None:
    """What every result must satisfy: factors on the grid within [maf, 1], one option per offer, costs and
    coverage recomputable from the factors, short_w = need - covered where positive."""
    by_key = {(o.offer_id, o.option_reference): o for o in problem.options}
    offers = [c.offer_id for c in result.chosen]
    assert len(offers) == len(set(offers))
    assert result.chosen == sorted(result.chosen, key=lambda c: (c.offer_id, c.option_reference))
    covered: dict[int, Decimal] = {}
    for chosen in result.chosen:
        candidate = by_key[(chosen.offer_id, chosen.option_reference)]
        factor = chosen.activation_factor
        assert factor == factor.quantize(Decimal("0.01"))
        assert candidate.min_activation_factor <= factor <= Decimal("1")
        assert chosen.cost_eur == (candidate.price_eur * factor).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        for isp, watts in candidate.reduction_w.items():
            covered[isp] = covered.get(isp, Decimal(0)) + factor * watts
    assert result.total_cost_eur == sum((c.cost_eur for c in result.chosen), Decimal(0))
    for isp, need in problem.need_w.items():
        if need <= 0:
            continue
        got = int(covered.get(isp, Decimal(0)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        assert result.covered_w[isp] == got
        assert result.short_w.get(isp, 0) == max(need - got, 0)
    assert all(short > 0 for short in result.short_w.values())


# ---------------------------------------------------------------------------------------------------------------
# Hand-computed optima


def test_it_chooses_one_cheap_all_or_nothing_offer_covering_everything_alone() -> None:
    problem = ClearingProblem(
        need_w={1: 100 * KW, 2: 100 * KW, 3: 0},
        options=[
            option("big-cheap", "10.00", isp1=120, isp2=120),
            option("exact-dearer", "50.00", isp1=100, isp2=100),
            option("partial-dear", "40.00", "0.10", isp1=200, isp2=200),
        ],
    )
    result = clear(problem=problem)
    assert chosen_factors(result) == {("big-cheap", "1"): Decimal("1.00")}
    assert result.total_cost_eur == Decimal("10.00")
    assert result.covered_w == {1: 120 * KW, 2: 120 * KW}
    assert result.short_w == {}
    assert result.status == "optimal"
    assert result.mip_gap <= 0.001
    assert_consistent(problem, result)


def test_it_combines_a_cheap_insufficient_offer_with_a_partial_activation_over_a_big_offer_bought_whole() -> None:
    # need 100 kW. A alone (60 kW) is too small; C whole costs 15.00; A + 40 % of B costs 6.00 + 8.00 = 14.00.
    problem = ClearingProblem(
        need_w={1: 100 * KW},
        options=[
            option("A", "6.00", isp1=60),  # 0.10 EUR/kW, all-or-nothing, insufficient
            option("B", "20.00", "0.20", isp1=100),  # 0.20 EUR/kW, partial from 20 %
            option("C", "15.00", isp1=100),  # 0.15 EUR/kW, all-or-nothing, covers alone
        ],
    )
    result = clear(problem=problem)
    assert chosen_factors(result) == {("A", "1"): Decimal("1.00"), ("B", "1"): Decimal("0.40")}
    assert result.total_cost_eur == Decimal("14.00")
    assert result.covered_w == {1: 100 * KW}
    assert_consistent(problem, result)


def test_it_activates_a_partial_option_at_no_less_than_its_minimum_factor() -> None:
    # 30 kW needed: P at 0.30 would cost 3.00 but its maf is 0.60, so P costs 6.00, still below Q's 7.00.
    problem = ClearingProblem(
        need_w={5: 30 * KW},
        options=[option("P", "10.00", "0.60", isp5=100), option("Q", "7.00", isp5=30)],
    )
    result = clear(problem=problem)
    assert chosen_factors(result) == {("P", "1"): Decimal("0.60")}
    assert result.total_cost_eur == Decimal("6.00")
    assert result.covered_w == {5: 60 * KW}
    assert_consistent(problem, result)


def test_it_skips_a_partial_option_whose_minimum_factor_makes_it_dearer() -> None:
    problem = ClearingProblem(
        need_w={5: 30 * KW},
        options=[option("P", "10.00", "0.60", isp5=100), option("Q", "5.50", isp5=30)],
    )
    result = clear(problem=problem)
    assert chosen_factors(result) == {("Q", "1"): Decimal("1.00")}
    assert result.total_cost_eur == Decimal("5.50")


def test_it_buys_an_all_or_nothing_option_only_whole() -> None:
    # R at 0.30 would cost 2.40; whole it costs 8.00, which still beats S.
    problem = ClearingProblem(
        need_w={1: 30 * KW},
        options=[option("R", "8.00", "1.00", isp1=100), option("S", "9.00", isp1=30)],
    )
    result = clear(problem=problem)
    assert chosen_factors(result) == {("R", "1"): Decimal("1.00")}
    assert result.covered_w == {1: 100 * KW}
    assert result.total_cost_eur == Decimal("8.00")


def test_it_rounds_a_partial_factor_up_so_the_need_stays_covered() -> None:
    # 100 / 300 = 0.333...: 0.33 would leave 1 kW short, so the factor is 0.34 and costs 0.34 x 9.00.
    problem = ClearingProblem(need_w={1: 100 * KW}, options=[option("P", "9.00", "0.01", isp1=300)])
    result = clear(problem=problem)
    assert chosen_factors(result) == {("P", "1"): Decimal("0.34")}
    assert result.covered_w == {1: 102 * KW}
    assert result.short_w == {}
    assert result.total_cost_eur == Decimal("3.06")


def test_it_takes_back_a_round_up_step_where_another_options_round_up_already_covers_it() -> None:
    # The solver's optimum is A at 0.504 (only A reduces ISP 1) and B at 0.496 (B is the cheaper kW on ISP 2).
    # Rounding both up gives ISP 2 101 kW; B can go back to 0.49 and ISP 2 still gets its 100 kW.
    problem = ClearingProblem(
        need_w={1: 50_400, 2: 100 * KW},
        options=[option("A", "15.00", "0.01", isp1=100, isp2=100), option("B", "10.00", "0.01", isp2=100)],
    )
    result = clear(problem=problem)
    assert chosen_factors(result) == {("A", "1"): Decimal("0.51"), ("B", "1"): Decimal("0.49")}
    assert result.covered_w == {1: 51 * KW, 2: 100 * KW}
    assert result.total_cost_eur == Decimal("12.55")
    assert_consistent(problem, result)


def test_it_rounds_each_cost_half_up_to_cents_and_totals_the_rounded_costs() -> None:
    # 3.33 x 0.50 = 1.665 -> 1.67; 0.25 x 0.50 = 0.125 -> 0.13 (a banker's rounding would give 1.66 and 0.12).
    problem = ClearingProblem(
        need_w={1: 50 * KW, 2: 10 * KW},
        options=[option("A", "3.33", "0.50", isp1=100), option("B", "0.25", "0.50", isp2=20)],
    )
    result = clear(problem=problem)
    assert {c.offer_id: c.cost_eur for c in result.chosen} == {"A": Decimal("1.67"), "B": Decimal("0.13")}
    assert result.total_cost_eur == Decimal("1.80")
    assert_consistent(problem, result)


def test_it_chooses_at_most_one_option_of_an_offer() -> None:
    # X's options would cover both ISPs for 10.00 together, but they are alternatives: X/x1 + Z (17.00) is best.
    problem = ClearingProblem(
        need_w={1: 100 * KW, 2: 100 * KW},
        options=[
            option("X", "5.00", ref="x1", isp1=100),
            option("X", "5.00", ref="x2", isp2=100),
            option("Y", "30.00", isp1=100, isp2=100),
            option("Z", "12.00", isp2=100),
        ],
    )
    result = clear(problem=problem)
    assert chosen_factors(result) == {("X", "x1"): Decimal("1.00"), ("Z", "1"): Decimal("1.00")}
    assert result.total_cost_eur == Decimal("17.00")
    assert_consistent(problem, result)


def test_it_maximises_covered_flex_then_cost_and_lists_the_isps_left_short() -> None:
    # ISP 1: everything offered is 90 kW of 100; ISP 2: C or D can cover it, C is cheaper; ISP 3: nobody offers.
    problem = ClearingProblem(
        need_w={1: 100 * KW, 2: 100 * KW, 3: 50 * KW},
        options=[
            option("A", "3.00", isp1=60),
            option("B", "1.00", isp1=30),
            option("C", "10.00", "0.50", isp2=150),
            option("D", "12.00", "0.50", isp2=150),
        ],
    )
    result = clear(problem=problem)
    # C at 100/150 = 0.667 rounds up to 0.67 (6.70).
    assert chosen_factors(result) == {("A", "1"): Decimal("1.00"), ("B", "1"): Decimal("1.00"),
                                      ("C", "1"): Decimal("0.67")}
    assert result.covered_w == {1: 90 * KW, 2: 100_500, 3: 0}
    assert result.short_w == {1: 10 * KW, 3: 50 * KW}
    assert result.total_cost_eur == Decimal("10.70")
    assert result.status == "optimal"
    assert_consistent(problem, result)


def test_it_maximises_cover_across_exclusive_options_before_cost() -> None:
    # M's two options are alternatives. m1 covers 80 of ISP 1's 100 kW; m2 would only add 50 useful kW on ISP 2
    # (where N already gives 40 of 50). Max cover is m1 + N = 120 kW even though m2 is the cheaper option.
    problem = ClearingProblem(
        need_w={1: 100 * KW, 2: 50 * KW},
        options=[
            option("M", "4.00", ref="m1", isp1=80),
            option("M", "1.00", ref="m2", isp2=80),
            option("N", "5.00", isp2=40),
        ],
    )
    result = clear(problem=problem)
    assert chosen_factors(result) == {("M", "m1"): Decimal("1.00"), ("N", "1"): Decimal("1.00")}
    assert result.short_w == {1: 20 * KW, 2: 10 * KW}
    assert result.total_cost_eur == Decimal("9.00")
    assert_consistent(problem, result)


def test_it_handles_100_isps_of_a_long_dst_day() -> None:
    need = {isp: 10 * KW for isp in range(1, 101)}
    blocks = [option(f"block{k:02d}", "1.00", **{f"isp{isp}": 11 for isp in range(10 * k + 1, 10 * k + 11)})
              for k in range(10)]
    problem = ClearingProblem(need_w=need, options=blocks)
    result = clear(problem=problem)
    assert len(result.chosen) == 10
    assert result.short_w == {}
    assert sorted(result.covered_w) == list(range(1, 101))
    assert result.covered_w[100] == 11 * KW

    # Without the last block's ISP 100 that one ISP, and only that one, stays short.
    trimmed = [*blocks[:9], option("block09", "1.00", **{f"isp{isp}": 11 for isp in range(91, 100)})]
    result = clear(problem=ClearingProblem(need_w=need, options=trimmed))
    assert result.short_w == {100: 10 * KW}
    assert_consistent(ClearingProblem(need_w=need, options=trimmed), result)


# ---------------------------------------------------------------------------------------------------------------
# Edge cases and contract


def test_it_returns_empty_when_no_isp_needs_anything() -> None:
    problem = ClearingProblem(need_w={1: 0, 2: 0}, options=[option("A", "0.00", isp1=10)])
    result = clear(problem=problem)
    assert result.status == "empty"
    assert result.chosen == []
    assert result.short_w == {}
    assert result.total_cost_eur == Decimal("0")


def test_it_leaves_everything_short_without_options() -> None:
    result = clear(problem=ClearingProblem(need_w={1: 5 * KW, 2: 0, 3: 7 * KW}, options=[]))
    assert result.chosen == []
    assert result.short_w == {1: 5 * KW, 3: 7 * KW}
    assert result.covered_w == {1: 0, 3: 0}
    assert result.total_cost_eur == Decimal("0")
    assert result.status == "optimal"


def test_it_never_buys_an_option_that_only_reduces_isps_without_need() -> None:
    problem = ClearingProblem(
        need_w={1: 10 * KW, 2: 0},
        options=[option("elsewhere", "0.01", isp2=500, isp3=500), option("here", "9.00", isp1=10)],
    )
    result = clear(problem=problem)
    assert chosen_factors(result) == {("here", "1"): Decimal("1.00")}


def test_its_answer_does_not_depend_on_the_order_of_the_options() -> None:
    problem = random_problem(random.Random(7), offers=8, isps=4, mafs=("1.00", "0.50", "0.20"))
    shuffled = list(problem.options)
    random.Random(1).shuffle(shuffled)
    first = clear(problem=problem)
    second = clear(problem=ClearingProblem(need_w=problem.need_w, options=shuffled))
    assert first.chosen == second.chosen
    assert first.covered_w == second.covered_w


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        (option("A", "1.00", "0.00", isp1=10), "min_activation_factor"),
        (option("A", "1.00", "1.50", isp1=10), "min_activation_factor"),
        (option("A", "1.00", "0.333", isp1=10), "min_activation_factor"),
        (option("A", "1.00", isp1=-10), "reductions"),
    ],
)
def test_it_rejects_options_it_cannot_honour(candidate: OptionCandidate, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clear(problem=ClearingProblem(need_w={1: 10 * KW}, options=[candidate]))


def test_it_rejects_an_option_listed_twice() -> None:
    twice = [option("A", "1.00", isp1=10), option("A", "2.00", isp1=20)]
    with pytest.raises(ValueError, match="twice"):
        clear(problem=ClearingProblem(need_w={1: 10 * KW}, options=twice))


def test_it_still_returns_a_consistent_recommendation_when_the_time_limit_cuts_the_solve_short() -> None:
    problem = random_problem(random.Random(11), offers=60, isps=8, mafs=("1.00",), max_options=3)
    result = clear(problem=problem, algorithm=CheapestCoverMilp(time_limit_s=1e-4))
    assert result.status in ("optimal", "feasible")
    assert result.chosen
    assert_consistent(problem, result)


def test_the_algorithm_is_swappable() -> None:
    class Nothing(ClearingAlgorithm):
        def compute(self, problem: ClearingProblem) -> ClearingResult:
            return ClearingResult(chosen=[], covered_w={}, short_w=dict(problem.need_w), total_cost_eur=Decimal(0),
                                  status="feasible", mip_gap=0.0, seconds=0.0)

    problem = ClearingProblem(need_w={1: 10 * KW}, options=[option("A", "1.00", isp1=10)])
    assert clear(problem=problem, algorithm=Nothing()).short_w == {1: 10 * KW}
    with pytest.raises(NotImplementedError):
        ClearingAlgorithm().compute(problem)


# ---------------------------------------------------------------------------------------------------------------
# Randomised cross-checks against independent references


def random_problem(rng: random.Random, *, offers: int, isps: int, mafs: tuple[str, ...],
                   max_options: int = 2) -> ClearingProblem:
    need = {isp: rng.choice([0, rng.randint(20, 150) * KW]) for isp in range(isps)}
    need[rng.randrange(isps)] = rng.randint(20, 150) * KW  # at least one ISP needs something
    options = []
    for number in range(offers):
        for ref in range(rng.randint(1, max_options)):
            first = rng.randrange(isps)
            last = rng.randrange(first, isps)
            options.append(OptionCandidate(
                offer_id=f"offer{number}",
                option_reference=f"opt{ref}",
                price_eur=Decimal(rng.randint(100, 5000)) / 100,
                min_activation_factor=Decimal(rng.choice(mafs)),
                reduction_w={isp: rng.randint(5, 90) * KW for isp in range(first, last + 1)},
            ))
    return ClearingProblem(need_w=need, options=options)


def choices(problem: ClearingProblem) -> list[tuple[OptionCandidate, ...]]:
    """Every way to pick at most one option per offer."""
    per_offer: dict[str, list[OptionCandidate | None]] = {}
    for candidate in problem.options:
        per_offer.setdefault(candidate.offer_id, [None]).append(candidate)
    return [tuple(o for o in pick if o is not None) for pick in itertools.product(*per_offer.values())]


def covered_capped(problem: ClearingProblem, picked: tuple[OptionCandidate, ...]) -> int:
    return sum(min(need, sum(o.reduction_w.get(isp, 0) for o in picked)) for isp, need in problem.need_w.items()
               if need > 0)


def result_covered_capped(problem: ClearingProblem, result: ClearingResult) -> int:
    return sum(need - result.short_w.get(isp, 0) for isp, need in problem.need_w.items() if need > 0)


def lp_lower_bound(problem: ClearingProblem, *, shortfall_w: int) -> float:
    """min cost with activations relaxed to [0, 1] (maf and integrality dropped), at most `shortfall_w` short."""
    lp = pulp.LpProblem("relaxation", pulp.LpMinimize)
    activation = {i: pulp.LpVariable(f"a{i}", 0, 1) for i in range(len(problem.options))}
    short = {isp: pulp.LpVariable(f"s{isp}", 0) for isp, need in problem.need_w.items() if need > 0}
    lp += pulp.lpSum(float(o.price_eur) * activation[i] for i, o in enumerate(problem.options))
    for isp in short:
        lp += pulp.lpSum(o.reduction_w.get(isp, 0) / KW * activation[i] for i, o in enumerate(problem.options)) \
            + short[isp] >= problem.need_w[isp] / KW
    for offer in {o.offer_id for o in problem.options}:
        lp += pulp.lpSum(activation[i] for i, o in enumerate(problem.options) if o.offer_id == offer) <= 1
    lp += pulp.lpSum(short.values()) <= shortfall_w / KW + 1e-5
    assert lp.solve(pulp.PULP_CBC_CMD(msg=False)) == pulp.LpStatusOptimal
    return float(pulp.value(lp.objective) or 0.0)


@pytest.mark.parametrize("seed", range(25))
def test_it_covers_the_most_and_costs_no_less_than_the_lp_relaxation_on_random_instances(seed: int) -> None:
    rng = random.Random(seed)
    problem = random_problem(rng, offers=6, isps=4, mafs=("1.00", "0.50"))
    result = clear(problem=problem)
    assert_consistent(problem, result)

    # Activation 1 never covers less than a partial one, so max cover is a max over whole-option choices.
    picks = choices(problem)
    best_cover = max(covered_capped(problem, pick) for pick in picks)
    assert abs(result_covered_capped(problem, result) - best_cover) <= len(problem.need_w)  # W rounding per ISP
    total_need = sum(need for need in problem.need_w.values() if need > 0)
    bound = lp_lower_bound(problem, shortfall_w=total_need - best_cover)
    assert float(result.total_cost_eur) >= bound - 1e-6
    # ... and it is no dearer than the cheapest whole-option max cover, up to the gap and the 0.01 round-up.
    cheapest_whole = min(sum(float(o.price_eur) for o in pick) for pick in picks
                         if covered_capped(problem, pick) == best_cover)
    round_up = sum(0.01 * float(o.price_eur) for o in problem.options)
    assert float(result.total_cost_eur) <= cheapest_whole * 1.001 + round_up + 0.01


@pytest.mark.parametrize("seed", range(25))
def test_it_finds_the_cheapest_max_cover_of_all_or_nothing_offers_by_enumeration(seed: int) -> None:
    rng = random.Random(1000 + seed)
    problem = random_problem(rng, offers=rng.randint(4, 7), isps=4, mafs=("1.00",))
    result = clear(problem=problem, algorithm=CheapestCoverMilp(mip_rel_gap=0.0))
    assert_consistent(problem, result)
    assert all(c.activation_factor == Decimal("1.00") for c in result.chosen)

    best = max((covered_capped(problem, pick), -sum(o.price_eur for o in pick)) for pick in choices(problem))
    assert result_covered_capped(problem, result) == best[0]
    assert result.total_cost_eur == -best[1]
    assert result.status == "optimal"


def cbc_optimum(problem: ClearingProblem, *, buying: OptionCandidate | None = None) -> tuple[float, float]:
    """The lexicographic MILP (max cover in kW, then min cost) written independently in PuLP and solved exactly by
    CBC over all options: (shortfall in kW, cost). With `buying`, the cost stage must buy that option."""
    needed = [isp for isp, need in problem.need_w.items() if need > 0]
    indexes = range(len(problem.options))
    milp = pulp.LpProblem("clearing", pulp.LpMinimize)
    chosen = {i: pulp.LpVariable(f"y{i}", cat="Binary") for i in indexes}
    activation = {i: pulp.LpVariable(f"a{i}", 0, 1) for i in indexes}
    short = {isp: pulp.LpVariable(f"s{isp}", 0) for isp in needed}
    for i, candidate in enumerate(problem.options):
        milp += activation[i] <= chosen[i]
        milp += activation[i] >= float(candidate.min_activation_factor) * chosen[i]
    for offer in {o.offer_id for o in problem.options}:
        milp += pulp.lpSum(chosen[i] for i, o in enumerate(problem.options) if o.offer_id == offer) <= 1
    for isp in needed:
        milp += pulp.lpSum(o.reduction_w.get(isp, 0) / KW * activation[i] for i, o in enumerate(problem.options)) \
            + short[isp] >= problem.need_w[isp] / KW
    exact = pulp.PULP_CBC_CMD(msg=False, gapRel=0)
    milp.setObjective(pulp.lpSum(short.values()))
    assert milp.solve(exact) == pulp.LpStatusOptimal
    shortfall = float(pulp.value(milp.objective) or 0.0)
    milp += pulp.lpSum(short.values()) <= shortfall + 1e-5
    if buying is not None:
        milp += chosen[problem.options.index(buying)] == 1
    milp.setObjective(pulp.lpSum(float(o.price_eur) * activation[i] for i, o in enumerate(problem.options)))
    status = milp.solve(exact)
    if buying is not None and status == pulp.LpStatusInfeasible:
        return shortfall, float("inf")  # buying it rules out the max cover (it excludes an offer's better option)
    assert status == pulp.LpStatusOptimal
    return shortfall, float(pulp.value(milp.objective) or 0.0)


@pytest.mark.parametrize("seed", range(6))
def test_its_core_of_options_finds_the_same_optimum_as_cbc_on_the_whole_model(seed: int) -> None:
    """40 offers are enough for the first core to leave options out, so this checks the bounds that justify it."""
    rng = random.Random(2000 + seed)
    problem = random_problem(rng, offers=40, isps=6, mafs=("1.00", "0.50", "0.20"), max_options=3)
    result = clear(problem=problem, algorithm=CheapestCoverMilp(mip_rel_gap=0.0))
    assert_consistent(problem, result)
    shortfall_kw, cost = cbc_optimum(problem)
    assert sum(result.short_w.values()) == pytest.approx(shortfall_kw * KW, abs=len(problem.need_w))
    # The rounded recommendation is feasible, so it cannot beat the optimum; rounding up adds <= 0.01 x price each.
    assert float(result.total_cost_eur) >= cost - 0.005 * len(result.chosen) - 1e-6
    round_up = sum(0.01 * float(c.cost_eur / c.activation_factor) for c in result.chosen)
    assert float(result.total_cost_eur) <= cost + round_up + 0.005 * len(result.chosen) + 1e-6


@pytest.mark.parametrize(
    ("seed", "mafs", "max_options"),
    [*[(seed, ("1.00", "0.50", "0.20"), 3) for seed in range(3)], *[(seed, ("0.01",), 1) for seed in range(3)]],
)
def test_its_bound_for_leaving_an_option_out_never_exceeds_what_buying_it_costs(
    seed: int, mafs: tuple[str, ...], max_options: int
) -> None:
    """The core scheme drops option o when L + forced_o proves no cheaper solution buys it. Check that bound against
    CBC's exact optimum with o forced in, for every option (white-box: this bound is what keeps the core exact).
    With only near-continuous options (maf 0.01, one option per offer) the LP is exact and so is the bound, so an
    overestimate would show there too."""
    from market import clearing

    problem = random_problem(random.Random(3000 + seed), offers=7, isps=4, mafs=mafs, max_options=max_options)
    shortfall_kw, _ = cbc_optimum(problem)
    inst = clearing._instance(problem)
    forced, lagrangian = CheapestCoverMilp()._option_bounds(inst, shortfall_kw + clearing.SHORTFALL_TOLERANCE_KW)
    assert forced is not None
    assert min(forced) >= 0
    for index, candidate in enumerate(inst.options):
        _, cost = cbc_optimum(problem, buying=candidate)
        assert cost >= lagrangian + forced[index] - 1e-6
        if mafs == ("0.01",):
            assert cost <= lagrangian + forced[index] + 0.01
