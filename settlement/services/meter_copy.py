"""The PostgreSQL engine of meter data in: COPY into a staging table, then set-based SQL (same rules and
results as the Python engine in meter_data; see meter_rules for the rules).

0. A clean delivery for a market day with no readings yet goes the bulk path (meter_day_load): COPY straight
   into a new table, indexed afterwards and attached as the day's partition of MeterReading. Anything else, or
   that path giving up (it rolls itself back), takes the steps below.
1. COPY the CSV (header checked and skipped) into a TEMP staging table, kWh and quality typed, EAN and ISP start
   as text; a sequence numbers the rows. A file PostgreSQL cannot type (a word where a number belongs, a line
   with the wrong number of fields) is copied again line by line, and split and checked in SQL, so every row
   still gets its own verdict.
2. One INSERT ... SELECT classifies every row (rules 1-6 as CASE over plain string/number tests, joined with
   the sender's connections) and inserts the valid ones, ON CONFLICT DO NOTHING; its RETURNING rows are
   aggregated into per-connection spans (for the gap check) without leaving the server.
3. If every row went in, that was all (a clean delivery of new data: one pass). Otherwise the rejections are
   written by SQL, and if valid rows collided (a duplicate in the file, or readings stored before), the
   duplicates are refused, equal rows counted unchanged and differing ones become new versions: history rows
   for the old values and one UPDATE, all set-based.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from django.db import connection, transaction

from market.models import CongestionPoint, Connection, Participant
from settlement.models import (
    ConnectionCapacity,
    MeterImportBatch,
    MeterImportRejection,
    MeterReading,
    MeterReadingVersion,
)
from settlement.models.meter import DEFAULT_CONNECTION_LIMIT_KW
from settlement.services import meter_day_load
from settlement.services.meter_rules import AWARE_SHAPES, DETAIL, MIN_YEAR, NAIVE_SHAPES, MergeCounts, Reason, Span

CHUNK = 1 << 20


@dataclass
class CopyOutcome:
    received: int
    rejected: int
    counts: MergeCounts
    spans: dict[str, Span] = field(default_factory=dict)
    fallback: bool = False
    stage_s: float = 0.0
    day_load: bool = False


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join("'" + value + "'" for value in values)


# The precise verdict of a row (rules 1-6 of meter_rules, the Python engine's checks one by one). Nested CASEs
# keep every cast behind the tests that make it safe (AND promises no order of evaluation).
_DIGITS = "translate(k.isp, '123456789', '000000000')"
_RANGES = (
    f"substr(k.isp, 6, 2) BETWEEN '01' AND '12' AND substr(k.isp, 9, 2) BETWEEN '01' AND '31' "
    f"AND substr(k.isp, 12, 2) <= '23' AND substr(k.isp, 15, 2) <= '59' AND substr(k.isp, 18, 2) <= '59' "
    f"AND substr(k.isp, 1, 4) >= '{MIN_YEAR}' "
    f"AND (length(k.isp) <> 25 OR (substr(k.isp, 21, 2) <= '14' AND substr(k.isp, 24, 2) <= '59'))"
)
_LAST_DAY = ("substr(k.isp, 9, 2)::int <= extract(day FROM (substr(k.isp, 1, 8) || '01')::date "
             "+ interval '1 month' - interval '1 day')")
ISP_KIND = f"""CASE
    WHEN k.isp IS NULL THEN 'bad'
    WHEN {_DIGITS} IN ({_quoted(AWARE_SHAPES)}, {_quoted(NAIVE_SHAPES)}) THEN
        CASE WHEN NOT ({_RANGES}) THEN 'bad'
             WHEN substr(k.isp, 9, 2) > '28' AND NOT ({_LAST_DAY}) THEN 'bad'
             WHEN {_DIGITS} IN ({_quoted(NAIVE_SHAPES)}) THEN 'naive'
             ELSE 'aware' END
    ELSE 'bad' END"""

_NOT_FINITE = "('NaN', 'Infinity', '-Infinity')"
REASON = f"""CASE
    WHEN k.ean IS NULL OR k.ean = '' OR k.kwh_import IS NULL OR k.kwh_export IS NULL OR k.quality IS NULL
         OR k.quality NOT IN (0, 1) OR k.kwh_import IN {_NOT_FINITE} OR k.kwh_export IN {_NOT_FINITE}
         OR scale(k.kwh_import) > 3 OR scale(k.kwh_export) > 3 OR ({ISP_KIND}) = 'bad' THEN '{Reason.MALFORMED}'
    WHEN ({ISP_KIND}) = 'naive' THEN '{Reason.NAIVE_DATETIME}'
    WHEN c.ean IS NULL THEN '{Reason.UNKNOWN_CONNECTION}'
    WHEN mod(extract(epoch FROM k.isp::timestamptz)::numeric, 900) <> 0 THEN '{Reason.ISP_NOT_ALIGNED}'
    WHEN k.kwh_import < 0 OR k.kwh_export < 0 THEN '{Reason.NEGATIVE_ENERGY}'
    WHEN k.kwh_import > c.limit_kwh OR k.kwh_export > c.limit_kwh THEN '{Reason.IMPLAUSIBLE_ENERGY}'
    END"""

# The cheap verdict, for every row of a delivery: true only for rows the precise verdict accepts. It runs with
# the session time zone at an odd UTC+00:07, so an ISP start without offset lands off the quarter-hour and fails
# here (the precise verdict then names it naive). Shapes by LIKE, one cast; a cast that fails (30 February)
# aborts the statement and the import falls back to the precise verdict for every row.
_AWARE_LIKE = " OR ".join(f"k.isp LIKE '{shape.replace('0', '_')}'" for shape in AWARE_SHAPES)
ODD_TIME_ZONE = "INTERVAL '+00:07' HOUR TO MINUTE"
_SHAPE_OK = (f"({_AWARE_LIKE}) AND k.isp >= '{MIN_YEAR}' COLLATE \"C\" AND substr(k.isp, 12, 2) <= '23' COLLATE \"C\" "
             f"AND CASE WHEN substr(k.isp, 9, 2) <= '28' COLLATE \"C\" THEN true WHEN {_RANGES} THEN {_LAST_DAY} "
             f"ELSE false END")


def _values_ok(row: str, limit: str, start: str) -> str:
    return (f"{row}.quality IN (0, 1) AND {row}.kwh_import >= 0 AND {row}.kwh_export >= 0 "
            f"AND {row}.kwh_import <= {limit} AND {row}.kwh_export <= {limit} AND scale({row}.kwh_import) <= 3 "
            f"AND scale({row}.kwh_export) <= 3 AND mod(date_part('epoch', {start})::bigint, 900) = 0")


VALID_FAST = f"""(CASE WHEN {_SHAPE_OK} THEN {_values_ok("k", "c.limit_kwh", "k.isp::timestamptz")} ELSE false END)"""

# The same verdict for the one-pass insert: the ISP start is cast once (OFFSET 0 keeps the subquery whole), only
# rows of known connections are read (inner join).
FAST_ROWS = f"""
SELECT v.ean, v.ts, v.kwh_import, v.kwh_export, v.quality FROM (
    SELECT k.ean, k.kwh_import, k.kwh_export, k.quality, c.limit_kwh,
           CASE WHEN {_SHAPE_OK} THEN k.isp::timestamptz END AS ts
    FROM meter_stage k JOIN meter_conn c ON c.ean = k.ean OFFSET 0) v
