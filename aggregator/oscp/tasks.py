"""Celery tasks for OSCP (queue: dispatch). Thin: take ids, call aggregator.oscp.services / oscp_dispatch.

Retries: a transient failure leaves the message PENDING with `next_attempt_at` (backoff + full jitter); the send
task schedules itself again for then, and `oscp_outbox_sweep_task` (beat) catches anything a lost task or a
killed worker left behind. With eager Celery (no broker) only the sweep re-sends, so nothing recurses in-process.
"""

from __future__ import annotations

import logging
from datetime import date

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def oscp_message_send_task(message_id: str) -> str:
    from aggregator.oscp.services import message_send
    from common import time as clock
    from config.celery import app

    message = message_send(message_id=message_id)
    if message.status == "PENDING" and message.next_attempt_at and not app.conf.task_always_eager:
        countdown = max(0.0, (message.next_attempt_at - clock.now()).total_seconds())
        oscp_message_send_task.apply_async((message_id,), countdown=countdown)
    return str(message.status)


@shared_task(ignore_result=True)
def oscp_outbox_sweep_task() -> int:
    from aggregator.oscp.services import outbox_sweep

    return outbox_sweep()


@shared_task(ignore_result=True)
def oscp_heartbeats_task() -> dict[str, int]:
    """Beat: send due heartbeats and alert on peers whose heartbeats stopped."""
    from aggregator.oscp.services import heartbeats_due_send, peers_offline_check

    return {"heartbeats_queued": heartbeats_due_send(), "peers_offline": len(peers_offline_check())}


@shared_task(ignore_result=True)
def oscp_day_ahead_forecasts_task(day: str | None = None) -> int:
    """Beat, daily: tomorrow's Flexpower-profile forecasts (with any orders and grants) for every group."""
    from aggregator.oscp_dispatch import day_ahead_forecasts_queue

    return day_ahead_forecasts_queue(day=date.fromisoformat(day) if day else None)
