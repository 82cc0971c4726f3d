"""Meter data in: every format becomes rows, every row is validated, valid rows are stored as versions.

- Per-row rejections, never all-or-nothing: a delivery stores its valid rows and lists every refused row with
  a reason (settlement.services.meter_rules), plus the gaps left inside a connection's series.
- Idempotent: a delivery is hashed (SHA-256 of its bytes, or of its rows for API calls); the same content from
  the same sender again replays the first batch and changes nothing. A row equal to the stored reading is
  counted `unchanged`.
- Corrections: a row whose values differ from the stored reading becomes the new version (MeterReading keeps
  the latest, version + 1); the value it replaces moves to MeterReadingVersion with the batch that replaced it.
- Two engines with the same rules and the same results: `python` (any database; small deliveries, SQLite) and
  `copy` (PostgreSQL: COPY into a staging table, then set-based SQL; settlement.services.meter_copy).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import connection as db_connection
from django.db import transaction
from django.db.models import F

from common import isp as isp_time
from common import time as clock
from common.audit import audit_record
from common.exceptions import ApplicationError
from market.models import Connection, Participant
from settlement.ingest import RawRow
from settlement.ingest.csv_format import csv_rows, header_check
from settlement.models import (
    ConnectionCapacity,
    MeterImportBatch,
    MeterImportRejection,
    MeterReading,
    MeterReadingVersion,
)
from settlement.models.meter import DEFAULT_CONNECTION_LIMIT_KW
from settlement.services.meter_rules import (
    DETAIL,
    CheckedRow,
    MergeCounts,
    Reason,
    Span,
    isp_text_shape,
    kwh_parse,
    quality_parse,
)

ISP_HOURS = Decimal(isp_time.ISP_MINUTES) / Decimal(60)
ADVISORY_LOCK = 0x6D65746572  # "meter": one import at a time on PostgreSQL (corrections must not interleave)
TEXT_LIMIT = 64
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class MeterReadingRow:
    """A typed reading (sandbox meters, tests): imported through the same rules as any delivery."""

    connection_ean: str
    isp_start: datetime
    kwh_import: Decimal
    kwh_export: Decimal = Decimal("0")
    quality: int = MeterReading.Quality.MEASURED


@dataclass(frozen=True)
class ImportResult:
    batch: MeterImportBatch
    replayed: bool = False

    @property
    def received(self) -> int:
        return self.batch.received

    @property
    def accepted(self) -> int:
        return self.batch.accepted

    @property
    def corrected(self) -> int:
        return self.batch.corrected

    @property
    def unchanged(self) -> int:
        return self.batch.unchanged

    @property
    def rejected(self) -> int:
        return self.batch.rejected

    @property
    def gaps(self) -> int:
        return self.batch.gaps

    @property
    def stored(self) -> int:
        """Readings written by this delivery (new + corrected)."""
        return self.batch.accepted + self.batch.corrected

    def rejections(self) -> list[MeterImportRejection]:
        """Refused rows by row number, then the gaps."""
        return list(self.batch.rejections.order_by(F("row_number").asc(nulls_last=True), "id"))


# --- shared steps ------------------------------------------------------------------------------------------


def connection_limits_kwh(*, eans: Iterable[str] | None, scope: Participant | None) -> dict[str, Decimal]:
    """EAN -> most kWh one ISP can carry, for the connections the sender may deliver for (all for operators,
    a DSO's own connections for a DSO)."""
    connections = Connection.objects.all()
    if scope is not None:
        connections = connections.filter(congestion_point__dso=scope)
    if eans is not None:
        connections = connections.filter(ean__in=set(eans))
    capacity = dict(ConnectionCapacity.objects.filter(connection__in=connections)
                    .values_list("connection_id", "max_power_kw"))
    return {ean: capacity.get(ean, DEFAULT_CONNECTION_LIMIT_KW) * ISP_HOURS
            for ean in connections.values_list("ean", flat=True)}


def _rejection(batch: MeterImportBatch, raw: RawRow, reason: str) -> MeterImportRejection:
    return MeterImportRejection(batch=batch, row_number=raw.row_number, connection_ean=raw.connection_ean[:TEXT_LIMIT],
                                isp_start=raw.isp_start[:TEXT_LIMIT], reason=reason, detail=DETAIL[reason])


def gaps_find(*, batch: MeterImportBatch, spans: dict[str, Span]) -> list[MeterImportRejection]:
    """Runs of ISPs inside each connection's delivered span that neither the delivery nor the store holds."""
    candidates = {ean: span for ean, span in spans.items() if span[2] < (span[1] - span[0]) / isp_time.ISP + 1}
    found: list[MeterImportRejection] = []
    eans = sorted(candidates)
    for offset in range(0, len(eans), 1000):
        chunk = eans[offset:offset + 1000]
        low = min(candidates[ean][0] for ean in chunk)
        high = max(candidates[ean][1] for ean in chunk)
        stored: dict[str, set[datetime]] = {}
        for ean, start in MeterReading.objects.filter(connection_id__in=chunk, isp_start__gte=low,
                                                      isp_start__lte=high).values_list("connection_id", "isp_start"):
            stored.setdefault(ean, set()).add(start)
        for ean in chunk:
            first, last, _ = candidates[ean]
            have = stored.get(ean, set())
            run: list[datetime] = []
            cursor = first
            while cursor <= last + isp_time.ISP:
                if cursor <= last and cursor not in have:
                    run.append(cursor)
                elif run:
                    end = run[-1] + isp_time.ISP
                    found.append(MeterImportRejection(
                        batch=batch, row_number=None, connection_ean=ean, isp_start=run[0].isoformat(),
                        reason=Reason.GAP,
                        detail=f"{len(run)} ISP{'s' if len(run) > 1 else ''} missing from {run[0].isoformat()} "
                               f"to {end.isoformat()}.",
                    ))
                    run = []
                cursor += isp_time.ISP
    return found


def _replay(*, content_hash: str, source_format: str, submitted_by: Participant | None) -> MeterImportBatch | None:
    return (MeterImportBatch.objects.filter(content_hash=content_hash, source_format=source_format,
                                            submitted_by=submitted_by).order_by("created_at").first())


def _batch_finish(*, batch: MeterImportBatch, rejections: list[MeterImportRejection], gaps: list[MeterImportRejection],
                  counts: MergeCounts, received: int, rejected: int, started: float, actor: Any,
                  actor_label: str) -> None:
    MeterImportRejection.objects.bulk_create([*rejections, *gaps], batch_size=5000)
    batch.received = received
    batch.accepted, batch.corrected, batch.unchanged = counts.accepted, counts.corrected, counts.unchanged
    batch.rejected = rejected
    batch.gaps = len(gaps)
    batch.duration_ms = int((time.perf_counter() - started) * 1000)
    batch.save()
    audit_record(obj=batch, action="meter_data.imported", actor=actor, actor_label=actor_label, after={
        "format": batch.source_format, "source": batch.source_name, "received": received,
        "accepted": counts.accepted, "corrected": counts.corrected, "unchanged": counts.unchanged,
        "rejected": rejected, "gaps": len(gaps), "engine": batch.engine,
    })


def _lock_imports() -> None:
    if db_connection.vendor == "postgresql":
        with db_connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK])


