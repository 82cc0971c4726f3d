"""Our aggregator listens to the market like any participant would: a placed order triggers dispatch."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from market import events


@receiver(events.market_event)
def on_market_event(sender: Any, *, name: str, object_id: str, **kwargs: Any) -> None:
    if name != events.FLEX_ORDER_PLACED:
        return
    from aggregator import selectors
    from aggregator.tasks import dispatch_order_task
    from market.models import FlexOrder

    order = FlexOrder.objects.select_related("aggregator").get(pk=object_id)
    # Orders for aggregators whose portfolio is not run here are theirs to dispatch.
    if selectors.aggregator_has_charge_points(aggregator=order.aggregator):
        dispatch_order_task.delay(str(order.pk))
