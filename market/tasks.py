"""Celery tasks of the market (queue: market)."""

from __future__ import annotations

from celery import shared_task


@shared_task
def expire_due_task() -> dict[str, int]:
    """Every 5 minutes (beat): expire requests and offers past their expiry time."""
    from market.services import market_expire_due

    return market_expire_due()


@shared_task
def idempotency_purge_task() -> int:
    """Hourly (beat): forget Idempotency-Key records older than IDEMPOTENCY_RETENTION_HOURS."""
    from common.idempotency import idempotency_purge

    return idempotency_purge()