# --- the Python engine ---------------------------------------------------------------------------------------


def _rows_check(*, batch: MeterImportBatch, rows: Iterable[RawRow], scope: Participant | None,
                progress: Progress | None) -> tuple[list[CheckedRow], list[MeterImportRejection], int]:
    """Rules 1-7 over the rows: (valid rows, rejections, rows received)."""
    rejections: list[MeterImportRejection] = []
    parsed: list[tuple[RawRow, CheckedRow]] = []
    received = 0
    for raw in rows:
        received += 1
        if progress and received % 100_000 == 0:
            progress("rows", received, 0)
        ean, isp_text = raw.connection_ean, raw.isp_start
        kwh_import, kwh_export = kwh_parse(raw.kwh_import), kwh_parse(raw.kwh_export)
        quality = quality_parse(raw.quality)
        shape = isp_text_shape(isp_text)
        if not ean or kwh_import is None or kwh_export is None or quality is None or shape == "bad":
            rejections.append(_rejection(batch, raw, Reason.MALFORMED))
        elif shape == "naive":
            rejections.append(_rejection(batch, raw, Reason.NAIVE_DATETIME))
        else:
            start = datetime.fromisoformat(isp_text).astimezone(UTC)
            parsed.append((raw, CheckedRow(raw.row_number, ean, start, kwh_import, kwh_export, quality)))
    limits = connection_limits_kwh(eans={row.connection_ean for _, row in parsed}, scope=scope)
    valid: list[tuple[RawRow, CheckedRow]] = []
    for raw, row in parsed:
        limit = limits.get(row.connection_ean)
        if limit is None:
            rejections.append(_rejection(batch, raw, Reason.UNKNOWN_CONNECTION))
        elif int(row.isp_start.timestamp()) % (isp_time.ISP_MINUTES * 60):
            rejections.append(_rejection(batch, raw, Reason.ISP_NOT_ALIGNED))
        elif row.kwh_import < 0 or row.kwh_export < 0:
            rejections.append(_rejection(batch, raw, Reason.NEGATIVE_ENERGY))
        elif row.kwh_import > limit or row.kwh_export > limit:
            rejections.append(_rejection(batch, raw, Reason.IMPLAUSIBLE_ENERGY))
        else:
            valid.append((raw, row))
    seen = Counter((row.connection_ean, row.isp_start) for _, row in valid)
    unique: list[CheckedRow] = []
    for raw, row in valid:
        if seen[(row.connection_ean, row.isp_start)] > 1:
            rejections.append(_rejection(batch, raw, Reason.DUPLICATE_IN_FILE))
        else:
            unique.append(row)
    rejections.sort(key=lambda rejection: rejection.row_number or 0)
    return unique, rejections, received


