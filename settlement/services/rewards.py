"""Driver rewards: an order's revenue allocated to the sessions that delivered it.

For each order settlement with a positive net amount, every session behind the point that the aggregator
steered gets a share pro rata to its delivered kWh shift: per ordered ISP, how far its scheduled draw moved
from what it would have drawn uncontrolled, in the ordered direction (max(0, s x (scheduled - uncontrolled)),
s = -1 for a reduction), times this order's share of the flex ordered on that ISP. Shares are rounded to cents
by the largest-remainder method, so the rewards add up to the order's revenue exactly. A net of zero or less
(penalties) allocates nothing: drivers are never charged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from market.models import FlexOrder, FlexOrderIsp
from settlement.baselines.base import W_PER_KWH_PER_ISP
from settlement.baselines.ev_counterfactual import SessionProfile, session_profiles
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


def _order_shares(order: FlexOrder) -> dict[int, tuple[int, Decimal]]:
    """ISP -> (direction, this order's share of the flex ordered there by the aggregator on the point)."""
    totals: dict[tuple[int, int], int] = defaultdict(int)
    for other in FlexOrder.objects.filter(aggregator_id=order.aggregator_id, congestion_point_id=order.congestion_point_id,
                                          period=order.period, status__in=SETTLEABLE_STATUSES).prefetch_related("isps"):
        for row in other.isps.all():
            totals[(row.isp, -1 if row.power_w < 0 else 1)] += abs(row.power_w)
    shares = {}
    for row in order.isps.all():
        direction = -1 if row.power_w < 0 else 1
        total = totals.get((row.isp, direction)) or abs(row.power_w) or 1
        shares[row.isp] = (direction, abs(Decimal(row.power_w)) / Decimal(total))
    return shares


def shifted_kwh(profile: SessionProfile, shares: dict[int, tuple[int, Decimal]]) -> Decimal:
    total = Decimal(0)
    for isp, (direction, share) in shares.items():
        moved = direction * (profile.scheduled_w[isp] - profile.uncontrolled_w[isp])
        total += max(Decimal(0), moved) * share / W_PER_KWH_PER_ISP
    return total


def rewards_allocate(*, settlements: Sequence[OrderSettlement]) -> list[SessionReward]:
    """Create the SessionReward rows of freshly saved order settlements."""
    profiles_cache: dict[tuple[Any, Any, Any], list[SessionProfile]] = {}
    rewards: list[SessionReward] = []
    for settlement in settlements:
        order = settlement.flex_order
        shares = _order_shares(order)
        key = (order.aggregator_id, order.congestion_point_id, order.period)
        if key not in profiles_cache:
            isps = sorted(set(FlexOrderIsp.objects.filter(
                flex_order__aggregator_id=order.aggregator_id, flex_order__congestion_point_id=order.congestion_point_id,
                flex_order__period=order.period).values_list("isp", flat=True)) | set(shares))
            profiles_cache[key] = session_profiles(aggregator=order.aggregator, congestion_point=order.congestion_point,
                                                   period=order.period, isps=isps)
        profiles = profiles_cache[key]
        shifts = [shifted_kwh(profile, shares) for profile in profiles]
        amounts = allocate_cents(settlement.total_eur, shifts)
        rewards += [
            SessionReward(order_settlement=settlement, session=profile.session,
                          shifted_kwh=shift.quantize(Decimal("0.001")), reward_eur=amount)
            for profile, shift, amount in zip(profiles, shifts, amounts, strict=True)
            if shift > 0
        ]
    return SessionReward.objects.bulk_create(rewards, batch_size=2000)
