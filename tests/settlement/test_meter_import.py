"""settlement.services.meter_readings_import: 15-minute readings in, idempotent, all-or-nothing per batch."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from common import isp as isp_time
from common.exceptions import ApplicationError
from settlement.models import MeterReading
from settlement.services import MeterReadingRow, meter_readings_import
from tests.conftest import World
from tests.factories import next_ean

pytestmark = pytest.mark.django_db

AUTUMN_DST_DAY = date(2027, 10, 31)  # 100 ISPs: the 02:00-03:00 hour happens twice
SPRING_DST_DAY = date(2027, 3, 28)  # 92 ISPs: the 02:00-03:00 hour does not exist


def row(ean: str, day: date, isp: int, kwh_import: str = "1.250", kwh_export: str = "0") -> MeterReadingRow:
    return MeterReadingRow(
        connection_ean=ean,
        isp_start=isp_time.isp_start(day, isp),
        kwh_import=Decimal(kwh_import),
        kwh_export=Decimal(kwh_export),
    )


def stored_values() -> list[tuple[str, object, Decimal, Decimal]]:
    return list(
        MeterReading.objects.order_by("connection_id", "isp_start").values_list(
            "connection_id", "isp_start", "kwh_import", "kwh_export"
        )
    )


def test_it_stores_every_row_of_a_batch(world: World, tomorrow: date) -> None:
    rows = [row(c.ean, tomorrow, isp, "1.250", "0.125") for c in world.voltflex_connections for isp in (70, 71)]

    result = meter_readings_import(rows=rows)

    assert (result.received, result.stored, result.duplicates) == (6, 6, 0)
    assert stored_values() == sorted(
        (c.ean, isp_time.isp_start(tomorrow, isp), Decimal("1.250"), Decimal("0.125"))
        for c in world.voltflex_connections
        for isp in (70, 71)
    )


def test_resending_the_same_rows_stores_nothing_new_and_counts_duplicates(world: World, tomorrow: date) -> None:
    rows = [row(c.ean, tomorrow, isp) for c in world.voltflex_connections for isp in (70, 71)]
    meter_readings_import(rows=rows)
    before = stored_values()

    again = meter_readings_import(rows=rows)

    assert (again.received, again.stored, again.duplicates) == (6, 0, 6)
    assert stored_values() == before


def test_a_resent_reading_with_other_values_leaves_the_stored_values_unchanged(world: World, tomorrow: date) -> None:
    ean = world.voltflex_connections[0].ean
    meter_readings_import(rows=[row(ean, tomorrow, 70, "1.250", "0.000")])

    result = meter_readings_import(rows=[row(ean, tomorrow, 70, "9.999", "3.000"), row(ean, tomorrow, 71, "2.000")])

    assert (result.received, result.stored, result.duplicates) == (2, 1, 1)
    reading = MeterReading.objects.get(connection_id=ean, isp_start=isp_time.isp_start(tomorrow, 70))
    assert (reading.kwh_import, reading.kwh_export) == (Decimal("1.250"), Decimal("0.000"))
    assert MeterReading.objects.get(connection_id=ean, isp_start=isp_time.isp_start(tomorrow, 71)).kwh_import == (
        Decimal("2.000")
    )


def test_the_same_reading_twice_in_one_batch_is_stored_once(world: World, tomorrow: date) -> None:
    ean = world.voltflex_connections[0].ean

    result = meter_readings_import(rows=[row(ean, tomorrow, 70), row(ean, tomorrow, 70)])

    assert (result.received, result.stored, result.duplicates) == (2, 1, 1)
    assert MeterReading.objects.count() == 1


def test_an_unknown_connection_refuses_the_whole_batch(world: World, tomorrow: date) -> None:
    known = [row(c.ean, tomorrow, 70) for c in world.voltflex_connections]
    rows = [*known, row(next_ean(), tomorrow, 70)]

    with pytest.raises(ApplicationError) as raised:
        meter_readings_import(rows=rows)

    assert raised.value.code == "unknown_connection"
    assert raised.value.field == "rows[3].connection_ean"
    assert MeterReading.objects.count() == 0


@pytest.mark.parametrize("offset", [timedelta(minutes=7), timedelta(seconds=1), timedelta(minutes=30, microseconds=1)])
def test_an_isp_start_off_the_quarter_hour_refuses_the_batch(world: World, tomorrow: date, offset: timedelta) -> None:
    ean = world.voltflex_connections[0].ean
    late = MeterReadingRow(
        connection_ean=ean, isp_start=isp_time.isp_start(tomorrow, 71) + offset, kwh_import=Decimal("1.000")
    )

    with pytest.raises(ApplicationError) as raised:
        meter_readings_import(rows=[row(ean, tomorrow, 70), late])

    assert (raised.value.code, raised.value.field) == ("isp_not_aligned", "rows[1].isp_start")
    assert MeterReading.objects.count() == 0


def test_negative_import_energy_refuses_the_batch(world: World, tomorrow: date) -> None:
    ean = world.voltflex_connections[0].ean

    with pytest.raises(ApplicationError) as raised:
        meter_readings_import(rows=[row(ean, tomorrow, 70), row(ean, tomorrow, 71, kwh_import="-0.001")])

    assert (raised.value.code, raised.value.field) == ("negative_energy", "rows[1].kwh_import")
    assert MeterReading.objects.count() == 0


def test_negative_export_energy_refuses_the_batch(world: World, tomorrow: date) -> None:
    ean = world.voltflex_connections[0].ean

    with pytest.raises(ApplicationError) as raised:
        meter_readings_import(rows=[row(ean, tomorrow, 70), row(ean, tomorrow, 71, kwh_export="-0.500")])

    assert raised.value.code == "negative_energy"
    assert MeterReading.objects.count() == 0


def test_negative_export_energy_names_the_export_field(world: World, tomorrow: date) -> None:
    ean = world.voltflex_connections[0].ean

    with pytest.raises(ApplicationError) as raised:
        meter_readings_import(rows=[row(ean, tomorrow, 71, kwh_import="1.000", kwh_export="-0.500")])

    assert raised.value.field == "rows[0].kwh_export"


def test_it_stores_all_100_isps_of_the_autumn_dst_day(world: World) -> None:
    ean = world.voltflex_connections[0].ean
    assert isp_time.isp_count(AUTUMN_DST_DAY) == 100

    result = meter_readings_import(rows=[row(ean, AUTUMN_DST_DAY, isp) for isp in range(1, 101)])

    assert (result.stored, result.duplicates) == (100, 0)
    starts = list(MeterReading.objects.filter(connection_id=ean).values_list("isp_start", flat=True))
    assert len(set(starts)) == 100
    assert sorted(starts) == [slot.start for slot in isp_time.isp_slots(AUTUMN_DST_DAY)]
    # The repeated local hour: ISPs 9-12 (02:00-03:00 CEST) and 13-16 (02:00-03:00 CET) are distinct instants.
    repeated = [s.local_start.strftime("%H:%M") for s in isp_time.isp_slots(AUTUMN_DST_DAY)[8:16]]
    assert repeated == ["02:00", "02:15", "02:30", "02:45"] * 2


def test_it_stores_all_92_isps_of_the_spring_dst_day(world: World) -> None:
    ean = world.voltflex_connections[0].ean
    assert isp_time.isp_count(SPRING_DST_DAY) == 92

    result = meter_readings_import(rows=[row(ean, SPRING_DST_DAY, isp) for isp in range(1, 93)])

    assert (result.stored, result.duplicates) == (92, 0)
    starts = sorted(MeterReading.objects.filter(connection_id=ean).values_list("isp_start", flat=True))
    assert starts == [slot.start for slot in isp_time.isp_slots(SPRING_DST_DAY)]
    assert starts[-1] + isp_time.ISP == isp_time.day_start(SPRING_DST_DAY + timedelta(days=1))


def test_a_reading_without_a_utc_offset_is_refused_with_a_code(world: World, tomorrow: date) -> None:
    naive = MeterReadingRow(
        connection_ean=world.voltflex_connections[0].ean,
        isp_start=isp_time.isp_start(tomorrow, 10).replace(tzinfo=None),
        kwh_import=Decimal("1"),
    )
    with pytest.raises(ApplicationError) as raised:
        meter_readings_import(rows=[naive])
    assert (raised.value.code, raised.value.field) == ("naive_datetime", "rows[0].isp_start")
    assert MeterReading.objects.count() == 0