def _rows_merge(*, batch: MeterImportBatch, rows: list[CheckedRow], now: datetime) -> MergeCounts:
    """Store new readings, version corrected ones, count the unchanged."""
    counts = MergeCounts()
    stored: dict[tuple[str, datetime], MeterReading] = {}
    by_connection: dict[str, list[datetime]] = {}
    for row in rows:
        by_connection.setdefault(row.connection_ean, []).append(row.isp_start)
    eans = sorted(by_connection)
    for offset in range(0, len(eans), 500):
        chunk = eans[offset:offset + 500]
        low = min(min(by_connection[ean]) for ean in chunk)
        high = max(max(by_connection[ean]) for ean in chunk)
        for reading in MeterReading.objects.filter(connection_id__in=chunk, isp_start__gte=low, isp_start__lte=high):
            stored[(reading.connection_id, reading.isp_start)] = reading
    new: list[MeterReading] = []
    history: list[MeterReadingVersion] = []
    changed: list[MeterReading] = []
    for row in rows:
        current = stored.get((row.connection_ean, row.isp_start))
        if current is None:
            new.append(MeterReading(connection_id=row.connection_ean, isp_start=row.isp_start,
                                    kwh_import=row.kwh_import, kwh_export=row.kwh_export, quality=row.quality,
                                    version=1, batch=batch, received_at=now))
        elif (current.kwh_import, current.kwh_export, current.quality) == (row.kwh_import, row.kwh_export,
                                                                           row.quality):
            counts.unchanged += 1
        else:
            history.append(MeterReadingVersion(
                connection_id=current.connection_id, isp_start=current.isp_start, version=current.version,
                kwh_import=current.kwh_import, kwh_export=current.kwh_export, quality=current.quality,
                batch_id=current.batch_id, received_at=current.received_at, superseded_by=batch, superseded_at=now,
            ))
            current.kwh_import, current.kwh_export, current.quality = row.kwh_import, row.kwh_export, row.quality
            current.version += 1
            current.batch = batch
            current.received_at = now
            changed.append(current)
    MeterReading.objects.bulk_create(new, batch_size=5000)
    # received_at is auto_now_add: bulk_create set it to the insert time, which is `now` within this transaction.
    MeterReadingVersion.objects.bulk_create(history, batch_size=5000)
    if db_connection.vendor == "postgresql":
        _readings_update_by_key(changed)
    else:
        MeterReading.objects.bulk_update(changed, ["kwh_import", "kwh_export", "quality", "version", "batch",
                                                   "received_at"], batch_size=2000)
    counts.accepted, counts.corrected = len(new), len(changed)
    return counts


