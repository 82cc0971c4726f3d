"""UFTP Metering (Shapeshifter 3.x, UFTP-BRIEF 4.10): one connection, one day, ISP profiles -> RawRows.

    <Metering Version="3.1.0" ... Revision="1" ISP-Duration="PT15M" TimeZone="Europe/Amsterdam"
              Period="2026-03-16" EAN="E871685900000000001">
      <Profile ProfileType="ImportEnergy" Unit="kWh"><ISP Start="1" Value="0.250"/>...</Profile>
    </Metering>

Which profile gives the kWh, first one present wins:
  ImportEnergy/ExportEnergy (kWh per ISP, as delivered; a missing one of the pair counts 0),
  ImportMeterReading/ExportMeterReading (cumulative at the END of each ISP: ISP n = reading n - reading n-1, so
  the first ISP of the message cannot be derived and is left out),
  Power (kW average, net: positive = import) -> kWh = kW x 0.25, on the import side if positive, else export.
EAN: the XSD's EANType is `E` + digits; `E` + the 18-digit connection EAN is expected (the 16-digit form of
the 3.x XSDs names no EAN-18 connection, so such rows are rejected as unknown connections).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree  # noqa: S405  (DTDs and entities are refused before parsing)
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from common import isp as isp_time
from common.exceptions import ApplicationError
from settlement.ingest.rows import RawRow

SUPPORTED_VERSIONS = ("3.0.0", "3.1.0")
ENERGY_PROFILES = ("ImportEnergy", "ExportEnergy")
READING_PROFILES = ("ImportMeterReading", "ExportMeterReading")
KWH = Decimal("0.001")


@dataclass(frozen=True)
class MeteringMessage:
    message_id: str
    revision: int
    period: date
    ean: str
    rows: list[RawRow]


def _refuse(message: str, field: str = "message") -> ApplicationError:
    return ApplicationError(message, code="uftp_metering_invalid", field=field)


def _profiles(root: ElementTree.Element) -> dict[str, dict[int, str]]:
    profiles: dict[str, dict[int, str]] = {}
    for profile in root.findall("Profile"):
        kind = profile.get("ProfileType", "")
        unit = profile.get("Unit", "")
        if kind in (*ENERGY_PROFILES, *READING_PROFILES) and unit != "kWh":
            raise _refuse(f"Profile {kind} must be in kWh, not {unit}.", "Profile.Unit")
        if kind == "Power" and unit != "kW":
            raise _refuse(f"Profile Power must be in kW, not {unit}.", "Profile.Unit")
        values: dict[int, str] = {}
        for isp in profile.findall("ISP"):
            try:
                start = int(isp.get("Start", ""))
            except ValueError as exc:
                raise _refuse("ISP Start must be an integer.", "ISP.Start") from exc
            if start in values:
                raise _refuse(f"ISP {start} appears twice in profile {kind} (ISP conflict).", "ISP.Start")
            values[start] = isp.get("Value", "")
        profiles[kind] = values
    return profiles


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _kwh_rows(profiles: dict[str, dict[int, str]], period: date, ean: str) -> list[tuple[int, str, str]]:
    """(ISP, kWh import, kWh export) as text; a value that is not a number stays as delivered (-> malformed)."""
    if any(kind in profiles for kind in ENERGY_PROFILES):
        imports, exports = profiles.get("ImportEnergy", {}), profiles.get("ExportEnergy", {})
        return [(isp, imports.get(isp, "0"), exports.get(isp, "0")) for isp in sorted(set(imports) | set(exports))]
    if any(kind in profiles for kind in READING_PROFILES):
        imports, exports = profiles.get("ImportMeterReading", {}), profiles.get("ExportMeterReading", {})
        rows = []
        for isp in sorted(set(imports) | set(exports)):
            if isp - 1 not in imports and isp - 1 not in exports:
                continue  # no reading at this ISP's start: its energy is unknown
            values = []
            for register in (imports, exports):
                end, begin = _decimal(register.get(isp, "0")), _decimal(register.get(isp - 1, "0"))
                values.append(str(end - begin) if end is not None and begin is not None else register.get(isp, ""))
            rows.append((isp, values[0], values[1]))
        return rows
    if "Power" in profiles:
        rows = []
        for isp, text in sorted(profiles["Power"].items()):
            kw = _decimal(text)
            if kw is None:
                rows.append((isp, text, "0"))
                continue
            kwh = (kw * Decimal(isp_time.ISP_MINUTES) / Decimal(60)).quantize(KWH, rounding=ROUND_HALF_UP)
            rows.append((isp, str(kwh), "0") if kwh >= 0 else (isp, "0", str(-kwh)))
        return rows
    raise _refuse("The message has no energy, meter-reading or Power profile.", "Profile")


def metering_parse(data: bytes) -> MeteringMessage:
    """Parse and check a Metering message; its ISP values become RawRows (ISP n -> its UTC start)."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise _refuse("DTDs and entities are not allowed in UFTP messages.")
    try:
        root = ElementTree.fromstring(data)  # noqa: S314  (no DTD/entities: checked above)
    except ElementTree.ParseError as exc:
        raise _refuse(f"Not well-formed XML: {exc}") from exc
    if root.tag != "Metering":
        raise _refuse(f"Expected a Metering message, got {root.tag}.")
    version = root.get("Version")
    if version not in SUPPORTED_VERSIONS:
        raise _refuse(f"Unsupported Version {version!r}; supported: {', '.join(SUPPORTED_VERSIONS)}.", "Version")
    if root.get("ISP-Duration") != f"PT{isp_time.ISP_MINUTES}M":
        raise _refuse(f"ISP-Duration must be PT{isp_time.ISP_MINUTES}M.", "ISP-Duration")
    if root.get("TimeZone") != str(isp_time.MARKET_TZ):
        raise _refuse(f"TimeZone must be {isp_time.MARKET_TZ}.", "TimeZone")
    try:
        period = date.fromisoformat(root.get("Period", ""))
        revision = int(root.get("Revision", ""))
    except ValueError as exc:
        raise _refuse("Period (yyyy-mm-dd) and Revision (integer) are required.", "Period") from exc
    ean_attribute = root.get("EAN", "")
    if ean_attribute[:1] not in ("E", "e") or not ean_attribute[1:].isdigit():
        raise _refuse("EAN must be E followed by digits.", "EAN")
    ean = ean_attribute[1:]
    rows: list[RawRow] = []
    for isp, kwh_import, kwh_export in _kwh_rows(_profiles(root), period, ean):
        try:
            start = isp_time.isp_start(period, isp).isoformat()
        except ValueError:
            start = f"ISP {isp} of {period.isoformat()}"  # outside the day: rejected as malformed
        rows.append(RawRow(len(rows) + 1, ean, start, kwh_import, kwh_export, "0"))
    return MeteringMessage(message_id=root.get("MessageID", ""), revision=revision, period=period, ean=ean,
                           rows=rows)
