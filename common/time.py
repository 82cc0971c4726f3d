"""The one source of "now" (patchable in tests) and timezone helpers."""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils import timezone


def now() -> datetime:
    """Current time, timezone-aware UTC."""
    return timezone.now()


def ensure_aware(value: datetime) -> datetime:
    """Reject naive datetimes: every time in this project carries an offset."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime not allowed: {value!r}")
    return value.astimezone(UTC)
