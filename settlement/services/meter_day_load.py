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
A large file (PIECES_FROM_BYTES on) is loaded in pieces, one per core: the sender's connections are split into EAN
ranges of about equal size; one thread reads the file, checks every line's shape and sends each connection's run
of lines to its range's piece; each piece is COPYed (FREEZE), indexed and analysed by a database session of its
own, all at once, and they commit together. The day's partition is then partitioned by connection over those
tables (a CHECK on each piece's EAN range proves its bound: nothing is scanned again). A raw COPY keeps one core
busy; this keeps them all busy. Should the database order EANs otherwise than the router (a piece's range CHECK
fails), the day is loaded again as one table.
Anything else -- one line that does not match, a second day, an unknown EAN, a duplicate, a day with readings
already -- rolls the attempt back to its savepoint and the caller runs the general engine (staging table,
per-row verdicts and rejection report, merge with versions), which gives every row its exact verdict.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg
from django.db import connection as db_connection
from django.db import transaction
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from common import isp as isp_time
from settlement.ingest.clean_csv import clean_runs, file_eans, line_blocks, lines_clean
from settlement.models import MeterReading
from settlement.services.meter_rules import Span

CHUNK = 1 << 20
INDEX_MEMORY = "2GB"  # maintenance_work_mem for the index build: an in-memory sort for a national day
CHECK_APART_BYTES = 8 << 20  # from this size the line check runs in a second process, alongside COPY
PIECES_FROM_BYTES = 64 << 20  # from this size the day is loaded in pieces, one database session per core
PIECE_INDEX_MEMORY = "1GB"  # maintenance_work_mem of each piece's index build (pieces build at the same time)
PIECES_MAX = 8
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


def _day_check(day_name: str, day: date) -> sql.Composable:
    """The day's CHECK. A piece carries it under the day table's name too: ATTACH wants a partition to have its
    parent's CHECK constraints, and the planner proves the day's bound from it without a scan."""
    return sql.SQL("CONSTRAINT {} CHECK (isp_start >= {} AND isp_start < {})").format(
        sql.Identifier(f"{day_name}_day"), sql.Literal(isp_time.day_start(day)), sql.Literal(isp_time.day_end(day)))


def _ean_check(name: str, low: str | None, high: str | None) -> sql.Composable:
    """A piece's EAN range, in the form of the bound it gets as a partition (so ATTACH need not scan it)."""
    terms = []
    if low is not None:
        terms.append(sql.SQL("connection_id >= {}").format(sql.Literal(low)))
    if high is not None:
        terms.append(sql.SQL("connection_id < {}").format(sql.Literal(high)))
    return sql.SQL("CONSTRAINT {} CHECK ({})").format(sql.Identifier(f"{name}_eans"), sql.SQL(" AND ").join(terms))


def _load_table_create(cursor: psycopg.Cursor, *, name: str, day_name: str, day: date, top_limit: object,
                       batch_id: object, extra: list[sql.Composable]) -> None:
    """A table to COPY the day (or a piece of it) into: the parent's columns and CHECKs, the day's CHECK, the
    largest kWh limit as a CHECK, and the columns COPY does not carry as defaults."""
    table = sql.Identifier(name)
    checks = [_day_check(day_name, day),
              sql.SQL("CONSTRAINT {} CHECK (kwh_import <= {top} AND kwh_export <= {top})").format(
                  sql.Identifier(f"{name}_load_kwh"), top=sql.Literal(top_limit)), *extra]
    cursor.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, {})").format(
        table, sql.Identifier(MeterReading._meta.db_table), sql.SQL(", ").join(checks)))
    cursor.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN batch_id SET DEFAULT {}, ALTER COLUMN version SET DEFAULT 1, "
                           "ALTER COLUMN received_at SET DEFAULT now()").format(table, sql.Literal(str(batch_id))))


def _load_table_settle(cursor: psycopg.Cursor, name: str) -> None:
    """After the checks: the load's kWh CHECK and column defaults go (corrections later follow meter_rules)."""
    cursor.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}, ALTER COLUMN batch_id DROP DEFAULT, "
                           "ALTER COLUMN version DROP DEFAULT, ALTER COLUMN received_at DROP DEFAULT").format(
        sql.Identifier(name), sql.Identifier(f"{name}_load_kwh")))


