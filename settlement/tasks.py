"""Celery tasks of settlement (queue: settlement)."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task


@shared_task(acks_late=True)
def settle_previous_day_task() -> dict[str, object]:
    """Nightly (02:00 Europe/Amsterdam, CELERY_BEAT_SCHEDULE): settle yesterday's orders, earlier days' orders
    still waiting for meter data, and days whose meter data changed since they were settled. Idempotent: a run
    that finds nothing new issues no statement version."""
    from common.isp import market_day_of
    from common.time import now
    from settlement.services import settle_due

    day = market_day_of(now()) - timedelta(days=1)
    results = settle_due(up_to=day)
    return {
        "period": day.isoformat(),
        "statements": sum(1 for r in results if r.issued),
        "settled_orders": sum(r.settled_orders for r in results),
        "waiting_orders": sum(len(r.waiting_orders) for r in results),
    }
