"""DSMR P1 telegrams -> quarter-hour kWh per connection.

A telegram carries cumulative registers (kWh imported on tariffs 1 and 2, kWh exported on tariffs 1 and 2)
and the meter's clock. The energy of an ISP is the register at its end minus the register at its start; the
register at an ISP boundary is interpolated linearly between the two telegrams around it (P1 ports send one
every 1-10 s, so the interpolation moves well under a Wh). Only ISPs with a telegram on or before their start
and on or after their end are produced. If the telegrams around a boundary lie more than
MAX_MEASURED_SPAN apart, the reading is marked estimated (quality 1).

The connection: telegrams identify the meter (equipment id, 0-0:96.1.1), not the grid connection, and the
platform keeps no meter register, so the caller names the connection EAN explicitly; every telegram of one
delivery must come from one meter (checked where the telegram carries an equipment id).

Parsing, CRC16 checking and the meter variants are dsmr-parser's (MIT). Telegrams must keep their CRLF line
endings: the CRC covers them.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from dsmr_parser import telegram_specifications
from dsmr_parser.exceptions import InvalidChecksumError, ParseError
from dsmr_parser.parsers import TelegramParser

from common import isp as isp_time
from common.exceptions import ApplicationError
from settlement.ingest.rows import RawRow

MAX_MEASURED_SPAN = timedelta(minutes=1)
KWH = Decimal("0.001")

SPECIFICATIONS = {
    "v4": telegram_specifications.V4,
    "v5": telegram_specifications.V5,
    "fluvius": telegram_specifications.BELGIUM_FLUVIUS,
}
_TELEGRAM = re.compile(rb"/[^/!]*![0-9A-Fa-f]{4}\r?\n?", re.DOTALL)


@dataclass(frozen=True)
class RegisterReading:
    """Cumulative registers of one telegram."""

    at: datetime  # UTC
    kwh_import: Decimal
    kwh_export: Decimal
    equipment_id: str | None


def specification_detect(telegram: str) -> str:
    """v5 unless the telegram says otherwise: Fluvius (Belgium) carries 0-0:96.1.4, DSMR 4.x version 4x."""
    if "0-0:96.1.4(" in telegram:
        return "fluvius"
    match = re.search(r"1-3:0\.2\.8\((\d+)\)", telegram)
    if match and match.group(1).startswith("4"):
        return "v4"
    return "v5"


def telegrams_split(data: bytes) -> list[str]:
    """The telegrams of a P1 capture (concatenated, as a logger writes them), as ASCII text with CRLF kept."""
    found = [match.group(0).decode("ascii", errors="replace") for match in _TELEGRAM.finditer(data)]
    if not found:
        raise ApplicationError("No DSMR telegram found (a telegram runs from `/` to `!CRC`).", code="dsmr_invalid",
                               field="file")
    return found


def _value(telegram: object, name: str) -> Decimal:
    register = getattr(telegram, name, None)
    return Decimal(register.value) if register is not None and register.value is not None else Decimal(0)


def telegram_parse(text: str, *, specification: str | None = None) -> RegisterReading:
    spec_name = specification or specification_detect(text)
    parser = TelegramParser(SPECIFICATIONS[spec_name])
    try:
        telegram = parser.parse(text)
    except (InvalidChecksumError, ParseError) as exc:
        raise ApplicationError(f"DSMR telegram refused: {exc}", code="dsmr_invalid", field="file") from exc
    timestamp = getattr(telegram, "P1_MESSAGE_TIMESTAMP", None)
    if timestamp is None or timestamp.value is None:
        raise ApplicationError("DSMR telegram without a timestamp (0-0:1.0.0).", code="dsmr_invalid", field="file")
    equipment = getattr(telegram, "EQUIPMENT_IDENTIFIER", None)
    return RegisterReading(
        at=timestamp.value.astimezone(UTC),
        kwh_import=_value(telegram, "ELECTRICITY_USED_TARIFF_1") + _value(telegram, "ELECTRICITY_USED_TARIFF_2"),
        kwh_export=(_value(telegram, "ELECTRICITY_DELIVERED_TARIFF_1")
                    + _value(telegram, "ELECTRICITY_DELIVERED_TARIFF_2")),
        equipment_id=equipment.value if equipment is not None else None,
    )


def _at(readings: list[RegisterReading], times: list[datetime],
        boundary: datetime) -> tuple[Decimal, Decimal, timedelta] | None:
    """Registers interpolated at `boundary` and the span of the telegrams used; None outside the capture."""
    index = bisect.bisect_left(times, boundary)
    if index < len(times) and times[index] == boundary:
        return readings[index].kwh_import, readings[index].kwh_export, timedelta(0)
    if index == 0 or index == len(times):
        return None
    before, after = readings[index - 1], readings[index]
    span = after.at - before.at
    share = Decimal((boundary - before.at).total_seconds()) / Decimal(span.total_seconds())
    return (before.kwh_import + (after.kwh_import - before.kwh_import) * share,
            before.kwh_export + (after.kwh_export - before.kwh_export) * share, span)


def quarter_hours(readings: list[RegisterReading], *, connection_ean: str) -> list[RawRow]:
    """Quarter-hour rows from cumulative register readings (any order; duplicates by time collapse)."""
    if not readings:
        return []
    ordered = sorted({reading.at: reading for reading in readings}.values(), key=lambda reading: reading.at)
    meters = {reading.equipment_id for reading in ordered if reading.equipment_id}
    if len(meters) > 1:
        raise ApplicationError(f"The telegrams come from {len(meters)} meters; send one meter per delivery.",
                               code="dsmr_several_meters", field="file")
    times = [reading.at for reading in ordered]
    rows: list[RawRow] = []
    start = isp_time.ceil_to_isp(ordered[0].at)
    while start + isp_time.ISP <= ordered[-1].at:
        begin, end = _at(ordered, times, start), _at(ordered, times, start + isp_time.ISP)
        if begin is not None and end is not None:
            quality = 0 if max(begin[2], end[2]) <= MAX_MEASURED_SPAN else 1
            kwh_import = (end[0] - begin[0]).quantize(KWH, rounding=ROUND_HALF_UP)
            kwh_export = (end[1] - begin[1]).quantize(KWH, rounding=ROUND_HALF_UP)
            rows.append(RawRow(len(rows) + 1, connection_ean, start.isoformat(), str(kwh_import), str(kwh_export),
                               str(quality)))
        start += isp_time.ISP
    return rows


def dsmr_rows(data: bytes, *, connection_ean: str, specification: str | None = None) -> list[RawRow]:
    """Quarter-hour rows for `connection_ean` from a capture of P1 telegrams (bytes, CRLF kept)."""
    if not connection_ean:
        raise ApplicationError("DSMR telegrams need the connection EAN they were read at.", code="dsmr_connection",
                               field="connection")
    readings = [telegram_parse(text, specification=specification) for text in telegrams_split(data)]
    return quarter_hours(readings, connection_ean=connection_ean)
