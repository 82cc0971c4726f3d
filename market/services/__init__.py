"""Writes on the exchange: every USEF state transition is one function here, in one transaction, audited.

One module per message family; the public names are re-exported here (`from market import services`).
Validation codes are listed in market.services._base.
"""

from __future__ import annotations

from market.services._base import IspBand, IspPower, OfferOptionInput
from market.services.clearing import (
    Recommendation,
    RecommendedOption,
    flex_request_order_recommendation,
    flex_request_recommend,
)
from market.services.housekeeping import market_expire_due
from market.services.offers import flex_offer_expire, flex_offer_reject, flex_offer_revoke, flex_offer_submit
from market.services.orders import (
    flex_offer_accept,
    flex_order_direct_create,
    flex_order_mark_dispatched,
    flex_order_mark_settled,
)
from market.services.prognoses import d_prognosis_submit
from market.services.requests import (
    CANCELLABLE as REQUEST_CANCELLABLE_FROM,
)
from market.services.requests import (
    flex_request_cancel,
    flex_request_create,
    flex_request_expire,
    flex_request_open,
    flex_request_revise,
)
from market.services.reservations import flex_contract_create, flex_reservation_update_submit

__all__ = [
    "REQUEST_CANCELLABLE_FROM",
    "IspBand",
    "IspPower",
    "OfferOptionInput",
    "Recommendation",
    "RecommendedOption",
    "d_prognosis_submit",
    "flex_contract_create",
    "flex_offer_accept",
    "flex_offer_expire",
    "flex_offer_reject",
    "flex_offer_revoke",
    "flex_offer_submit",
    "flex_order_direct_create",
    "flex_order_mark_dispatched",
    "flex_order_mark_settled",
    "flex_request_cancel",
    "flex_request_create",
    "flex_request_expire",
    "flex_request_open",
    "flex_request_order_recommendation",
    "flex_request_recommend",
    "flex_request_revise",
    "flex_reservation_update_submit",
    "market_expire_due",
]