WHERE v.ts IS NOT NULL AND {_values_ok("v", "v.limit_kwh", "v.ts")}"""

STAGED = "meter_stage k LEFT JOIN meter_conn c ON c.ean = k.ean"
PRECISE_ROWS = f"""SELECT k.ean, k.isp::timestamptz AS ts, k.kwh_import, k.kwh_export, k.quality FROM {STAGED}
WHERE ({REASON}) IS NULL"""


def _detail_case() -> str:
    whens = " ".join(f"WHEN '{reason}' THEN %s" for reason in DETAIL)
    return f"CASE reason {whens} END"


def _one(cursor: psycopg.Cursor) -> tuple[Any, ...]:
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the query returned no row")
    return row


def _chunks(path: Path, progress: object, total: int, skip_header: bool = True) -> Iterator[bytes]:
    done = 0
    with path.open("rb") as handle:
        if skip_header:
            done += len(handle.readline())
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            done += len(chunk)
            if callable(progress):
                progress("copy", done, total)
            yield chunk


SCRATCH_TABLES = ("meter_stage", "meter_conn", "meter_lines", "meter_spans", "meter_valid", "meter_dups", "meter_prior")


def _scratch_drop(cursor: psycopg.Cursor) -> None:
    """Temp tables go at commit anyway; dropping them frees the space at once and lets a second import run
    in the same transaction."""
    cursor.execute(f"DROP TABLE IF EXISTS {', '.join(SCRATCH_TABLES)}")
    cursor.execute("DROP SEQUENCE IF EXISTS meter_stage_rows")


def _stage_create(cursor: psycopg.Cursor) -> None:
    cursor.execute("CREATE TEMP SEQUENCE meter_stage_rows")
    cursor.execute("""CREATE TEMP TABLE meter_stage (
        row_number bigint NOT NULL DEFAULT nextval('meter_stage_rows'), ean text, isp text,
        kwh_import numeric, kwh_export numeric, quality smallint) ON COMMIT DROP""")


def _connections_create(cursor: psycopg.Cursor, scope: Participant | None) -> None:
    """meter_conn: the EANs the sender may deliver for, with each one's kWh limit per ISP."""
    limit_sql = f"coalesce(cap.max_power_kw, %s) * {0.25}"
    dso_join = ""
    params: list[object] = [DEFAULT_CONNECTION_LIMIT_KW]
    if scope is not None:
        dso_join = (f"JOIN {CongestionPoint._meta.db_table} p ON p.id = c.congestion_point_id AND p.dso_id = %s")
        params.append(scope.pk)
    cursor.execute(
        f"""CREATE TEMP TABLE meter_conn ON COMMIT DROP AS
            SELECT c.ean::text AS ean, {limit_sql} AS limit_kwh FROM {Connection._meta.db_table} c {dso_join}
            LEFT JOIN {ConnectionCapacity._meta.db_table} cap ON cap.connection_id = c.ean""",
        params,
    )
    cursor.execute("ALTER TABLE meter_conn ADD PRIMARY KEY (ean)")
    cursor.execute("ANALYZE meter_conn")


