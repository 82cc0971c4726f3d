"""The DSO's clearing recommendation for a flex request, and ordering it in one action.

The algorithm (market.clearing, chosen by MARKET_CLEARING_ALGORITHM) picks the cheapest set of open offer
options and activation factors covering the requested reduction per ISP; when that is impossible it covers
as much as possible, then at least cost, and names the ISPs left short.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from common.exceptions import ApplicationError
from market.models import FlexOffer, FlexOrder, FlexRequest, FlexRequestIsp, Participant
from market.services._base import Actor, now
from market.services.orders import flex_offer_accept

if TYPE_CHECKING:
    from market.clearing import ClearingAlgorithm


@dataclass(frozen=True)
class RecommendedOption:
    offer: FlexOffer
    option_reference: str
    activation_factor: Decimal
    cost_eur: Decimal


@dataclass(frozen=True)
class Recommendation:
    flex_request: FlexRequest
    chosen: list[RecommendedOption]
    need_w: dict[int, int]
    covered_w: dict[int, int]
    short_w: dict[int, int]
    total_cost_eur: Decimal
    status: str
    mip_gap: float
    seconds: float
    offers_considered: int

    @property
    def fully_covered(self) -> bool:
        return not self.short_w


@cache
def _algorithm() -> ClearingAlgorithm:
    return import_string(settings.MARKET_CLEARING_ALGORITHM)()


def _open_offers(flex_request: FlexRequest) -> list[FlexOffer]:
    return list(
        FlexOffer.objects.filter(flex_request=flex_request, status=FlexOffer.Status.SUBMITTED, expires_at__gt=now())
        .select_related("aggregator")
        .prefetch_related("options__isps")
        .order_by("created_at")
    )


def flex_request_recommend(*, flex_request: FlexRequest, dso: Participant) -> Recommendation:
    """The cheapest cover of the request's remaining need by its open offers (reads only)."""
    if flex_request.dso_id != dso.pk:
        raise ApplicationError("Unknown flex request reference.", code="unknown_reference", field="flex_request")
    ordered: dict[int, int] = {}
    for order in FlexOrder.objects.filter(flex_offer__flex_request=flex_request).prefetch_related("isps"):
        for row in order.isps.all():
            ordered[row.isp] = ordered.get(row.isp, 0) - row.power_w  # reductions already bought
    need = {
        row.isp: max(0, -row.max_power_w - ordered.get(row.isp, 0))
        for row in flex_request.isps.filter(disposition=FlexRequestIsp.Disposition.REQUESTED)
        if row.max_power_w <= 0
    }
    from market.clearing import ClearingProblem, OptionCandidate, clear

    offers = _open_offers(flex_request)
    candidates = [
        OptionCandidate(
            offer_id=str(offer.pk),
            option_reference=option.option_reference,
            price_eur=option.price_eur,
            min_activation_factor=option.min_activation_factor,
            reduction_w={row.isp: -row.power_w for row in option.isps.all() if row.power_w < 0},
        )
        for offer in offers
        for option in offer.options.all()
    ]
    result = clear(problem=ClearingProblem(need_w=need, options=candidates), algorithm=_algorithm())
    by_id = {str(offer.pk): offer for offer in offers}
    return Recommendation(
        flex_request=flex_request,
        chosen=[RecommendedOption(offer=by_id[item.offer_id], option_reference=item.option_reference,
                                  activation_factor=item.activation_factor, cost_eur=item.cost_eur)
                for item in result.chosen],
        need_w={isp: value for isp, value in need.items() if value > 0},
        covered_w=result.covered_w,
        short_w=result.short_w,
        total_cost_eur=result.total_cost_eur,
        status=result.status,
        mip_gap=result.mip_gap,
        seconds=result.seconds,
        offers_considered=len(offers),
    )


@transaction.atomic
def flex_request_order_recommendation(
    *, flex_request: FlexRequest, dso: Participant, actor: Actor = None, actor_label: str = "",
    expected_cost_eur: Decimal | None = None,
) -> list[FlexOrder]:
    """Order the current recommendation in one transaction: every chosen option, or none.

    `expected_cost_eur` (what the DSO saw) guards against ordering a different mix than shown: if the
    offers changed meanwhile and the cost moved, nothing is ordered (code recommendation_changed).
    """
    recommendation = flex_request_recommend(flex_request=flex_request, dso=dso)
    if not recommendation.chosen:
        raise ApplicationError("There is nothing to order: no open offer helps this request.",
                               code="nothing_to_order", field="flex_request")
    if expected_cost_eur is not None and recommendation.total_cost_eur != expected_cost_eur:
        raise ApplicationError(
            f"The recommendation changed (now EUR {recommendation.total_cost_eur}); review it again.",
            code="recommendation_changed", field="expected_cost_eur", status_code=409,
        )
    return [
        flex_offer_accept(flex_offer=item.offer, dso=dso, actor=actor, actor_label=actor_label,
                          option_reference=item.option_reference, activation_factor=item.activation_factor)
        for item in recommendation.chosen
    ]
