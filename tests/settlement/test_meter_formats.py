"""Meter data formats: UFTP Metering messages, DSMR P1 telegrams and the import_meter_data command.

The DSMR examples are the four telegrams in ../shared/specs/dsmr/telegrams (MIT, from dsmr_parser's tests, see
SOURCE.txt there); the tests read them from that folder and copy nothing into the repository. A capture of
consecutive telegrams is made from the DSMR 5 example by setting its clock and registers and recomputing the
CRC16 the way a meter does.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from common import isp as isp_time
from common.exceptions import ApplicationError
from settlement.ingest import dsmr, uftp_metering
from settlement.ingest.csv_format import csv_text
from settlement.models import MeterImportBatch, MeterReading
from settlement.services.meter_data import meter_file_import
from tests.conftest import World

pytestmark = pytest.mark.django_db

TELEGRAMS = Path(__file__).resolve().parents[3] / "shared" / "specs" / "dsmr" / "telegrams"
needs_telegrams = pytest.mark.skipif(not TELEGRAMS.is_dir(),
                                     reason=f"the DSMR example telegrams ({TELEGRAMS}) are not on this machine")
DAY = date(2026, 11, 24)


# --- UFTP Metering -----------------------------------------------------------------------------------------


def metering_xml(ean: str, day: date, profiles: str, *, version: str = "3.1.0", revision: int = 1) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Metering Version="{version}" SenderDomain="agr.example.com" '
        f'RecipientDomain="dso.example.com" TimeStamp="{day}T02:00:00+01:00" '
        f'MessageID="00000017-0000-4000-8000-000000000017" ConversationID="00000109-0000-4000-8000-000000000109" '
        f'Revision="{revision}" ISP-Duration="PT15M" TimeZone="Europe/Amsterdam" Period="{day}" EAN="E{ean}">'
        f"{profiles}</Metering>"
    ).encode()


def profile(kind: str, unit: str, values: dict[int, str]) -> str:
    isps = "".join(f'<ISP Start="{isp}" Value="{value}"/>' for isp, value in values.items())
    return f'<Profile ProfileType="{kind}" Unit="{unit}">{isps}</Profile>'


def test_uftp_energy_profiles_become_readings(world: World, tmp_path: Path) -> None:
    ean = world.voltflex_connections[0].ean
    path = tmp_path / "metering.xml"
    path.write_bytes(metering_xml(ean, DAY, profile("ImportEnergy", "kWh", {1: "0.250", 2: "0.300", 3: "0.100"})
                                  + profile("ExportEnergy", "kWh", {3: "0.050"})))

    result = meter_file_import(path=path, file_format="uftp")

    assert (result.received, result.accepted, result.rejected, result.batch.source_format) == (3, 3, 0, "uftp")
    assert list(MeterReading.objects.order_by("isp_start").values_list("isp_start", "kwh_import", "kwh_export")) == [
        (isp_time.isp_start(DAY, 1), Decimal("0.250"), Decimal("0.000")),
        (isp_time.isp_start(DAY, 2), Decimal("0.300"), Decimal("0.000")),
        (isp_time.isp_start(DAY, 3), Decimal("0.100"), Decimal("0.050")),
    ]


def test_uftp_power_is_turned_into_energy_per_isp_on_the_right_side() -> None:
    message = uftp_metering.metering_parse(metering_xml("871685000000000016", DAY, profile(
        "Power", "kW", {1: "4.0", 2: "-2.2", 3: "1.01"})))

    assert [(row.isp_start, row.kwh_import, row.kwh_export) for row in message.rows] == [
        (isp_time.isp_start(DAY, 1).isoformat(), "1.000", "0"),
        (isp_time.isp_start(DAY, 2).isoformat(), "0", "0.550"),
        (isp_time.isp_start(DAY, 3).isoformat(), "0.253", "0"),  # 0.2525 kWh rounded to Wh
    ]


def test_uftp_meter_readings_are_differenced_and_the_first_isp_cannot_be_derived() -> None:
    message = uftp_metering.metering_parse(metering_xml("871685000000000016", DAY, profile(
        "ImportMeterReading", "kWh", {1: "100.000", 2: "100.250", 3: "100.750"})))

    assert [(row.isp_start, row.kwh_import) for row in message.rows] == [
        (isp_time.isp_start(DAY, 2).isoformat(), "0.250"), (isp_time.isp_start(DAY, 3).isoformat(), "0.500")]


def test_the_spec_example_message_parses() -> None:
    example = TELEGRAMS.parent.parent / "uftp" / "examples" / "synthetic-v3.1.0" / "Metering.xml"
    if not example.is_file():
        pytest.skip(f"{example} is not on this machine")
    message = uftp_metering.metering_parse(example.read_bytes())

    assert (message.period, message.revision, len(message.rows)) == (date(2026, 3, 16), 1, 96)
    assert message.rows[68].kwh_import == "45.000"  # 180 kW for a quarter of an hour


@pytest.mark.parametrize(("mangle", "field"), [
    (lambda xml: xml.replace(b'Version="3.1.0"', b'Version="2.0.0"'), "Version"),
    (lambda xml: xml.replace(b"PT15M", b"PT5M"), "ISP-Duration"),
    (lambda xml: xml.replace(b"Europe/Amsterdam", b"Europe/London"), "TimeZone"),
    (lambda xml: xml.replace(b'Unit="kWh"', b'Unit="MWh"'), "Profile.Unit"),
    (lambda xml: b'<!DOCTYPE x [<!ENTITY a "b">]>' + xml, "message"),
    (lambda xml: xml[:-20], "message"),
])
def test_a_bad_uftp_message_is_refused_whole(mangle: object, field: str) -> None:
    xml = metering_xml("871685000000000016", DAY, profile("ImportEnergy", "kWh", {1: "0.1"}))
    with pytest.raises(ApplicationError) as raised:
        uftp_metering.metering_parse(mangle(xml))  # type: ignore[operator]
    assert (raised.value.code, raised.value.field) == ("uftp_metering_invalid", field)


def test_uftp_isps_outside_the_day_are_rejected_rows(world: World, tmp_path: Path) -> None:
    ean = world.voltflex_connections[0].ean
    path = tmp_path / "metering.xml"
    path.write_bytes(metering_xml(ean, DAY, profile("ImportEnergy", "kWh", {96: "0.1", 97: "0.1"})))

    result = meter_file_import(path=path, file_format="uftp")

    assert [(r.row_number, r.reason) for r in result.rejections()] == [(2, "malformed")]


# --- DSMR P1 -----------------------------------------------------------------------------------------------


def crc16(data: bytes) -> int:
    """CRC-16/ARC over `/` .. `!` (DSMR 5.0 P1 companion standard, 6.12)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def telegram(template: bytes, at: datetime, kwh_import_t1: str, kwh_export_t1: str) -> bytes:
    """The DSMR 5 example with another clock and registers, its CRC recomputed."""
    local = at.astimezone(isp_time.MARKET_TZ)
    stamp = local.strftime("%y%m%d%H%M%S") + ("S" if local.dst() else "W")
    body = template[:template.index(b"!") + 1]
    body = re.sub(rb"0-0:1\.0\.0\(\d{12}[WS]\)", b"0-0:1.0.0(" + stamp.encode() + b")", body)
    body = re.sub(rb"1-0:1\.8\.1\([\d.]+\*kWh\)", f"1-0:1.8.1({kwh_import_t1}*kWh)".encode(), body)
    body = re.sub(rb"1-0:2\.8\.1\([\d.]+\*kWh\)", f"1-0:2.8.1({kwh_export_t1}*kWh)".encode(), body)
    return body + f"{crc16(body):04X}\r\n".encode()