def _copy_typed(cursor: psycopg.Cursor, path: Path, progress: object, total: int) -> int:
    with cursor.copy("COPY meter_stage (ean, isp, kwh_import, kwh_export, quality) FROM STDIN (FORMAT csv)") as copy:
        for chunk in _chunks(path, progress, total):
            copy.write(chunk)
    return cursor.rowcount


def _copy_lines(cursor: psycopg.Cursor, path: Path, progress: object, total: int) -> int:
    """The careful path: every line as one text value (no quoting, no escapes), split and typed in SQL."""
    cursor.execute("ALTER SEQUENCE meter_stage_rows RESTART WITH 1")
    cursor.execute("""CREATE TEMP TABLE meter_lines (
        row_number bigint NOT NULL DEFAULT nextval('meter_stage_rows'), line text) ON COMMIT DROP""")
    with cursor.copy("COPY meter_lines (line) FROM STDIN (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')") as copy:
        for chunk in _chunks(path, progress, total):
            copy.write(chunk.replace(b"\r", b""))  # mixed line endings: COPY holds to the first line's
    number = r"'^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,4})?\s*$'"
    cursor.execute(f"""
        INSERT INTO meter_stage (row_number, ean, isp, kwh_import, kwh_export, quality)
        SELECT row_number, btrim(f[1], '"'), btrim(f[2], '"'),
               CASE WHEN btrim(f[3], '"') ~ {number} THEN btrim(f[3], '"')::numeric END,
               CASE WHEN btrim(f[4], '"') ~ {number} THEN btrim(f[4], '"')::numeric END,
               CASE WHEN btrim(f[5], ' "') ~ '^[+-]?\\d{{1,4}}$' THEN btrim(f[5], ' "')::smallint END
        FROM (SELECT row_number, string_to_array(line, ',') AS f FROM meter_lines
              WHERE line IS NOT NULL AND btrim(line, E' \\r') <> '') x
        WHERE array_length(f, 1) = 5""")
    cursor.execute("SELECT count(*) FROM meter_lines WHERE line IS NOT NULL AND btrim(line, E' \\r') <> ''")
    return int(_one(cursor)[0])


