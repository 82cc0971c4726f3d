"""Meter data in: validated readings stored idempotently."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction

from common import isp as isp_time
from common.exceptions import ApplicationError
from market.models import Connection
from settlement.models import MeterReading


@dataclass(frozen=True)
class MeterReadingRow:
    connection_ean: str
    isp_start: datetime
    kwh_import: Decimal
    kwh_export: Decimal = Decimal("0")
    quality: int = MeterReading.Quality.MEASURED


@dataclass(frozen=True)
class ImportResult:
    received: int
    stored: int
    duplicates: int


def meter_readings_import(*, rows: Iterable[MeterReadingRow], batch_size: int = 5000) -> ImportResult:
    """Store 15-minute readings; unknown connections, unaligned ISPs or negative values refuse the batch.

    Re-sending a reading for an ISP already stored changes nothing (counted as duplicate). Bulk inserts,
    in one transaction.
    """
    materialised = list(rows)
    known = set(
        Connection.objects.filter(ean__in={row.connection_ean for row in materialised}).values_list("ean", flat=True)
    )
    objects: list[MeterReading] = []
    for position, row in enumerate(materialised):
        if row.connection_ean not in known:
            raise ApplicationError(f"Unknown connection {row.connection_ean}.", code="unknown_connection",
                                   field=f"rows[{position}].connection_ean")
        if row.isp_start.tzinfo is None or row.isp_start.utcoffset() is None:
            raise ApplicationError("isp_start needs a UTC offset.", code="naive_datetime",
                                   field=f"rows[{position}].isp_start")
        if not isp_time.is_isp_aligned(row.isp_start):
            raise ApplicationError("isp_start must be on a quarter-hour.", code="isp_not_aligned",
                                   field=f"rows[{position}].isp_start")
        for name in ("kwh_import", "kwh_export"):
            if getattr(row, name) < 0:
                raise ApplicationError("Energy values are non-negative.", code="negative_energy",
                                       field=f"rows[{position}].{name}")
        objects.append(MeterReading(connection_id=row.connection_ean, isp_start=row.isp_start,
                                    kwh_import=row.kwh_import, kwh_export=row.kwh_export, quality=row.quality))
    # New = the batch's distinct (connection, ISP) keys not stored yet: asked of the batch's own keys, not by
    # counting the whole table around the insert (which grows with every day of every connection).
    keys = {(reading.connection_id, reading.isp_start) for reading in objects}
    with transaction.atomic():
        existing = set(
            MeterReading.objects.filter(
                connection_id__in={key[0] for key in keys}, isp_start__in={key[1] for key in keys}
            ).values_list("connection_id", "isp_start")
        ) if keys else set()
        MeterReading.objects.bulk_create(objects, batch_size=batch_size, ignore_conflicts=True)
    stored = len(keys - existing)
    return ImportResult(received=len(materialised), stored=stored, duplicates=len(materialised) - stored)