def _unique_index(cursor: psycopg.Cursor, name: str) -> None:
    """The parent's unique index (migration 0005) on one table, built in one sorted pass; ATTACH adopts it. A
    duplicate (connection, ISP) fails the build."""
    cursor.execute(sql.SQL("CREATE UNIQUE INDEX {} ON {} (connection_id, isp_start)").format(
        sql.Identifier(f"{name}_key"), sql.Identifier(name)))


def _top_limit(cursor: psycopg.Cursor) -> object:
    cursor.execute("SELECT max(limit_kwh) FROM meter_conn")
    found = cursor.fetchone()
    if found is None or found[0] is None:
        raise NotBulk("the sender has no connections")
    return found[0]


def _checks_after_copy(cursor: psycopg.Cursor, *, check: subprocess.Popen[bytes] | None, path: Path,
                       day: date, name: str, received: int, top_limit: object) -> dict[str, Span]:
    """Rules 1-6 for what COPY did not check itself (the unique index has done rule 7); the spans for the gap
    check, or none when every connection has every ISP."""
    eans = _checked_eans(check, path)
    if eans is None:
        raise NotBulk("a line outside the clean shape")
    _eans_check(cursor, eans)
    return _indexed_day_checks(cursor, day=day, name=name, eans=eans, received=received, top_limit=top_limit)


def _indexed_day_checks(cursor: psycopg.Cursor, *, day: date, name: str, eans: set[str], received: int,
                        top_limit: object) -> dict[str, Span]:
    """Over the day's unique index: rule 6 for the lower limits, and the spans for the gap check (none when every
    connection has every ISP)."""
    table = sql.Identifier(name)
    _lower_limits_check(cursor, table, top_limit)
    complete = len(eans) * isp_time.isp_count(day) == received  # unique and within the day: every ISP there
    return {} if complete else _spans(cursor, table)


def _attach_day(cursor: psycopg.Cursor, day: date) -> None:
    """The day's CHECK constraint proves the partition bound, so ATTACH does not scan the rows again."""
    cursor.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(MeterReading._meta.db_table), sql.Identifier(partition_name(day)),
        sql.Literal(isp_time.day_start(day)), sql.Literal(isp_time.day_end(day))))


def _load(cursor: psycopg.Cursor, *, day: date, batch_id: object, path: Path,
          progress: Callable[[str, int, int], None] | None, total: int) -> DayLoad:
    """The day as one table: COPY, one index build, attach."""
    name = partition_name(day)
    table = sql.Identifier(name)
    top_limit = _top_limit(cursor)
    # Created in this subtransaction, so COPY can FREEZE: rows are written visible to all and the pages marked
    # all-visible, so the first reader after commit does not rewrite every page to set hint bits.
    _load_table_create(cursor, name=name, day_name=name, day=day, top_limit=top_limit, batch_id=batch_id, extra=[])
    check = _check_apart(path)
    try:
        received = _stream(cursor, table, path, progress, total)
    except BaseException:
        _check_stop(check)
        raise
    if progress is not None:
        progress("index", 0, received)
    cursor.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(INDEX_MEMORY)))
    _unique_index(cursor, name)
    spans = _checks_after_copy(cursor, check=check, path=path, day=day, name=name, received=received,
                               top_limit=top_limit)
    _load_table_settle(cursor, name)
    _attach_day(cursor, day)
    cursor.execute(sql.SQL("ANALYZE {}").format(table))
    return DayLoad(day=day, received=received, spans=spans)


def _check_stop(check: subprocess.Popen[bytes] | None) -> None:
    if check is not None:
        check.kill()
        check.communicate()


@dataclass(frozen=True)
class Piece:
    """The connections with EANs from `low` (None: from the first) up to `high` (None: to the last), loaded into
    table `name` by a session of its own."""

    name: str
    low: str | None
    high: str | None


class PieceOrderBroken(Exception):
    """A piece was sent an EAN outside its range: the database orders EANs otherwise than the router did."""


class _FeedStopped(Exception):
    """The load stopped elsewhere (the router or another piece failed)."""


