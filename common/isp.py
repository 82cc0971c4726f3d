"""ISP (imbalance settlement period) arithmetic: the only place that turns market days into instants.

Market days are calendar days in Europe/Amsterdam, cut into 15-minute ISPs numbered from 1 at local
midnight. ISP n covers [midnight + (n-1) x 15 min, midnight + n x 15 min) in *elapsed* time, as the
Shapeshifter libraries count it, so a day has 96 ISPs, 92 on the spring DST day (2027-03-28) and 100
on the autumn DST day (2026-10-25), and the repeated 02:00-03:00 hour gets distinct ISP numbers.
All instants returned here are UTC.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

MARKET_TZ = ZoneInfo("Europe/Amsterdam")
ISP_MINUTES = 15
ISP = timedelta(minutes=ISP_MINUTES)
ISP_HOURS = ISP_MINUTES / 60  # energy (kWh) = average power (kW) x ISP_HOURS


@dataclass(frozen=True)
class IspSlot:
    """One ISP of a market day."""

    day: date
    index: int  # 1-based
    start: datetime  # UTC
    end: datetime  # UTC

    @property
    def local_start(self) -> datetime:
        return self.start.astimezone(MARKET_TZ)

    @property
    def label(self) -> str:
        """Local wall-clock start, with the UTC offset where the clock repeats (autumn DST)."""
        local = self.local_start
        text = local.strftime("%H:%M")
        if _is_ambiguous(local):
            text += local.strftime(" (%z)")
        return text


def _is_ambiguous(local: datetime) -> bool:
    naive = local.replace(tzinfo=None)
    return naive.replace(tzinfo=MARKET_TZ, fold=0).utcoffset() != naive.replace(tzinfo=MARKET_TZ, fold=1).utcoffset()


@functools.lru_cache(maxsize=4096)
def day_start(day: date) -> datetime:
    """UTC instant of local midnight starting the market day (cached: every ISP check asks, ~100 per offer)."""
    return datetime(day.year, day.month, day.day, tzinfo=MARKET_TZ).astimezone(UTC)


def day_end(day: date) -> datetime:
    """UTC instant of local midnight ending the market day (start of the next day)."""
    return day_start(day + timedelta(days=1))


@functools.lru_cache(maxsize=4096)
def isp_count(day: date) -> int:
    """Number of ISPs in the market day: 96, or 92/100 on DST transition days (cached like day_start)."""
    return int((day_end(day) - day_start(day)) / ISP)


def isp_start(day: date, index: int) -> datetime:
    """UTC start of ISP `index` (1-based) of the market day."""
    _check_index(day, index)
    return day_start(day) + (index - 1) * ISP


def isp_end(day: date, index: int) -> datetime:
    _check_index(day, index)
    return day_start(day) + index * ISP


def isp_slot(day: date, index: int) -> IspSlot:
    return IspSlot(day=day, index=index, start=isp_start(day, index), end=isp_end(day, index))


def isp_slots(day: date) -> list[IspSlot]:
    """Every ISP of the market day, in order."""
    start = day_start(day)
    return [
        IspSlot(day=day, index=i, start=start + (i - 1) * ISP, end=start + i * ISP) for i in range(1, isp_count(day) + 1)
    ]


def market_day_of(instant: datetime) -> date:
    """The market day (Europe/Amsterdam calendar day) an instant falls in."""
    _require_aware(instant)
    return instant.astimezone(MARKET_TZ).date()


def isp_of(instant: datetime) -> tuple[date, int]:
    """(market day, 1-based ISP index) containing the instant."""
    day = market_day_of(instant)
    index = int((instant.astimezone(UTC) - day_start(day)) // ISP) + 1
    return day, index


def floor_to_isp(instant: datetime) -> datetime:
    """Start (UTC) of the ISP containing the instant."""
    day, index = isp_of(instant)
    return isp_start(day, index)


def ceil_to_isp(instant: datetime) -> datetime:
    floored = floor_to_isp(instant)
    return floored if floored == instant.astimezone(UTC) else floored + ISP


def iter_isp_starts(start: datetime, end: datetime) -> Iterator[datetime]:
    """UTC ISP starts from floor(start) up to (excluding) end; may cross market days."""
    _require_aware(start)
    _require_aware(end)
    cursor = floor_to_isp(start)
    end_utc = end.astimezone(UTC)
    while cursor < end_utc:
        yield cursor
        cursor += ISP


def is_isp_aligned(instant: datetime) -> bool:
    return floor_to_isp(instant) == instant.astimezone(UTC)


def _check_index(day: date, index: int) -> None:
    count = isp_count(day)
    if not 1 <= index <= count:
        raise ValueError(f"ISP {index} is outside {day.isoformat()}, which has {count} ISPs")


def _require_aware(instant: datetime) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"naive datetime not allowed: {instant!r}")
