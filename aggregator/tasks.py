"""Celery tasks of the aggregator (queue: dispatch). Thin: load by id, call a service; retries live here."""

from __future__ import annotations

import logging
import random
import uuid

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, max_retries=3)
def dispatch_order_task(self, flex_order_id: str) -> dict[str, object] | None:  # type: ignore[no-untyped-def]
    """Compute and queue the schedule for a placed order (idempotent: a dispatched order is skipped)."""
    from aggregator.services import flex_order_dispatch
    from common.exceptions import TransitionError
    from market.models import FlexOrder

    order = FlexOrder.objects.get(pk=flex_order_id)
    try:
        summary = flex_order_dispatch(flex_order=order)
    except TransitionError:
        logger.info("order %s already dispatched", order.order_reference)
        return None
    return summary.__dict__


@shared_task(bind=True, acks_late=True, max_retries=8)
def send_order_commands_task(self, flex_order_id: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Send every PENDING command of an order; retry the task with exponential backoff + jitter while some
    command is still PENDING after a transient failure."""
    from aggregator.models import ChargingProfileCommand
    from aggregator.services import charging_profile_command_send

    pending = list(
        ChargingProfileCommand.objects.filter(flex_order_id=uuid.UUID(flex_order_id),
                                              status=ChargingProfileCommand.Status.PENDING)
        .order_by("created_at")
        .values_list("pk", flat=True)
    )
    counts: dict[str, int] = {}
    for command_id in pending:
        command = charging_profile_command_send(command_id=command_id)
        counts[command.status] = counts.get(command.status, 0) + 1
    if counts.get(ChargingProfileCommand.Status.PENDING):
        countdown = min(600, 2 ** self.request.retries * 5) * (0.5 + random.random())  # noqa: S311
        raise self.retry(countdown=countdown)
    return counts


@shared_task(bind=True, acks_late=True, max_retries=3)
def reoptimise_congestion_point_task(  # type: ignore[no-untyped-def]
    self, congestion_point_id: str, aggregator_id: str, reason: str
) -> dict[str, object]:
    """Re-plan one congestion point's sessions from now on (a session arrived or ended, a driver boosted, a
    profile was rejected). Safe to repeat: each run plans from the current state and time."""
    from aggregator.services import congestion_point_reoptimise
    from market.models import CongestionPoint, Participant

    congestion_point = CongestionPoint.objects.get(pk=congestion_point_id)
    aggregator = Participant.objects.get(pk=aggregator_id)
    return congestion_point_reoptimise(aggregator=aggregator, congestion_point=congestion_point,
                                       reason=reason).__dict__