class _Feed:
    """From the router (the thread reading the file) to the pieces' sessions: a bounded queue per piece, a stop
    signal any of them may raise, and a barrier where all agree to commit."""

    def __init__(self, count: int) -> None:
        self.queues: list[queue.Queue[bytes | None]] = [queue.Queue(maxsize=8) for _ in range(count)]
        self.stopped = threading.Event()
        self.commit = threading.Barrier(count + 1)  # the pieces and the router

    def put(self, slot: int, block: bytes | None) -> None:
        while True:
            if self.stopped.is_set():
                raise _FeedStopped
            try:
                self.queues[slot].put(block, timeout=0.1)
                return
            except queue.Full:
                continue

    def blocks(self, slot: int) -> Iterator[bytes]:
        while True:
            if self.stopped.is_set():
                raise _FeedStopped
            try:
                block = self.queues[slot].get(timeout=0.1)
            except queue.Empty:
                continue
            if block is None:
                return
            yield block

    def stop(self) -> None:
        self.stopped.set()
        self.commit.abort()


def pieces_plan(cursor: psycopg.Cursor, *, day: date, count: int) -> list[Piece]:
    """Up to `count` pieces with about as many of the sender's connections each (meter_conn's EAN quantiles)."""
    if count < 2:
        return []
    cursor.execute("SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY ean) FROM meter_conn",
                   [[number / count for number in range(1, count)]])
    row = cursor.fetchone()
    bounds = list(dict.fromkeys(bound for bound in (row[0] if row and row[0] else []) if bound is not None))
    name = partition_name(day)
    return [Piece(name=f"{name}_{number}", low=low, high=high)
            for number, (low, high) in enumerate(zip([None, *bounds], [*bounds, None], strict=True))]


def _piece_load(params: dict[str, Any], *, piece: Piece, slot: int, feed: _Feed, day: date, top_limit: object,
                batch_id: object) -> int:
    """One piece in its own session: table (new in this transaction, so COPY can FREEZE), COPY of what the router
    sends, index, statistics; committed only once every piece and the router are through."""
    statement = sql.SQL("COPY {} (connection_id, isp_start, kwh_import, kwh_export, quality) "
                        "FROM STDIN (FORMAT csv, FREEZE true)").format(sql.Identifier(piece.name))
    try:
        with psycopg.connect(**params) as session, session.cursor() as cursor:
            _load_table_create(cursor, name=piece.name, day_name=partition_name(day), day=day, top_limit=top_limit,
                               batch_id=batch_id, extra=[_ean_check(piece.name, piece.low, piece.high)])
            try:
                with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
                    for block in feed.blocks(slot):
                        copy.write(block)
            except psycopg.errors.CheckViolation as exc:
                if exc.diag.constraint_name == f"{piece.name}_eans":
                    raise PieceOrderBroken(piece.name) from exc
                raise
            received = int(cursor.rowcount)
            cursor.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(PIECE_INDEX_MEMORY)))
            cursor.execute("SET LOCAL max_parallel_maintenance_workers = 0")  # the other pieces have the other cores
            _unique_index(cursor, piece.name)
            _load_table_settle(cursor, piece.name)
            cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(piece.name)))
            feed.commit.wait()  # BrokenBarrierError: another piece or the router failed; this one rolls back
    except BaseException:
        feed.stop()
        raise
    return received


def _route(path: Path, pieces: list[Piece], feed: _Feed, progress: Callable[[str, int, int], None] | None,
           total: int) -> set[str]:
    """Read the file once: check every line's shape (settlement.ingest.clean_csv) and send each connection's run
    of lines to the piece its EAN belongs to. The file's EANs."""
    highs = [piece.high.encode() for piece in pieces[:-1] if piece.high is not None]
    eans: set[bytes] = set()
    for data, reached in line_blocks(str(path)):
        runs = clean_runs(data)
        if runs is None:
            raise NotBulk("a line outside the clean shape")
        parts: list[list[memoryview]] = [[] for _ in pieces]
        view = memoryview(data)
        for ean, start, end in runs:
            parts[bisect_right(highs, ean)].append(view[start:end])
            eans.add(ean)
        for slot, piece_parts in enumerate(parts):
            if piece_parts:
                feed.put(slot, b"".join(piece_parts))
        if progress is not None:
            progress("copy", reached, total)
    for slot in range(len(pieces)):
        feed.put(slot, None)
    return {ean.decode() for ean in eans}


