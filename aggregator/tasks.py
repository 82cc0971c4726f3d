"""Celery tasks of the aggregator (queue: dispatch). Thin: load by id, call a service; retries live here."""

from __future__ import annotations

import logging
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


@shared_task(acks_late=True)
def send_commands_task(command_ids: list[str]) -> dict[str, int]:
    """Send a batch of outbox commands (aggregator.delivery.send_batch). Acked late and idempotent: a batch
    redelivered after a worker crash only claims what is still PENDING; retries re-schedule themselves."""
    from aggregator.delivery import send_batch

    return send_batch(command_ids)


@shared_task(acks_late=True)
def send_order_commands_task(flex_order_id: str) -> dict[str, int]:
    """Send every PENDING command of an order (operators and tests; dispatch itself queues send_commands_task)."""
    from aggregator.delivery import send_batch
    from aggregator.models import ChargingProfileCommand

    pending = [str(pk) for pk in ChargingProfileCommand.objects.filter(
        flex_order_id=uuid.UUID(flex_order_id), status=ChargingProfileCommand.Status.PENDING,
    ).order_by("created_at").values_list("pk", flat=True)]
    return send_batch(pending)


@shared_task
def dispatch_sweep_task() -> dict[str, int]:
    """Beat, every DISPATCH_SWEEP_INTERVAL_S: reclaim commands of lost workers, re-queue due retries, time out
    accepted commands whose result never came."""
    from aggregator.delivery import sweep

    return sweep().__dict__


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