def _readings_update_by_key(changed: list[MeterReading]) -> None:
    """The corrected readings, found by (connection, isp_start): on PostgreSQL MeterReading is partitioned by day
    and id has no index of its own (migration 0005), so an update by id would read every partition."""
    table = MeterReading._meta.db_table
    with db_connection.cursor() as cursor:
        for offset in range(0, len(changed), 2000):
            part = changed[offset:offset + 2000]
            cursor.execute(
                f"""UPDATE {table} m SET kwh_import = v.kwh_import, kwh_export = v.kwh_export, quality = v.quality,
                           version = v.version, batch_id = v.batch_id, received_at = v.received_at
                    FROM unnest(%s::varchar[], %s::timestamptz[], %s::numeric[], %s::numeric[], %s::smallint[],
                                %s::integer[], %s::uuid[], %s::timestamptz[])
                         AS v(ean, isp_start, kwh_import, kwh_export, quality, version, batch_id, received_at)
                    WHERE m.connection_id = v.ean AND m.isp_start = v.isp_start""",  # noqa: S608 (table name)
                [[r.connection_id for r in part], [r.isp_start for r in part], [r.kwh_import for r in part],
                 [r.kwh_export for r in part], [r.quality for r in part], [r.version for r in part],
                 [r.batch_id for r in part], [r.received_at for r in part]],
            )


def _spans(rows: Iterable[CheckedRow]) -> dict[str, Span]:
    spans: dict[str, Span] = {}
    for row in rows:
        first, last, count = spans.get(row.connection_ean, (row.isp_start, row.isp_start, 0))
        spans[row.connection_ean] = (min(first, row.isp_start), max(last, row.isp_start), count + 1)
    return spans


def _python_engine(*, batch: MeterImportBatch, rows: Iterable[RawRow], scope: Participant | None,
                   progress: Progress | None, started: float, actor: Any, actor_label: str) -> None:
    batch.engine = "python"
    valid, rejections, received = _rows_check(batch=batch, rows=rows, scope=scope, progress=progress)
    counts = _rows_merge(batch=batch, rows=valid, now=clock.now())
    gaps = gaps_find(batch=batch, spans=_spans(valid))
    _batch_finish(batch=batch, rejections=rejections, gaps=gaps, counts=counts, received=received,
                  rejected=len(rejections), started=started, actor=actor, actor_label=actor_label)


# --- entry points ------------------------------------------------------------------------------------------


def rows_content_hash(rows: Iterable[RawRow]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row.connection_ean, row.isp_start, row.kwh_import, row.kwh_export,
                                  row.quality]).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def meter_rows_import(
    *,
    rows: list[RawRow],
    source_format: str,
    source_name: str = "",
    submitted_by: Participant | None = None,
    content_hash: str | None = None,
    actor: Any = None,
    actor_label: str = "",
    progress: Progress | None = None,
) -> ImportResult:
    """Import delivered rows with the Python engine. `submitted_by` limits the connections to that DSO's."""
    digest = content_hash or rows_content_hash(rows)
    started = time.perf_counter()
    with transaction.atomic():
        _lock_imports()
        earlier = _replay(content_hash=digest, source_format=source_format, submitted_by=submitted_by)
        if earlier is not None:
            return ImportResult(batch=earlier, replayed=True)
        batch = MeterImportBatch.objects.create(submitted_by=submitted_by, source_format=source_format,
                                                source_name=source_name[:255], content_hash=digest)
        _python_engine(batch=batch, rows=rows, scope=submitted_by, progress=progress, started=started,
                       actor=actor, actor_label=actor_label)
    return ImportResult(batch=batch)