def _pieces_run(cursor: psycopg.Cursor, pieces: list[Piece], *, day: date, top_limit: object, batch_id: object,
                path: Path, progress: Callable[[str, int, int], None] | None, total: int) -> tuple[set[str], int]:
    """Every piece at once, each in its own session, fed by this thread; the file's EANs and the rows received.
    On any failure nothing is committed and the first real cause is raised."""
    params = {**db_connection.get_connection_params(), "cursor_factory": psycopg.Cursor}
    feed = _Feed(len(pieces))
    failure: BaseException | None = None
    with ThreadPoolExecutor(len(pieces), thread_name_prefix="meter-piece") as pool:
        futures = [pool.submit(_piece_load, params, piece=piece, slot=slot, feed=feed, day=day, top_limit=top_limit,
                               batch_id=batch_id) for slot, piece in enumerate(pieces)]
        try:
            eans = _route(path, pieces, feed, progress, total)
            _eans_check(cursor, eans)
            if progress is not None:
                progress("index", 0, 0)
            feed.commit.wait()
        except BaseException as exc:
            failure = exc
            feed.stop()
    for future in futures:  # a piece's own failure says more than the stop it caused here
        cause = future.exception()
        if cause is not None and not isinstance(cause, (_FeedStopped, threading.BrokenBarrierError)):
            raise cause
    if failure is not None:
        raise failure
    return eans, sum(future.result() for future in futures)


def _load_pieces(cursor: psycopg.Cursor, *, day: date, batch_id: object, path: Path, pieces: list[Piece],
                 progress: Callable[[str, int, int], None] | None, total: int) -> DayLoad:
    """The day as a table partitioned by connection over its pieces, loaded and indexed all at once."""
    name = partition_name(day)
    top_limit = _top_limit(cursor)
    eans, received = _pieces_run(cursor, pieces, day=day, top_limit=top_limit, batch_id=batch_id, path=path,
                                 progress=progress, total=total)
    cursor.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, {}) "
                           "PARTITION BY RANGE (connection_id)").format(
        sql.Identifier(name), sql.Identifier(MeterReading._meta.db_table), _day_check(name, day)))
    for piece in pieces:  # each piece's EAN CHECK proves its bound: no scan
        cursor.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(name), sql.Identifier(piece.name),
            sql.SQL("MINVALUE") if piece.low is None else sql.Literal(piece.low),
            sql.SQL("MAXVALUE") if piece.high is None else sql.Literal(piece.high)))
        cursor.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            sql.Identifier(piece.name), sql.Identifier(f"{piece.name}_eans")))
    _unique_index(cursor, name)  # adopts the pieces' indexes, builds nothing
    spans = _indexed_day_checks(cursor, day=day, name=name, eans=eans, received=received, top_limit=top_limit)
    _attach_day(cursor, day)
    return DayLoad(day=day, received=received, spans=spans)


def _pieces_drop(cursor: psycopg.Cursor, day: date) -> None:
    """Piece tables of `day` that are no partition: left when the transaction that would attach them rolled back
    after they had committed."""
    cursor.execute("""SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE %s
                      AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)""",
                   [f"{partition_name(day)}\\_%"])
    for (name,) in cursor.fetchall():
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def _pieces_wanted(path: Path) -> int:
    if path.stat().st_size < PIECES_FROM_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, PIECES_MAX))


def day_load(cursor: psycopg.Cursor, *, batch_id: object, path: Path,
             progress: Callable[[str, int, int], None] | None = None) -> DayLoad | None:
    """Load `path` as a new day's partition, or return None having changed nothing (the general engine then
    takes the file). Needs the sender's connections in the temp table meter_conn (meter_copy)."""
    day = _first_row_day(path)
    if day is None or not _day_is_new(cursor, day):
        return None
    _pieces_drop(cursor, day)
    total = path.stat().st_size
    try:
        pieces = pieces_plan(cursor, day=day, count=_pieces_wanted(path))
        if len(pieces) > 1:
            try:
                with transaction.atomic():
                    return _load_pieces(cursor, day=day, batch_id=batch_id, path=path, pieces=pieces,
                                        progress=progress, total=total)
            except PieceOrderBroken:
                _pieces_drop(cursor, day)  # one table takes the EANs in any order
        with transaction.atomic():
            return _load(cursor, day=day, batch_id=batch_id, path=path, progress=progress, total=total)
    except (NotBulk, psycopg.errors.DataError, psycopg.errors.IntegrityError, psycopg.errors.QueryCanceled,
            psycopg.errors.InvalidObjectDefinition):  # the last: another partition covers the day
        _pieces_drop(cursor, day)
        return None