def _insert_valid(cursor: psycopg.Cursor, batch: MeterImportBatch, rows: str) -> int:
    """Insert the rows `valid` accepts and keep per-connection spans of what went in. A plain INSERT first (a
    delivery of new data, the common case: half the cost of ON CONFLICT); if a key is already stored or twice in
    the delivery it fails at once, and the same INSERT runs again with ON CONFLICT DO NOTHING."""
    try:
        with transaction.atomic():
            return _insert_statement(cursor, batch, rows, on_conflict="")
    except psycopg.errors.UniqueViolation:
        return _insert_statement(cursor, batch, rows,
                                 on_conflict="ON CONFLICT (connection_id, isp_start) DO NOTHING")


def _insert_statement(cursor: psycopg.Cursor, batch: MeterImportBatch, rows: str, *, on_conflict: str) -> int:
    cursor.execute("DROP TABLE IF EXISTS meter_spans")
    cursor.execute(f"""
        CREATE TEMP TABLE meter_spans ON COMMIT DROP AS
        WITH inserted AS (
            INSERT INTO {MeterReading._meta.db_table}
                (connection_id, isp_start, kwh_import, kwh_export, quality, version, batch_id, received_at)
            SELECT r.ean, r.ts, r.kwh_import, r.kwh_export, r.quality, 1, %s, now() FROM ({rows}) r
            {on_conflict}
            RETURNING connection_id, isp_start)
        SELECT connection_id AS ean, min(isp_start) AS first, max(isp_start) AS last, count(*) AS n
        FROM inserted GROUP BY connection_id""", [batch.pk])
    cursor.execute("SELECT coalesce(sum(n), 0) FROM meter_spans")
    return int(_one(cursor)[0])


