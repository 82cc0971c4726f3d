"""The bulk path of the COPY engine: a clean delivery for a new market day becomes that day's partition; every
other delivery goes through the general engine with the same verdicts as before.

The line check runs anywhere; the rest needs PostgreSQL (partitions, COPY).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection

from common import isp as isp_time
from settlement.ingest.clean_csv import CLEAN_LINE
from settlement.models import MeterImportBatch, MeterReading, MeterReadingVersion
from settlement.services import meter_csv_import
from settlement.services.meter_day_load import partition_name
from tests.conftest import World
from tests.factories import next_ean
from tests.settlement.test_meter_import import ON_POSTGRESQL, counts, import_csv, line, local, report, stored

pg_only = pytest.mark.skipif(not ON_POSTGRESQL, reason="partitions and COPY need PostgreSQL")


def clean(text: str) -> bool:
    import re

    return re.fullmatch(CLEAN_LINE, (text + "\n").encode()) is not None


@pytest.mark.parametrize("text", [
    "871687400000000016,2026-11-26T00:00:00+01:00,0.047,0.000,0",
    "871687400000000016,2026-11-26 23:45:00+01:00,13.8,0,1",
    "871687400000000016,2026-03-29T03:15:00+02:00,0.047,1.5,0",
    "871687400000000016,2026-11-26T00:30:00Z,123456789.123,0.000,0",
    "871687400000000016,2026-11-26T00:30:00-14:45,0.047,0.000,0\r",
])
def test_clean_lines(text: str) -> None:
    assert clean(text)


@pytest.mark.parametrize("text", [
    "871687400000000016,2026-11-26T00:00:00,0.047,0.000,0",          # naive
    "871687400000000016,2026-11-26T00:07:00+01:00,0.047,0.000,0",    # off the quarter-hour
    "871687400000000016,2026-11-26T00:00:30+01:00,0.047,0.000,0",    # seconds
    "871687400000000016,2026-11-26T00:00:00+01:10,0.047,0.000,0",    # offset off the quarter-hour
    "871687400000000016,2026-11-26T24:00:00+01:00,0.047,0.000,0",    # PostgreSQL would read it as the next day
    "871687400000000016,2026-11-26T00:00:00+15:00,0.047,0.000,0",    # offset beyond 14 h
    "871687400000000016,1969-12-31T23:00:00+01:00,0.047,0.000,0",    # before 1970
    "871687400000000016,2026-13-26T00:00:00+01:00,0.047,0.000,0",    # month 13
    "871687400000000016,2026-11-26T00:00:00.000+01:00,0.047,0.000,0",
    "871687400000000016,2026-11-26T00:00:00+01,0.047,0.000,0",
    "871687400000000016,2026-11-26T00:00:00+01:00,0.0475,0.000,0",   # 4 decimals: numeric(12, 3) would round
    "871687400000000016,2026-11-26T00:00:00+01:00,-0.047,0.000,0",
    "871687400000000016,2026-11-26T00:00:00+01:00,4.7e-2,0.000,0",
    "871687400000000016,2026-11-26T00:00:00+01:00,NaN,0.000,0",
    "871687400000000016,2026-11-26T00:00:00+01:00, 0.047,0.000,0",
    "871687400000000016,2026-11-26T00:00:00+01:00,0.047,0.000,2",
    '"871687400000000016",2026-11-26T00:00:00+01:00,0.047,0.000,0',
    ",2026-11-26T00:00:00+01:00,0.047,0.000,0",
    "871687400000000016,2026-11-26T00:00:00+01:00,0.047,0.000",
    "",
])
def test_lines_the_bulk_path_leaves_to_the_general_engine(text: str) -> None:
    assert not clean(text)


def day_partition(day: date) -> str | None:
    """The partition holding `day`, if it has one of its own."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)::text", [partition_name(day)])
        return cursor.fetchone()[0]


def partitions_of_readings() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT tableoid::regclass::text FROM settlement_meterreading")
        return {name for (name,) in cursor.fetchall()}


def full_day(eans: list[str], day: date, kwh: str = "0.250") -> list[tuple[str, str, str, str, str]]:
    return [line(ean, local(day, isp), kwh) for ean in eans for isp in range(1, isp_time.isp_count(day) + 1)]


