"""Periodic market housekeeping (Celery beat)."""

from __future__ import annotations

from common.exceptions import TransitionError
from market.models import FlexOffer, FlexRequest
from market.services._base import now
from market.services.offers import flex_offer_expire
from market.services.requests import flex_request_expire


def market_expire_due() -> dict[str, int]:
    """Expire every open request and submitted offer whose expiry time has passed."""
    at = now()
    expired = {"flex_requests": 0, "flex_offers": 0}
    for request in FlexRequest.objects.filter(status=FlexRequest.Status.OPEN, expires_at__lte=at):
        try:
            flex_request_expire(flex_request=request)
            expired["flex_requests"] += 1
        except TransitionError:
            continue  # another worker got there first
    for offer in FlexOffer.objects.filter(status=FlexOffer.Status.SUBMITTED, expires_at__lte=at):
        try:
            flex_offer_expire(flex_offer=offer)
            expired["flex_offers"] += 1
        except TransitionError:
            continue
    return expired