def copy_import(*, batch: MeterImportBatch, path: Path, scope: Participant | None, progress: object = None
                ) -> CopyOutcome:
    """Run the PostgreSQL engine for one CSV file inside the caller's transaction."""
    total = path.stat().st_size
    started = time.perf_counter()
    fallback = False
    with connection.cursor() as wrapper:
        cursor: psycopg.Cursor = wrapper.cursor  # the psycopg 3 cursor: COPY needs it
        cursor.execute("SHOW TimeZone")
        time_zone = str(_one(cursor)[0])
        _scratch_drop(cursor)
        _connections_create(cursor, scope)
        loaded = meter_day_load.day_load(cursor, batch_id=batch.pk, path=path,
                                          progress=progress if callable(progress) else None)
        if loaded is not None:  # a clean delivery for a new day: it is that day's partition now
            _scratch_drop(cursor)
            return CopyOutcome(received=loaded.received, rejected=0, counts=MergeCounts(accepted=loaded.received),
                               spans=loaded.spans, stage_s=time.perf_counter() - started, day_load=True)
        _stage_create(cursor)
        try:
            with transaction.atomic():
                received = _copy_typed(cursor, path, progress, total)
        except psycopg.errors.DataError:
            fallback = True
            received = _copy_lines(cursor, path, progress, total)
        stage_s = time.perf_counter() - started
        cursor.execute("ANALYZE meter_stage")
        if callable(progress):
            progress("merge", 0, received)
        # One pass for a clean delivery: the cheap verdict inserts what is valid.
        cursor.execute(f"SET LOCAL TIME ZONE {ODD_TIME_ZONE}")
        try:
            with transaction.atomic():
                inserted = _insert_valid(cursor, batch, FAST_ROWS)
            cheap = True
        except psycopg.errors.DataError:  # a shape-true but impossible instant: the precise verdict for all
            cheap = False
            inserted = _insert_valid(cursor, batch, PRECISE_ROWS)
        counts = MergeCounts(accepted=inserted)
        rejected = 0
        if inserted < received:
            try:
                with transaction.atomic():
                    rejected = _rejected_and_collided(cursor, batch, counts, inserted, received, cheap=cheap)
            except psycopg.errors.DataError:  # an impossible instant outside the inserted rows: precise for all
                counts = MergeCounts(accepted=inserted)
                rejected = _rejected_and_collided(cursor, batch, counts, inserted, received, cheap=False)
        cursor.execute("SELECT set_config('TimeZone', %s, true)", [time_zone])
        cursor.execute("SELECT ean, first, last, n FROM meter_spans")
        spans = {ean: (first, last, int(n)) for ean, first, last, n in cursor.fetchall()}
        _scratch_drop(cursor)
    return CopyOutcome(received=received, rejected=rejected, counts=counts, spans=spans, fallback=fallback,
                       stage_s=stage_s)


def _rejected_and_collided(cursor: psycopg.Cursor, batch: MeterImportBatch, counts: MergeCounts, inserted: int,
                           received: int, *, cheap: bool) -> int:
    rejected = _rejections_insert(cursor, batch, cheap=cheap)
    if inserted + rejected < received:
        rejected += _collisions_merge(cursor, batch, counts, cheap=cheap)
    return rejected


def _rejections_insert(cursor: psycopg.Cursor, batch: MeterImportBatch, *, cheap: bool) -> int:
    """The precise verdict, for the rows the cheap one refused (or for all rows), written as rejections."""
    rejection_table = MeterImportRejection._meta.db_table
    candidates = f"({VALID_FAST}) IS NOT TRUE" if cheap else "true"
    cursor.execute(f"""
        INSERT INTO {rejection_table} (batch_id, row_number, connection_ean, isp_start, reason, detail)
        SELECT %s, row_number, left(coalesce(ean, ''), 64), left(coalesce(isp, ''), 64), reason, {_detail_case()}
        FROM (SELECT k.row_number, k.ean, k.isp, {REASON} AS reason FROM {STAGED} WHERE {candidates}) v
        WHERE v.reason IS NOT NULL""", [batch.pk, *DETAIL.values()])
    count = cursor.rowcount
    if _has_lines(cursor):
        # Lines with the wrong number of fields never reached the staging table: malformed as they stand.
        cursor.execute(f"""
            INSERT INTO {rejection_table} (batch_id, row_number, connection_ean, isp_start, reason, detail)
            SELECT %s, l.row_number, left(coalesce(btrim(split_part(l.line, ',', 1), '"'), ''), 64),
                   left(coalesce(btrim(split_part(l.line, ',', 2), '"'), ''), 64), %s, %s
            FROM meter_lines l
            WHERE l.line IS NOT NULL AND btrim(l.line, E' \\r') <> ''
              AND NOT EXISTS (SELECT 1 FROM meter_stage s WHERE s.row_number = l.row_number)""",
                       [batch.pk, Reason.MALFORMED, DETAIL[Reason.MALFORMED]])
        count += cursor.rowcount
    return count


def _has_lines(cursor: psycopg.Cursor) -> bool:
    cursor.execute("SELECT to_regclass('pg_temp.meter_lines') IS NOT NULL")
    return bool(_one(cursor)[0])