@pg_only
@pytest.mark.django_db
def test_a_clean_new_day_becomes_its_partition_and_is_settled_from_it(world: World, tomorrow: date,
                                                                      tmp_path: Path) -> None:
    eans = [c.ean for c in world.voltflex_connections]

    result = import_csv(tmp_path, full_day(eans, tomorrow), "copy")

    assert counts(result) == (288, 288, 0, 0, 0, 0) and result.batch.engine == "copy"
    assert day_partition(tomorrow) == partition_name(tomorrow)
    assert partitions_of_readings() == {partition_name(tomorrow)}
    assert MeterReading.objects.filter(batch=result.batch, version=1, isp_start__gte=isp_time.day_start(tomorrow),
                                       isp_start__lt=isp_time.day_end(tomorrow)).count() == 288
    assert len({reading.pk for reading in MeterReading.objects.all()}) == 288  # ids from the table's sequence
    with connection.cursor() as cursor:  # the index built after the load is the parent's index on that day
        cursor.execute("SELECT p.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "JOIN pg_class p ON p.oid = i.inhparent WHERE c.relname = %s", [f"{partition_name(tomorrow)}_key"])
        assert cursor.fetchone()[0] == "meter_reading_unique_per_isp"


@pg_only
@pytest.mark.django_db
def test_resends_and_corrections_of_a_bulk_loaded_day_go_through_the_general_engine(
    world: World, tomorrow: date, tmp_path: Path
) -> None:
    eans = [c.ean for c in world.voltflex_connections]
    lines = full_day(eans, tomorrow)
    first = import_csv(tmp_path, lines, "copy")
    assert day_partition(tomorrow) is not None

    replay = import_csv(tmp_path, lines, "copy", name="again.csv")
    same_rows = import_csv(tmp_path, list(reversed(lines)), "copy", name="reordered.csv")
    corrected = [line(eans[0], local(tomorrow, 1), "0.300"), *lines[1:3]]
    correction = import_csv(tmp_path, corrected, "copy", name="correction.csv")

    assert replay.replayed and replay.batch.pk == first.batch.pk
    assert counts(same_rows) == (288, 0, 0, 288, 0, 0)
    assert counts(correction) == (3, 0, 1, 2, 0, 0)
    latest = MeterReading.objects.get(connection_id=eans[0], isp_start=isp_time.isp_start(tomorrow, 1))
    assert (latest.kwh_import, latest.version, latest.batch_id) == (Decimal("0.300"), 2, correction.batch.pk)
    assert list(MeterReadingVersion.objects.values_list("version", "kwh_import", "batch_id")) == [
        (1, Decimal("0.250"), first.batch.pk)]
    assert MeterReading.objects.count() == 288 and partitions_of_readings() == {partition_name(tomorrow)}


@pg_only
@pytest.mark.django_db
@pytest.mark.parametrize("spoil", ["unknown", "implausible", "duplicate", "naive", "next_day", "four_decimals",
                                   "stored_before"])
def test_a_delivery_that_is_not_clean_or_not_new_gets_the_general_engines_verdicts(
    world: World, tomorrow: date, tmp_path: Path, spoil: str
) -> None:
    eans = [c.ean for c in world.voltflex_connections]
    lines = full_day(eans, tomorrow)
    naive = isp_time.isp_start(tomorrow, 5).astimezone(isp_time.MARKET_TZ).strftime("%Y-%m-%dT%H:%M:%S")
    unknown = next_ean()
    extra = {
        "unknown": line(unknown, local(tomorrow, 1)),
        "implausible": line(eans[0], local(tomorrow, 1), "13.801"),
        "duplicate": line(eans[1], local(tomorrow, 7), "0.251"),
        "naive": line(eans[2], naive),
        "next_day": line(eans[0], local(tomorrow + timedelta(days=1), 1)),
        "four_decimals": line(eans[2], local(tomorrow, 9), "0.2501"),
        "stored_before": None,
    }[spoil]
    if extra is not None:
        lines.append(extra)
    else:  # a reading of the day already stored (in the default partition): the day is not new
        import_csv(tmp_path, [line(eans[0], local(tomorrow, 1))], "python", name="earlier.csv")

    copy_result = import_csv(tmp_path, lines, "copy")
    copy_view = (counts(copy_result), report(copy_result), stored())

    assert day_partition(tomorrow) is None
    expected_rejections = {
        "unknown": [(289, "unknown_connection", unknown, local(tomorrow, 1))],
        "implausible": [(289, "implausible_energy", eans[0], local(tomorrow, 1))],
        "duplicate": [(96 + 7, "duplicate_in_file", eans[1], local(tomorrow, 7)),
                      (289, "duplicate_in_file", eans[1], local(tomorrow, 7)),
                      (None, "gap", eans[1], isp_time.isp_start(tomorrow, 7).isoformat())],  # neither stored
        "naive": [(289, "naive_datetime", eans[2], naive)],
        "next_day": [],
        "four_decimals": [(289, "malformed", eans[2], local(tomorrow, 9))],
        "stored_before": [],
    }[spoil]
    assert copy_view[1] == expected_rejections
    # The same delivery through the Python engine on a fresh store: the same counts, report and readings.
    MeterReading.objects.all().delete()
    MeterImportBatch.objects.all().delete()
    if spoil == "stored_before":
        import_csv(tmp_path, [line(eans[0], local(tomorrow, 1))], "python", name="earlier.csv")
    python_result = meter_csv_import(path=tmp_path / "meter.csv", engine="python")
    assert (counts(python_result), report(python_result), stored()) == copy_view


@pg_only
@pytest.mark.django_db
@pytest.mark.parametrize("spoiled", [False, True], ids=["clean", "naive_line"])
def test_the_line_check_of_a_large_file_runs_in_a_second_process_with_the_same_outcome(
    world: World, tomorrow: date, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spoiled: bool
) -> None:
    from settlement.services import meter_day_load

    monkeypatch.setattr(meter_day_load, "CHECK_APART_BYTES", 0)
    eans = [c.ean for c in world.voltflex_connections]
    lines = full_day(eans, tomorrow)
    naive = isp_time.isp_start(tomorrow, 5).astimezone(isp_time.MARKET_TZ).strftime("%Y-%m-%dT%H:%M:%S")
    if spoiled:
        lines[100] = line(eans[1], naive)

    result = import_csv(tmp_path, lines, "copy")

    if spoiled:
        assert day_partition(tomorrow) is None
        assert report(result) == [(101, "naive_datetime", eans[1], naive),
                                  (None, "gap", eans[1], isp_time.isp_start(tomorrow, 5).isoformat())]
        assert counts(result) == (288, 287, 0, 0, 1, 1)
    else:
        assert day_partition(tomorrow) == partition_name(tomorrow)
        assert counts(result) == (288, 288, 0, 0, 0, 0)


def test_the_line_check_collects_the_eans_of_a_clean_file_only(tmp_path: Path) -> None:
    from settlement.ingest.clean_csv import file_eans

    path = tmp_path / "meter.csv"
    path.write_bytes(b"connection_ean,isp_start,kwh_import,kwh_export,quality\r\n"
                     b"871687400000000016,2026-11-26T00:00:00+01:00,0.047,0.000,0\r\n"
                     b"871687400000000023,2026-11-26T00:00:00+01:00,0.047,0.000,1\r\n"
                     b"871687400000000016,2026-11-26T00:15:00+01:00,0.047,0.000,0")  # no newline at the end
    assert file_eans(str(path)) == {b"871687400000000016", b"871687400000000023"}
    path.write_bytes(path.read_bytes() + b"\n871687400000000016,2026-11-26T00:30:00,0.047,0.000,0\n")
    assert file_eans(str(path)) is None


@pg_only
@pytest.mark.django_db
def test_a_clean_new_day_with_a_missing_isp_is_bulk_loaded_and_the_gap_reported(
    world: World, tomorrow: date, tmp_path: Path
) -> None:
    eans = [c.ean for c in world.voltflex_connections]
    lines = full_day(eans, tomorrow)
    del lines[96 + 10]  # the second connection's ISP 11

    result = import_csv(tmp_path, lines, "copy")

    assert day_partition(tomorrow) == partition_name(tomorrow)
    assert counts(result) == (287, 287, 0, 0, 0, 1)
    assert report(result) == [(None, "gap", eans[1], isp_time.isp_start(tomorrow, 11).isoformat())]


def tables_of_day(day: date) -> dict[str, str | None]:
    """Every table named after `day`'s partition, with the table it is a partition of."""
    with connection.cursor() as cursor:
        cursor.execute("""SELECT c.relname, p.relname FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
                          LEFT JOIN pg_class p ON p.oid = i.inhparent
                          WHERE c.relkind IN ('r', 'p') AND c.relname LIKE %s""", [f"{partition_name(day)}%"])
        return dict(cursor.fetchall())


@pytest.fixture
def day_tables_dropped(tomorrow: date) -> Iterator[None]:
    """Pieces commit from sessions of their own, so these tests commit too; a flush empties tables but keeps
    the day's partition, which would make the day not new for the next test. Dropped before as well: an earlier
    committing test (another module's) may have loaded the same day."""
    def drop() -> None:
        with connection.cursor() as cursor:
            for name in tables_of_day(tomorrow):
                cursor.execute(f'DROP TABLE IF EXISTS "{name}" CASCADE')

    drop()
    yield
    drop()


@pg_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("day_tables_dropped")
def test_a_large_day_is_loaded_in_pieces_one_session_each_then_partitioned_by_connection(
    world: World, tomorrow: date, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from settlement.services import meter_day_load

    monkeypatch.setattr(meter_day_load, "_pieces_wanted", lambda path: 3)
    eans = sorted(c.ean for c in world.voltflex_connections)
    lines = full_day(eans, tomorrow)

    result = import_csv(tmp_path, [lines[96 * n + isp] for isp in range(96) for n in range(3)], "copy")  # ISP-major

    day = partition_name(tomorrow)
    assert counts(result) == (288, 288, 0, 0, 0, 0) and result.batch.engine == "copy"
    assert tables_of_day(tomorrow) == {day: "settlement_meterreading", **{f"{day}_{n}": day for n in range(3)}}
    assert stored() == sorted((ean, isp_time.isp_start(tomorrow, isp), Decimal("0.250"), Decimal("0.000"), 0, 1)
                              for ean in eans for isp in range(1, 97))
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text, min(connection_id), max(connection_id) "
                       "FROM settlement_meterreading GROUP BY 1 ORDER BY 1")
        ranges = cursor.fetchall()
        cursor.execute("SELECT conname FROM pg_constraint WHERE conname LIKE %s ORDER BY 1", [f"{day}%"])
        checks = [name for (name,) in cursor.fetchall()]
    assert all(high < low for (_, _, high), (_, low, _) in zip(ranges, ranges[1:], strict=False))  # disjoint ranges
    assert checks == [f"{day}_day"] * 4  # the day's CHECK on it and each piece; the load's kWh and EAN CHECKs gone
    replay = import_csv(tmp_path, lines[:5], "copy", name="again.csv")
    correction = import_csv(tmp_path, [line(eans[2], local(tomorrow, 3), "0.300")], "copy", name="fix.csv")
    assert counts(replay) == (5, 0, 0, 5, 0, 0) and counts(correction) == (1, 0, 1, 0, 0, 0)
    latest = MeterReading.objects.get(connection_id=eans[2], isp_start=isp_time.isp_start(tomorrow, 3))
    assert (latest.kwh_import, latest.version) == (Decimal("0.300"), 2)  # updated in its piece


@pg_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("day_tables_dropped")
@pytest.mark.parametrize("spoil", ["duplicate", "naive", "routed_astray"])
def test_a_piece_that_fails_leaves_nothing_and_the_delivery_gets_its_verdicts(
    world: World, tomorrow: date, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spoil: str
) -> None:
    from settlement.services import meter_day_load

    monkeypatch.setattr(meter_day_load, "_pieces_wanted", lambda path: 2)
    eans = sorted(c.ean for c in world.voltflex_connections)
    lines = full_day(eans, tomorrow)
    naive = isp_time.isp_start(tomorrow, 5).astimezone(isp_time.MARKET_TZ).strftime("%Y-%m-%dT%H:%M:%S")
    if spoil == "duplicate":
        lines.append(line(eans[2], local(tomorrow, 7), "0.251"))
    elif spoil == "naive":
        lines[200] = line(eans[2], naive)
    else:  # as if the database ordered EANs otherwise than the router: every run goes to the other piece
        right = meter_day_load.bisect_right
        monkeypatch.setattr(meter_day_load, "bisect_right", lambda highs, ean: 1 - right(highs, ean))

    result = import_csv(tmp_path, lines, "copy")

    day = partition_name(tomorrow)
    if spoil == "routed_astray":  # loaded again as one table
        assert counts(result) == (288, 288, 0, 0, 0, 0)
        assert tables_of_day(tomorrow) == {day: "settlement_meterreading"}
    else:  # the general engine: per-row verdicts, readings in the default partition, no piece left behind
        assert tables_of_day(tomorrow) == {}
        assert report(result)[0][1] == {"duplicate": "duplicate_in_file", "naive": "naive_datetime"}[spoil]
        assert counts(result)[1] == 287
