"""Meter data in through the services: per-row rejections, idempotent re-sends, correction versions, gaps, DST.

Every CSV test runs on the Python engine and, when DATABASE_URL is PostgreSQL, on the COPY engine too; the
last test imports one file through both engines on PostgreSQL and compares everything they stored.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from common import isp as isp_time
from common.exceptions import ApplicationError
from settlement.ingest import RawRow
from settlement.ingest.csv_format import csv_text
from settlement.models import (
    ConnectionCapacity,
    MeterImportBatch,
    MeterImportRejection,
    MeterReading,
    MeterReadingVersion,
)
from settlement.services import ImportResult, MeterReadingRow, meter_csv_import, meter_readings_import
from settlement.services.meter_data import meter_rows_import
from tests.conftest import World
from tests.factories import ConnectionFactory, next_ean

pytestmark = pytest.mark.django_db

ON_POSTGRESQL = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
ENGINES = ["python", pytest.param("copy", marks=pytest.mark.skipif(not ON_POSTGRESQL,
                                                                    reason="the COPY engine needs PostgreSQL"))]
AUTUMN_DST_DAY = date(2027, 10, 31)  # 100 ISPs: the 02:00-03:00 hour happens twice
SPRING_DST_DAY = date(2027, 3, 28)  # 92 ISPs: the 02:00-03:00 hour does not exist


def local(day: date, isp: int) -> str:
    """ISO start of ISP `isp` in Amsterdam time with its offset, as a metering party writes it."""
    return isp_time.isp_start(day, isp).astimezone(isp_time.MARKET_TZ).isoformat()


def line(ean: str, start: str, kwh_import: str = "0.250", kwh_export: str = "0.000", quality: str = "0"
         ) -> tuple[str, str, str, str, str]:
    return (ean, start, kwh_import, kwh_export, quality)


def import_csv(tmp_path: Path, lines: list[tuple[str, ...]] | str, engine: str, name: str = "meter.csv"
               ) -> ImportResult:
    path = tmp_path / name
    path.write_text(lines if isinstance(lines, str) else csv_text(lines), encoding="utf-8")  # type: ignore[arg-type]
    return meter_csv_import(path=path, engine=engine)


def report(result: ImportResult) -> list[tuple[int | None, str, str, str]]:
    return [(r.row_number, r.reason, r.connection_ean, r.isp_start) for r in result.rejections()]


def counts(result: ImportResult) -> tuple[int, int, int, int, int, int]:
    return (result.received, result.accepted, result.corrected, result.unchanged, result.rejected, result.gaps)


def stored() -> list[tuple[str, datetime, Decimal, Decimal, int, int]]:
    return list(MeterReading.objects.order_by("connection_id", "isp_start").values_list(
        "connection_id", "isp_start", "kwh_import", "kwh_export", "quality", "version"))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_clean_file_stores_every_reading(world: World, tomorrow: date, tmp_path: Path, engine: str) -> None:
    eans = [c.ean for c in world.voltflex_connections]
    lines = [line(ean, local(tomorrow, isp), f"0.{isp:03d}", "0.010") for ean in eans for isp in range(1, 97)]

    result = import_csv(tmp_path, lines, engine)

    assert counts(result) == (288, 288, 0, 0, 0, 0)
    assert result.batch.engine == engine and not result.replayed
    assert stored()[:2] == [
        (sorted(eans)[0], isp_time.isp_start(tomorrow, 1), Decimal("0.001"), Decimal("0.010"), 0, 1),
        (sorted(eans)[0], isp_time.isp_start(tomorrow, 2), Decimal("0.002"), Decimal("0.010"), 0, 1),
    ]
    assert MeterReading.objects.filter(batch=result.batch).count() == 288


@pytest.mark.parametrize("engine", ENGINES)
def test_every_rejection_reason_is_listed_per_row_and_the_valid_rows_are_stored(
    world: World, tomorrow: date, tmp_path: Path, engine: str
) -> None:
    ean, other, small = (c.ean for c in world.voltflex_connections)
    ConnectionCapacity.objects.create(connection_id=small, max_power_kw=Decimal("4.0"))  # 1.000 kWh per ISP
    unknown = next_ean()
    foreign = world.cp_far.connections.get().ean  # another DSO's connection: fine for an operator's file
    naive = isp_time.isp_start(tomorrow, 5).astimezone(isp_time.MARKET_TZ).strftime("%Y-%m-%dT%H:%M:%S")
    off_quarter = (isp_time.isp_start(tomorrow, 6) + timedelta(minutes=7)).isoformat()
    lines = [
        line(ean, local(tomorrow, 1)),                          # 1 stored
        line(unknown, local(tomorrow, 1)),                      # 2 unknown_connection
        line(ean, naive),                                       # 3 naive_datetime
        line(ean, off_quarter),                                 # 4 isp_not_aligned
        line(ean, local(tomorrow, 7), "-0.001"),                # 5 negative_energy (import)
        line(ean, local(tomorrow, 8), "0.100", "-0.500"),       # 6 negative_energy (export)
        line(ean, local(tomorrow, 9), "13.801"),                # 7 implausible: above 3 x 80 A (13.8 kWh)
        line(small, local(tomorrow, 9), "1.001"),               # 8 implausible: above its own 4 kW
        line(small, local(tomorrow, 10), "1.000"),              # 9 stored: exactly its limit
        line(other, local(tomorrow, 2), "0.100"),               # 10 duplicate_in_file
        line(other, local(tomorrow, 2), "0.200"),               # 11 duplicate_in_file
        line(ean, local(tomorrow, 2), "abc"),                   # 12 malformed
        line(foreign, local(tomorrow, 3)),                      # 13 stored
        line(ean, local(tomorrow, 2), "0.300"),                 # 14 stored
    ]

    result = import_csv(tmp_path, lines, engine)

    assert report(result) == [
        (2, "unknown_connection", unknown, local(tomorrow, 1)),
        (3, "naive_datetime", ean, naive),
        (4, "isp_not_aligned", ean, off_quarter),
        (5, "negative_energy", ean, local(tomorrow, 7)),
        (6, "negative_energy", ean, local(tomorrow, 8)),
        (7, "implausible_energy", ean, local(tomorrow, 9)),
        (8, "implausible_energy", small, local(tomorrow, 9)),
        (10, "duplicate_in_file", other, local(tomorrow, 2)),
        (11, "duplicate_in_file", other, local(tomorrow, 2)),
        (12, "malformed", ean, local(tomorrow, 2)),
    ]
    assert counts(result) == (14, 4, 0, 0, 10, 0)
    assert [(row[0], row[1], row[2]) for row in stored()] == sorted([
        (ean, isp_time.isp_start(tomorrow, 1), Decimal("0.250")),
        (ean, isp_time.isp_start(tomorrow, 2), Decimal("0.300")),
        (small, isp_time.isp_start(tomorrow, 10), Decimal("1.000")),
        (foreign, isp_time.isp_start(tomorrow, 3), Decimal("0.250")),
    ])
    assert all(rejection.detail for rejection in result.rejections())


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bad", [
    ("abc", "0.000", "0"), ("0.2505", "0.000", "0"), ("0.250", "", "0"), ("0.250", "0.000", "2"),
    ("0.250", "0.000", "x"), ("NaN", "0.000", "0"), ("1_0", "0.000", "0"),
], ids=["word", "four-decimals", "empty-export", "quality-2", "quality-word", "nan", "underscore"])
def test_malformed_values_are_rejected_as_malformed(
    world: World, tomorrow: date, tmp_path: Path, engine: str, bad: tuple[str, str, str]
) -> None:
    ean = world.voltflex_connections[0].ean
    result = import_csv(tmp_path, [line(ean, local(tomorrow, 1)), line(ean, local(tomorrow, 2), *bad)], engine)

    assert report(result) == [(2, "malformed", ean, local(tomorrow, 2))]
    assert counts(result) == (2, 1, 0, 0, 1, 0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("start", ["2027-02-29T00:00:00+01:00", "2026-11-26T24:00:00+01:00", "tomorrow",
                                   "2026-11-26T00:00+01:00", "2026-11-26T00:00:00+01", ""])
def test_an_isp_start_that_is_no_instant_is_malformed(
    world: World, tomorrow: date, tmp_path: Path, engine: str, start: str
) -> None:
    ean = world.voltflex_connections[0].ean
    result = import_csv(tmp_path, [line(ean, local(tomorrow, 1)), line(ean, start)], engine)

    assert report(result) == [(2, "malformed", ean, start)]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_line_with_the_wrong_number_of_fields_is_malformed_and_blank_lines_keep_their_number(
    world: World, tomorrow: date, tmp_path: Path, engine: str
) -> None:
    ean = world.voltflex_connections[0].ean
    text = csv_text([line(ean, local(tomorrow, 1))]) + f"{ean},{local(tomorrow, 2)},0.1\n\n"
    text += ",".join(line(ean, local(tomorrow, 3))) + "\r\n"

    result = import_csv(tmp_path, text, engine)

    assert report(result) == [(2, "malformed", ean, local(tomorrow, 2)),
                              (None, "gap", ean, isp_time.isp_start(tomorrow, 2).isoformat())]
    assert counts(result) == (3, 2, 0, 0, 1, 1)  # ISP 2 is a gap between ISPs 1 and 3 (its row was refused)


@pytest.mark.parametrize("engine", ENGINES)
def test_gaps_inside_a_connections_series_are_reported_unless_already_stored(
    world: World, tomorrow: date, tmp_path: Path, engine: str
) -> None:
    ean, other = world.voltflex_connections[0].ean, world.voltflex_connections[1].ean
    meter_readings_import(rows=[MeterReadingRow(other, isp_time.isp_start(tomorrow, 3), Decimal("0.1"))])
    lines = [line(ean, local(tomorrow, isp)) for isp in (1, 2, 3, 6, 7, 9)]
    lines += [line(other, local(tomorrow, isp)) for isp in (1, 2, 4)]

    result = import_csv(tmp_path, lines, engine)

    gaps = [(r.connection_ean, r.isp_start, r.detail) for r in result.rejections() if r.reason == "gap"]
    assert gaps == [
        (ean, isp_time.isp_start(tomorrow, 4).isoformat(),
         f"2 ISPs missing from {isp_time.isp_start(tomorrow, 4).isoformat()} to "
         f"{isp_time.isp_start(tomorrow, 6).isoformat()}."),
        (ean, isp_time.isp_start(tomorrow, 8).isoformat(),
         f"1 ISP missing from {isp_time.isp_start(tomorrow, 8).isoformat()} to "
         f"{isp_time.isp_start(tomorrow, 9).isoformat()}."),
    ]
    assert counts(result) == (9, 9, 0, 0, 0, 2)


@pytest.mark.parametrize("engine", ENGINES)
def test_resending_the_same_file_changes_nothing(world: World, tomorrow: date, tmp_path: Path, engine: str) -> None:
    ean = world.voltflex_connections[0].ean
    lines = [line(ean, local(tomorrow, isp)) for isp in range(1, 5)] + [line(next_ean(), local(tomorrow, 1))]
    first = import_csv(tmp_path, lines, engine)
    before = (stored(), MeterImportBatch.objects.count(), MeterImportRejection.objects.count(),
              MeterReadingVersion.objects.count())

    again = import_csv(tmp_path, lines, engine, name="renamed.csv")

    assert again.replayed and again.batch.pk == first.batch.pk
    assert counts(again) == counts(first) == (5, 4, 0, 0, 1, 0)
    assert (stored(), MeterImportBatch.objects.count(), MeterImportRejection.objects.count(),
            MeterReadingVersion.objects.count()) == before


@pytest.mark.parametrize("engine", ENGINES)
def test_rows_already_stored_with_the_same_values_count_as_unchanged(
    world: World, tomorrow: date, tmp_path: Path, engine: str
) -> None:
    ean = world.voltflex_connections[0].ean
    import_csv(tmp_path, [line(ean, local(tomorrow, isp)) for isp in (1, 2)], engine, name="a.csv")

    result = import_csv(tmp_path, [line(ean, local(tomorrow, isp)) for isp in (1, 2, 3)], engine, name="b.csv")

    assert counts(result) == (3, 1, 0, 2, 0, 0)
    assert [row[5] for row in stored()] == [1, 1, 1]
    assert MeterReadingVersion.objects.count() == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_corrections_become_new_versions_the_latest_is_used_and_older_ones_are_kept(
    world: World, tomorrow: date, tmp_path: Path, engine: str
) -> None:
    ean = world.voltflex_connections[0].ean
    start = isp_time.isp_start(tomorrow, 1)
    first = import_csv(tmp_path, [line(ean, local(tomorrow, 1), "0.500", "0.000", "1"),
                                  line(ean, local(tomorrow, 2), "0.600")], engine, name="v1.csv")
    second = import_csv(tmp_path, [line(ean, local(tomorrow, 1), "0.450", "0.000", "0"),
                                   line(ean, local(tomorrow, 2), "0.600")], engine, name="v2.csv")
    third = import_csv(tmp_path, [line(ean, local(tomorrow, 1), "0.470", "0.020", "0")], engine, name="v3.csv")

    assert counts(second) == (2, 0, 1, 1, 0, 0)
    assert counts(third) == (1, 0, 1, 0, 0, 0)
    latest = MeterReading.objects.get(connection_id=ean, isp_start=start)
    assert (latest.kwh_import, latest.kwh_export, latest.quality, latest.version, latest.batch_id) == (
        Decimal("0.470"), Decimal("0.020"), 0, 3, third.batch.pk)
    history = list(MeterReadingVersion.objects.filter(connection_id=ean, isp_start=start).order_by("version")
                   .values_list("version", "kwh_import", "kwh_export", "quality", "batch_id", "superseded_by_id"))
    assert history == [
        (1, Decimal("0.500"), Decimal("0.000"), 1, first.batch.pk, second.batch.pk),
        (2, Decimal("0.450"), Decimal("0.000"), 0, second.batch.pk, third.batch.pk),
    ]
    untouched = MeterReading.objects.get(connection_id=ean, isp_start=isp_time.isp_start(tomorrow, 2))
    assert (untouched.version, untouched.batch_id) == (1, first.batch.pk)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("day", "isps"), [(AUTUMN_DST_DAY, 100), (SPRING_DST_DAY, 92)], ids=["autumn", "spring"])
def test_dst_days_store_every_isp_with_local_offsets(
    world: World, tmp_path: Path, engine: str, day: date, isps: int
) -> None:
    ean = world.voltflex_connections[0].ean
    assert isp_time.isp_count(day) == isps
    lines = [line(ean, local(day, isp)) for isp in range(1, isps + 1)]

    result = import_csv(tmp_path, lines, engine)

    assert counts(result) == (isps, isps, 0, 0, 0, 0)
    starts = [row[1] for row in stored()]
    assert starts == [slot.start for slot in isp_time.isp_slots(day)]
    if isps == 100:  # the repeated hour: 02:00+02:00 and 02:00+01:00 are two ISPs
        assert [lines[i][1][11:] for i in (8, 12)] == ["02:00:00+02:00", "02:00:00+01:00"]
    else:
        assert starts[8] - starts[7] == isp_time.ISP and lines[8][1][11:] == "03:00:00+02:00"


def test_a_wrong_header_refuses_the_file(world: World, tmp_path: Path) -> None:
    path = tmp_path / "wrong.csv"
    path.write_text("ean,start,import,export,quality\n", encoding="utf-8")

    with pytest.raises(ApplicationError) as raised:
        meter_csv_import(path=path, engine="python")

    assert (raised.value.code, raised.value.field) == ("csv_header", "file")
    assert MeterImportBatch.objects.count() == 0


def test_a_dso_delivers_only_for_connections_behind_its_own_congestion_points(world: World, tomorrow: date) -> None:
    own, foreign = world.voltflex_connections[0].ean, world.cp_far.connections.get().ean
    rows = [RawRow(1, own, local(tomorrow, 1), "0.1", "0", "0"), RawRow(2, foreign, local(tomorrow, 1), "0.1", "0",
                                                                      "0")]

    result = meter_rows_import(rows=rows, source_format="json", submitted_by=world.gridco)

    assert report(result) == [(2, "unknown_connection", foreign, local(tomorrow, 1))]
    assert MeterReading.objects.filter(connection_id=foreign).count() == 0
    assert result.batch.submitted_by == world.gridco


def test_typed_rows_go_through_the_same_rules(world: World, tomorrow: date) -> None:
    ean = world.voltflex_connections[0].ean
    rows = [MeterReadingRow(ean, isp_time.isp_start(tomorrow, 1), Decimal("1.250"), Decimal("0.125")),
            MeterReadingRow(ean, isp_time.isp_start(tomorrow, 2).replace(tzinfo=None), Decimal("1")),
            MeterReadingRow(next_ean(), isp_time.isp_start(tomorrow, 1), Decimal("1"))]

    result = meter_readings_import(rows=rows)

    assert [r.reason for r in result.rejections()] == ["naive_datetime", "unknown_connection"]
    assert (result.received, result.stored) == (3, 1)
    assert stored() == [(ean, isp_time.isp_start(tomorrow, 1), Decimal("1.250"), Decimal("0.125"), 0, 1)]


@pytest.mark.skipif(not ON_POSTGRESQL, reason="compares the COPY engine with the Python engine on PostgreSQL")
def test_the_copy_engine_and_the_python_engine_store_and_report_the_same(
    world: World, tomorrow: date, tmp_path: Path
) -> None:
    eans = sorted(c.ean for c in world.voltflex_connections)
    extra = [ConnectionFactory(congestion_point=world.cp_south).ean for _ in range(3)]
    ConnectionCapacity.objects.create(connection_id=extra[0], max_power_kw=Decimal("2.0"))
    first = [line(ean, local(tomorrow, isp), f"{(isp * 7 % 13) / 10:.3f}") for ean in eans for isp in range(1, 97)]
    second = [line(ean, local(tomorrow, isp), f"{(isp * 5 % 11) / 10:.3f}") for ean in eans[:2]
              for isp in range(40, 60)]
    second += [line(e, local(tomorrow, isp), "0.600") for e in extra for isp in (1, 2, 4, 5)]
    second += [line(extra[1], local(tomorrow, 2), "0.300"), line("nonsense", "2026-13-01T00:00:00Z"),
               line(eans[2], local(tomorrow, 3), "-1"), line(eans[2], local(tomorrow, 3).replace("+01:00", ""))]

    def run(engine: str) -> list[object]:
        results = [import_csv(tmp_path, first, engine, name="day.csv"),
                   import_csv(tmp_path, second, engine, name="correction.csv")]
        snapshot = [
            [counts(r) for r in results], [report(r) for r in results],
            [(r.connection_ean, r.isp_start, r.detail) for r in results[1].rejections()],
            stored(),
            list(MeterReadingVersion.objects.order_by("connection_id", "isp_start", "version").values_list(
                "connection_id", "isp_start", "version", "kwh_import", "kwh_export", "quality")),
        ]
        assert [r.batch.engine for r in results] == [engine, engine]
        MeterReadingVersion.objects.all().delete()
        MeterReading.objects.all().delete()
        MeterImportBatch.objects.all().delete()
        return snapshot

    python, copy = run("python"), run("copy")

    assert copy == python
    # 40 rows for stored ISPs: ISPs 46 and 47 carry the same value again (4 unchanged), the rest are corrections.
    assert python[0][1] == (56, 7, 36, 4, 9, 2)