def file_content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def meter_csv_import(
    *,
    path: Path,
    submitted_by: Participant | None = None,
    engine: str = "auto",
    actor: Any = None,
    actor_label: str = "",
    progress: Progress | None = None,
) -> ImportResult:
    """Import a meter-data CSV file (README: "Meter data in"). engine: auto (copy on PostgreSQL, else python),
    copy or python."""
    if engine == "auto":
        engine = "copy" if db_connection.vendor == "postgresql" else "python"
    if engine == "copy" and db_connection.vendor != "postgresql":
        raise ApplicationError("The copy engine needs PostgreSQL.", code="engine_unavailable", field="engine")
    with path.open("r", encoding="utf-8", newline="") as handle:
        header_check(handle.readline())
    digest = file_content_hash(path)
    started = time.perf_counter()
    with transaction.atomic():
        _lock_imports()
        earlier = _replay(content_hash=digest, source_format=MeterImportBatch.Format.CSV, submitted_by=submitted_by)
        if earlier is not None:
            return ImportResult(batch=earlier, replayed=True)
        batch = MeterImportBatch.objects.create(submitted_by=submitted_by, source_format=MeterImportBatch.Format.CSV,
                                                source_name=path.name[:255], content_hash=digest)
        if engine == "copy":
            from settlement.services import meter_copy

            batch.engine = "copy"
            outcome = meter_copy.copy_import(batch=batch, path=path, scope=submitted_by, progress=progress)
            gaps = gaps_find(batch=batch, spans=outcome.spans)
            _batch_finish(batch=batch, rejections=[], gaps=gaps, counts=outcome.counts, received=outcome.received,
                          rejected=outcome.rejected, started=started, actor=actor, actor_label=actor_label)
        else:
            with path.open("r", encoding="utf-8-sig", newline="") as handle:
                _python_engine(batch=batch, rows=csv_rows(handle), scope=submitted_by, progress=progress,
                               started=started, actor=actor, actor_label=actor_label)
    return ImportResult(batch=batch)


def meter_readings_import(*, rows: Iterable[MeterReadingRow], submitted_by: Participant | None = None,
                          source_name: str = "") -> ImportResult:
    """Typed readings in (sandbox meters, tests), through the same rules as any delivery."""
    raw = [RawRow(number, row.connection_ean, row.isp_start.isoformat(), str(row.kwh_import), str(row.kwh_export),
                  str(int(row.quality))) for number, row in enumerate(rows, start=1)]
    return meter_rows_import(rows=raw, source_format=MeterImportBatch.Format.ROWS, source_name=source_name,
                             submitted_by=submitted_by)


def meter_file_import(
    *,
    path: Path,
    file_format: str,
    connection_ean: str = "",
    dsmr_specification: str | None = None,
    submitted_by: Participant | None = None,
    engine: str = "auto",
    actor: Any = None,
    actor_label: str = "",
    progress: Progress | None = None,
) -> ImportResult:
    """Import a delivery file: csv (README "Meter data in"), uftp (a UFTP Metering message) or dsmr (P1 telegrams
    of one meter; `connection_ean` names the connection it reads)."""
    from settlement.ingest import dsmr, uftp_metering

    if file_format == MeterImportBatch.Format.CSV:
        return meter_csv_import(path=path, submitted_by=submitted_by, engine=engine, actor=actor,
                                actor_label=actor_label, progress=progress)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if file_format == MeterImportBatch.Format.UFTP:
        message = uftp_metering.metering_parse(data)
        return meter_rows_import(rows=message.rows, source_format=file_format, content_hash=digest,
                                 source_name=f"{path.name} (Metering {message.message_id} r{message.revision})",
                                 submitted_by=submitted_by, actor=actor, actor_label=actor_label, progress=progress)
    if file_format == MeterImportBatch.Format.DSMR:
        rows = dsmr.dsmr_rows(data, connection_ean=connection_ean, specification=dsmr_specification)
        return meter_rows_import(rows=rows, source_format=file_format, content_hash=digest,
                                 source_name=f"{path.name} ({connection_ean})", submitted_by=submitted_by,
                                 actor=actor, actor_label=actor_label, progress=progress)
    raise ApplicationError(f"Unknown format {file_format!r}: csv, uftp or dsmr.", code="unknown_format",
                           field="format")