@needs_telegrams
@pytest.mark.parametrize(("name", "kwh_import", "kwh_export", "at"), [
    ("dsmr_v4_2_kaifa.txt", "3016.829", "0.000", datetime(2016, 11, 13, 19, 57, 57, tzinfo=UTC)),
    ("dsmr_v5_iskra.txt", "6.825", "2.444", datetime(2017, 1, 2, 18, 20, 2, tzinfo=UTC)),
    ("dsmr_v5_two_mbus.txt", "2375.582", "0.000", datetime(2020, 4, 26, 20, 33, 25, tzinfo=UTC)),
    ("fluvius_be_v171.txt", "15.792", "0.011", datetime(2020, 5, 12, 11, 54, 9, tzinfo=UTC)),
])
def test_every_example_telegram_gives_its_registers(name: str, kwh_import: str, kwh_export: str,
                                                    at: datetime) -> None:
    text = (TELEGRAMS / name).read_bytes().decode("ascii")

    reading = dsmr.telegram_parse(text)

    assert (reading.at, reading.kwh_import, reading.kwh_export) == (at, Decimal(kwh_import), Decimal(kwh_export))


@needs_telegrams
def test_a_telegram_with_a_wrong_crc_is_refused() -> None:
    text = (TELEGRAMS / "dsmr_v5_iskra.txt").read_bytes().decode("ascii").replace("4.426", "4.427")

    with pytest.raises(ApplicationError) as raised:
        dsmr.telegram_parse(text)

    assert raised.value.code == "dsmr_invalid"