def _collisions_merge(cursor: psycopg.Cursor, batch: MeterImportBatch, counts: MergeCounts, *, cheap: bool) -> int:
    """Valid rows that did not go in: duplicates in the file (refused, with the copy that did go in), rows equal
    to the stored reading (unchanged) and corrections (new version, old one to history). Returns duplicates."""
    readings, versions = MeterReading._meta.db_table, MeterReadingVersion._meta.db_table
    verdict = VALID_FAST if cheap else f"({REASON}) IS NULL"
    cursor.execute(f"""
        CREATE TEMP TABLE meter_valid ON COMMIT DROP AS
        SELECT k.row_number, k.ean, k.isp, k.isp::timestamptz AS isp_start, k.kwh_import, k.kwh_export, k.quality
        FROM {STAGED} WHERE {verdict}""")
    cursor.execute("""CREATE TEMP TABLE meter_dups ON COMMIT DROP AS
        SELECT ean, isp_start FROM meter_valid GROUP BY ean, isp_start HAVING count(*) > 1""")
    cursor.execute(f"""
        INSERT INTO {MeterImportRejection._meta.db_table} (batch_id, row_number, connection_ean, isp_start, reason,
                                                           detail)
        SELECT %s, v.row_number, left(v.ean, 64), left(v.isp, 64), %s, %s
        FROM meter_valid v JOIN meter_dups d ON d.ean = v.ean AND d.isp_start = v.isp_start""",
                   [batch.pk, Reason.DUPLICATE_IN_FILE, DETAIL[Reason.DUPLICATE_IN_FILE]])
    duplicates = cursor.rowcount
    cursor.execute(f"""DELETE FROM {readings} m USING meter_dups d
        WHERE m.connection_id = d.ean AND m.isp_start = d.isp_start AND m.batch_id = %s""", [batch.pk])
    cursor.execute("""DELETE FROM meter_valid v USING meter_dups d
        WHERE v.ean = d.ean AND v.isp_start = d.isp_start""")
    cursor.execute(f"""
        CREATE TEMP TABLE meter_prior ON COMMIT DROP AS
        SELECT m.id, v.kwh_import, v.kwh_export, v.quality,
               (m.kwh_import, m.kwh_export, m.quality) IS NOT DISTINCT FROM (v.kwh_import, v.kwh_export, v.quality)
                   AS same
        FROM meter_valid v JOIN {readings} m ON m.connection_id = v.ean AND m.isp_start = v.isp_start
        WHERE m.batch_id IS DISTINCT FROM %s""", [batch.pk])
    cursor.execute(f"""
        INSERT INTO {versions} (connection_id, isp_start, version, kwh_import, kwh_export, quality, batch_id,
                                received_at, superseded_by_id, superseded_at)
        SELECT m.connection_id, m.isp_start, m.version, m.kwh_import, m.kwh_export, m.quality, m.batch_id,
               m.received_at, %s, now()
        FROM meter_prior p JOIN {readings} m ON m.id = p.id WHERE NOT p.same""", [batch.pk])
    cursor.execute(f"""
        UPDATE {readings} m SET kwh_import = p.kwh_import, kwh_export = p.kwh_export, quality = p.quality,
               version = m.version + 1, batch_id = %s, received_at = now()
        FROM meter_prior p WHERE m.id = p.id AND NOT p.same""", [batch.pk])
    cursor.execute("SELECT count(*) FILTER (WHERE same), count(*) FILTER (WHERE NOT same) FROM meter_prior")
    unchanged, corrected = _one(cursor)
    cursor.execute("SELECT count(*) FROM meter_valid")
    valid = int(_one(cursor)[0])
    counts.unchanged, counts.corrected = int(unchanged), int(corrected)
    counts.accepted = valid - counts.unchanged - counts.corrected
    cursor.execute("DROP TABLE meter_spans")
    cursor.execute("""CREATE TEMP TABLE meter_spans ON COMMIT DROP AS
        SELECT ean, min(isp_start) AS first, max(isp_start) AS last, count(*) AS n FROM meter_valid GROUP BY ean""")
    return duplicates
