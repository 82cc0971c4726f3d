"""The bulk path of the COPY engine: a clean delivery for a market day that has no readings yet becomes that
day's partition of MeterReading (migration 0005) -- loaded without an index, indexed in one sorted pass, attached.

Maintaining the (connection, isp_start) unique index row by row, or a second pass through a staging table, costs
several times the COPY itself; here the file is parsed once, by COPY, straight into the table that keeps it.

The rules (meter_rules) still hold for every row, split between the client and the server:
- Every line must have the clean shape (settlement.ingest.clean_csv: rules 1, 2, 4 and 5 passed); the same pass
  collects the file's EANs. For a large file it runs as a second process while the file streams to COPY.
- PostgreSQL: CHECK constraints during COPY (every row in the first row's market day; kWh within the largest
  limit of the sender's connections); the EANs against the sender's connections (rule 3); the unique index build
  (rule 7: any duplicate fails it); over that index, connections with a lower limit (rule 6). When the
  connections times the day's ISPs equal the rows, every connection has every ISP (no gaps); otherwise one
  GROUP BY finds the spans for the gap check.
Anything else -- one line that does not match, a second day, an unknown EAN, a duplicate, a day with readings
already -- rolls the attempt back to its savepoint and the caller runs the general engine (staging table,
per-row verdicts and rejection report, merge with versions), which gives every row its exact verdict.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import psycopg
from django.db import transaction
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from common import isp as isp_time
from settlement.ingest.clean_csv import file_eans, lines_clean
from settlement.models import MeterReading
from settlement.services.meter_rules import Span

CHUNK = 1 << 20
INDEX_MEMORY = "2GB"  # maintenance_work_mem for the index build: an in-memory sort for a national day
CHECK_APART_BYTES = 8 << 20  # from this size the line check runs in a second process, alongside COPY
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where `python -m settlement...` finds the package


class NotBulk(Exception):
    """The delivery is not a clean new day: the general engine takes it."""


@dataclass
class DayLoad:
    day: date
    received: int
    spans: dict[str, Span]


def partition_name(day: date) -> str:
    return f"{MeterReading._meta.db_table}_p{day:%Y%m%d}"


def _first_row_day(path: Path) -> date | None:
    """The market day of the first data row, if that row is clean."""
    with path.open("rb") as handle:
        handle.readline()
        first = handle.readline()
    if not first.endswith(b"\n"):
        first += b"\n"
    if not lines_clean(first):
        return None
    return isp_time.market_day_of(datetime.fromisoformat(first.split(b",")[1].decode().replace("Z", "+00:00")))


def _day_is_new(cursor: psycopg.Cursor, day: date) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NULL", [partition_name(day)])
    row = cursor.fetchone()
    if not (row and row[0]):
        return False
    cursor.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {} WHERE isp_start >= %s AND isp_start < %s)").format(
        sql.Identifier(MeterReading._meta.db_table)), [isp_time.day_start(day), isp_time.day_end(day)])
    row = cursor.fetchone()
    return bool(row and row[0])


def _check_apart(path: Path) -> subprocess.Popen[bytes] | None:
    """Start the line check of a large file as a second process (its own interpreter: nothing of this one's
    threads, connections or main module); None for a small file or where no process can be started."""
    if path.stat().st_size < CHECK_APART_BYTES:
        return None
    try:
        return subprocess.Popen([sys.executable, "-m", "settlement.ingest.clean_csv", str(path)],  # noqa: S603
                                cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    except OSError:
        return None


def _checked_eans(check: subprocess.Popen[bytes] | None, path: Path) -> set[str] | None:
    """The EANs of a clean file, or None: the second process's answer, or the check run here if there was no
    such process or it did not finish properly."""
    if check is not None:
        output, _ = check.communicate()
        if check.returncode == 1:
            return None
        if check.returncode == 0:
            return {ean.decode() for ean in output.split(b"\n") if ean}
    eans = file_eans(str(path))
    return None if eans is None else {ean.decode() for ean in eans}


def _stream(cursor: psycopg.Cursor, table: sql.Identifier, path: Path,
            progress: Callable[[str, int, int], None] | None, total: int) -> int:
    """COPY the data rows into `table` (the writer is a thread, so reading the file overlaps sending it)."""
    statement = sql.SQL("COPY {} (connection_id, isp_start, kwh_import, kwh_export, quality) "
                        "FROM STDIN (FORMAT csv, FREEZE true)").format(table)
    done = 0
    with path.open("rb") as handle, cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
        done += len(handle.readline())  # the header, checked by the caller
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            done += len(chunk)
            copy.write(chunk)
            if progress is not None:
                progress("copy", done, total)
    return int(cursor.rowcount)


def _eans_check(cursor: psycopg.Cursor, eans: set[str]) -> None:
    """Rule 3: every EAN of the delivery is a connection the sender may deliver for."""
    cursor.execute("SELECT EXISTS (SELECT 1 FROM unnest(%s::text[]) e(ean) LEFT JOIN meter_conn c USING (ean) "
                   "WHERE c.ean IS NULL)", [sorted(eans)])
    unknown = cursor.fetchone()
    if unknown is None or unknown[0]:
        raise NotBulk("an EAN that is not a connection of the sender's")


def _lower_limits_check(cursor: psycopg.Cursor, table: sql.Identifier, top_limit: object) -> None:
    """Rule 6 for connections whose limit is below the one the CHECK enforced, over the new unique index
    (usually there are none)."""
    cursor.execute(sql.SQL("""
        SELECT EXISTS (SELECT 1 FROM meter_conn c JOIN {table} t ON t.connection_id = c.ean
                       WHERE c.limit_kwh < %s AND (t.kwh_import > c.limit_kwh OR t.kwh_export > c.limit_kwh))""")
                   .format(table=table), [top_limit])
    implausible = cursor.fetchone()
    if implausible is None or implausible[0]:
        raise NotBulk("more energy than a connection's limit")


def _spans(cursor: psycopg.Cursor, table: sql.Identifier) -> dict[str, Span]:
    cursor.execute(sql.SQL("SELECT connection_id, min(isp_start), max(isp_start), count(*) FROM {} "
                           "GROUP BY connection_id").format(table))
    return {ean: (first, last, int(n)) for ean, first, last, n in cursor.fetchall()}


def _load(cursor: psycopg.Cursor, *, day: date, batch_id: object, path: Path,
          progress: Callable[[str, int, int], None] | None, total: int) -> DayLoad:
    parent = sql.Identifier(MeterReading._meta.db_table)
    name = partition_name(day)
    table = sql.Identifier(name)
    low, high = sql.Literal(isp_time.day_start(day)), sql.Literal(isp_time.day_end(day))
    cursor.execute("SELECT max(limit_kwh) FROM meter_conn")
    found = cursor.fetchone()
    if found is None or found[0] is None:
        raise NotBulk("the sender has no connections")
    top_limit = found[0]
    # Created in this subtransaction, so COPY can FREEZE: rows are written visible to all and the pages marked
    # all-visible, so the first reader after commit does not rewrite every page to set hint bits.
    cursor.execute(sql.SQL("""
        CREATE TABLE {table} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
                              CONSTRAINT {day_check} CHECK (isp_start >= {low} AND isp_start < {high}),
                              CONSTRAINT {kwh_check} CHECK (kwh_import <= {top} AND kwh_export <= {top}))""").format(
        table=table, parent=parent, day_check=sql.Identifier(f"{name}_day"), low=low, high=high,
        kwh_check=sql.Identifier(f"{name}_load_kwh"), top=sql.Literal(top_limit)))
    cursor.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN batch_id SET DEFAULT {}, ALTER COLUMN version SET DEFAULT 1, "
                           "ALTER COLUMN received_at SET DEFAULT now()").format(table, sql.Literal(str(batch_id))))
    check = _check_apart(path)
    try:
        received = _stream(cursor, table, path, progress, total)
    except BaseException:
        if check is not None:
            check.kill()
            check.communicate()
        raise
    eans = _checked_eans(check, path)
    if eans is None:
        raise NotBulk("a line outside the clean shape")
    _eans_check(cursor, eans)
    if progress is not None:
        progress("index", 0, received)
    cursor.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(INDEX_MEMORY)))
    # The parent's unique index (migration 0005), built here in one sorted pass; ATTACH adopts it. A duplicate
    # (connection, ISP) fails the build.
    cursor.execute(sql.SQL("CREATE UNIQUE INDEX {} ON {} (connection_id, isp_start)").format(
        sql.Identifier(f"{name}_key"), table))
    _lower_limits_check(cursor, table, top_limit)
    complete = len(eans) * isp_time.isp_count(day) == received  # unique and within the day: every ISP there
    spans = {} if complete else _spans(cursor, table)
    cursor.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}, ALTER COLUMN batch_id DROP DEFAULT, "
                           "ALTER COLUMN version DROP DEFAULT, ALTER COLUMN received_at DROP DEFAULT").format(
        table, sql.Identifier(f"{name}_load_kwh")))
    # The day's CHECK constraint proves the partition bound, so ATTACH does not scan the rows again.
    cursor.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
        parent, table, low, high))
    cursor.execute(sql.SQL("ANALYZE {}").format(table))
    return DayLoad(day=day, received=received, spans=spans)


def day_load(cursor: psycopg.Cursor, *, batch_id: object, path: Path,
             progress: Callable[[str, int, int], None] | None = None) -> DayLoad | None:
    """Load `path` as a new day's partition, or return None having changed nothing (the general engine then
    takes the file). Needs the sender's connections in the temp table meter_conn (meter_copy)."""
    day = _first_row_day(path)
    if day is None or not _day_is_new(cursor, day):
        return None
    try:
        with transaction.atomic():
            return _load(cursor, day=day, batch_id=batch_id, path=path, progress=progress,
                         total=path.stat().st_size)
    except (NotBulk, psycopg.errors.DataError, psycopg.errors.IntegrityError, psycopg.errors.QueryCanceled,
            psycopg.errors.InvalidObjectDefinition):  # the last: another partition covers the day
        return None