@needs_telegrams
def test_consecutive_telegrams_become_quarter_hour_readings(world: World, tmp_path: Path) -> None:
    template = (TELEGRAMS / "dsmr_v5_iskra.txt").read_bytes()
    start = isp_time.isp_start(DAY, 69)  # 17:00 local
    capture = b"".join([
        telegram(template, start - timedelta(seconds=5), "000100.000", "000010.000"),
        telegram(template, start + timedelta(seconds=5), "000100.010", "000010.000"),   # 1 Wh/s: 100.005 at 17:00
        telegram(template, start + timedelta(minutes=15), "000100.905", "000010.000"),  # exactly on 17:15
        telegram(template, start + timedelta(minutes=20), "000101.000", "000010.100"),
        telegram(template, start + timedelta(minutes=40), "000101.200", "000010.300"),  # 20-minute hole
    ])
    path = tmp_path / "p1.txt"
    path.write_bytes(capture)

    result = meter_file_import(path=path, file_format="dsmr", connection_ean=world.voltflex_connections[0].ean)

    assert (result.accepted, result.rejected, result.batch.source_format) == (2, 0, "dsmr")
    assert list(MeterReading.objects.order_by("isp_start").values_list(
        "isp_start", "kwh_import", "kwh_export", "quality")) == [
        (start, Decimal("0.900"), Decimal("0.000"), 0),
        # 17:15-17:30: 100.905 -> 101.100 (interpolated in the 20-minute hole), export 10.000 -> 10.200: estimated
        (start + isp_time.ISP, Decimal("0.195"), Decimal("0.200"), 1),
    ]


@needs_telegrams
def test_telegrams_of_two_meters_in_one_delivery_are_refused(world: World) -> None:
    first = (TELEGRAMS / "dsmr_v5_iskra.txt").read_bytes()
    second = (TELEGRAMS / "dsmr_v5_two_mbus.txt").read_bytes()

    with pytest.raises(ApplicationError) as raised:
        dsmr.dsmr_rows(first + second, connection_ean=world.voltflex_connections[0].ean)

    assert raised.value.code == "dsmr_several_meters"


# --- the management command --------------------------------------------------------------------------------


def test_the_command_imports_a_csv_and_prints_counts_and_the_report(world: World, tmp_path: Path) -> None:
    ean = world.voltflex_connections[0].ean
    start = isp_time.isp_start(DAY, 1).astimezone(isp_time.MARKET_TZ)
    path = tmp_path / "day.csv"
    path.write_text(csv_text([(ean, start.isoformat(), "0.250", "0.000", "0"),
                              (ean, start.isoformat()[:19], "0.250", "0.000", "0")]))
    out = StringIO()

    call_command("import_meter_data", str(path), stdout=out, stderr=StringIO())
    again = StringIO()
    call_command("import_meter_data", str(path), stdout=again, stderr=StringIO())

    text = out.getvalue()
    assert "received 2, accepted 1, corrected 0, unchanged 0, rejected 1, gaps 0" in text
    assert f"row 2: naive_datetime {ean} {start.isoformat()[:19]}" in text
    assert "imported before" in again.getvalue() and MeterImportBatch.objects.count() == 1


def test_the_command_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "readings.bin"
    path.write_bytes(b"\x00")
    with pytest.raises(CommandError, match="--format"):
        call_command("import_meter_data", str(path))
    with pytest.raises(CommandError, match="need the connection EAN"):
        call_command("import_meter_data", str(path), "--format", "dsmr")


def test_progress_lines_report_copy_and_merge_stages() -> None:
    from settlement.management.commands.import_meter_data import ProgressLines

    stream = StringIO()
    progress = ProgressLines(stream)
    for done in range(0, 101, 5):
        progress("copy", done * 1_000_000, 100_000_000)
    progress("merge", 0, 9_600_000)

    lines = stream.getvalue().splitlines()
    assert [line.split("] ")[1] for line in lines] == [
        f"copy {mb} of 100 MB ({mb} %)" for mb in range(0, 101, 10)] + ["validating and merging 9,600,000 rows"]
