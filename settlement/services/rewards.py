"""Driver rewards: an order's revenue allocated to the sessions that delivered it.

For each order settlement with a positive net amount, every session behind the point that the aggregator
steered gets a share pro rata to its delivered kWh shift: per ordered ISP, how far its scheduled draw moved
from what it would have drawn uncontrolled, in the ordered direction (max(0, s x (scheduled - uncontrolled)),
s = -1 for a reduction), times this order's share of the flex ordered on that ISP. Shares are rounded to cents
by the largest-remainder method, so the rewards add up to the order's revenue exactly. A net of zero or less
(penalties) allocates nothing (the shift is still recorded, with reward 0): drivers are never charged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from market.models import FlexOrder, FlexOrderIsp
from settlement.baselines.base import W_PER_KWH_PER_ISP
from settlement.baselines.ev_counterfactual import SessionProfile, profiles_of, sessions_by_group
from settlement.models import OrderSettlement, SessionReward

CENT = Decimal("0.01")
SETTLEABLE_STATUSES = (FlexOrder.Status.PLACED, FlexOrder.Status.DISPATCHED, FlexOrder.Status.SETTLED,
                       FlexOrder.Status.DISPUTED)


def allocate_cents(total: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """Split `total` (whole cents) pro rata to `weights`; the parts are whole cents and sum to `total` exactly
    (largest remainder; ties go to the earlier weight)."""
    weight_sum = sum(weights, Decimal(0))
    if total <= 0 or weight_sum <= 0:
        return [Decimal(0) for _ in weights]
    cents = int((total / CENT).to_integral_value())
    exact = [Decimal(cents) * w / weight_sum for w in weights]
    floors = [int(value.to_integral_value(rounding=ROUND_FLOOR)) for value in exact]
    left = cents - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    return [Decimal(value) * CENT for value in floors]


def _shares(orders: Sequence[FlexOrder]) -> dict[Any, dict[int, tuple[int, Decimal]]]:
    """Per order: ISP -> (direction, its share of the flex ordered there by its aggregator on its point), from one
    query over every order of those groups and days."""
    groups = {(o.aggregator_id, o.congestion_point_id, o.period) for o in orders}
    totals: dict[tuple[Any, Any, Any, int, int], int] = defaultdict(int)
    rows = FlexOrderIsp.objects.filter(
        flex_order__aggregator_id__in={g[0] for g in groups}, flex_order__congestion_point_id__in={g[1] for g in groups},
        flex_order__period__in={g[2] for g in groups}, flex_order__status__in=SETTLEABLE_STATUSES,
    ).values_list("flex_order__aggregator_id", "flex_order__congestion_point_id", "flex_order__period", "isp", "power_w")
    for aggregator_id, point_id, period, isp, power_w in rows.iterator(chunk_size=20_000):
        totals[(aggregator_id, point_id, period, isp, -1 if power_w < 0 else 1)] += abs(power_w)
    shares: dict[Any, dict[int, tuple[int, Decimal]]] = {}
    for order in orders:
        mine = {}
        for row in order.isps.all():
            direction = -1 if row.power_w < 0 else 1
            total = totals.get((order.aggregator_id, order.congestion_point_id, order.period, row.isp, direction)) \
                or abs(row.power_w) or 1
            mine[row.isp] = (direction, abs(Decimal(row.power_w)) / Decimal(total))
        shares[order.pk] = mine
    return shares


def shifted_kwh(profile: SessionProfile, shares: dict[int, tuple[int, Decimal]]) -> Decimal:
    total = Decimal(0)
    for isp, (direction, share) in shares.items():
        moved = direction * (profile.scheduled_w[isp] - profile.uncontrolled_w[isp])
        total += max(Decimal(0), moved) * share / W_PER_KWH_PER_ISP
    return total


def rewards_allocate(*, settlements: Sequence[OrderSettlement]) -> list[SessionReward]:
    """Create the SessionReward rows of freshly saved order settlements (a few queries per market day, whatever
    the number of orders)."""
    by_day: dict[Any, list[OrderSettlement]] = defaultdict(list)
    for settlement in settlements:  # a net <= 0 still records the shift (reward 0) for the driver report
        by_day[settlement.flex_order.period].append(settlement)
    rewards: list[SessionReward] = []
    for period, day_settlements in by_day.items():
        orders = [s.flex_order for s in day_settlements]
        sessions = sessions_by_group(groups=[(o.aggregator_id, o.congestion_point_id) for o in orders], period=period)
        if not sessions:
            continue  # nobody steered a session there: nothing to share (the common case without our EVs)
        shares = _shares(orders)
        profiles: dict[Any, list[SessionProfile]] = {}
        for settlement in day_settlements:
            order = settlement.flex_order
            group = (order.aggregator_id, order.congestion_point_id)
            if group not in sessions:
                continue
            if group not in profiles:
                isps = sorted({isp for o in orders if (o.aggregator_id, o.congestion_point_id) == group
                               for isp in shares[o.pk]})
                profiles[group] = profiles_of(sessions=sessions[group], period=period, isps=isps)
            shifts = [shifted_kwh(profile, shares[order.pk]) for profile in profiles[group]]
            amounts = allocate_cents(settlement.total_eur, shifts)
            rewards += [
                SessionReward(order_settlement=settlement, session=profile.session,
                              shifted_kwh=shift.quantize(Decimal("0.001")), reward_eur=amount)
                for profile, shift, amount in zip(profiles[group], shifts, amounts, strict=True)
                if shift > 0
            ]
    return SessionReward.objects.bulk_create(rewards, batch_size=2000)
