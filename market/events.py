"""Market domain events: what happened on the exchange, published after the transaction commits.

Market knows nothing of its subscribers (our own aggregator is just one). Subscribers connect to
`market_event` and receive `name` and `object_id`; they must be quick (enqueue a task) and idempotent.

Events: flex_request.opened, flex_offer.submitted, flex_order.placed.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

market_event = Signal()

FLEX_REQUEST_OPENED = "flex_request.opened"
FLEX_OFFER_SUBMITTED = "flex_offer.submitted"
FLEX_ORDER_PLACED = "flex_order.placed"


def event_publish(*, name: str, object_id: object) -> None:
    """Send the event once the surrounding transaction commits (never for a rolled-back change)."""

    def send() -> None:
        logger.info("market event %s %s", name, object_id)
        market_event.send(sender=None, name=name, object_id=str(object_id))

    transaction.on_commit(send)
