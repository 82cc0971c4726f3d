"""OSCP 2.0 transport and message shapes, for us as Capacity Provider (../shared/specs/oscp/OSCP-BRIEF.md).

Rules kept here: every message is one JSON object POSTed (Register also PUT/DELETE) to
`{peer base_url}/{endpoint}`; success is HTTP 204 (any 2xx accepted); `Authorization: Token <token>` with the
raw token the receiver issued (no Base64, unlike OCPI 2.2); a fresh `X-Request-ID` per request and
`X-Correlation-ID` on answers; DateTimes RFC 3339, emitted in UTC with `Z`.

Inbound bodies are checked by the hand-written parsers below (the JSON Schemas in ../shared are GPL and stay out
of the product; the tests hold every body we send against them). A parser raises OscpBodyError with the path of
the offending field, which the views answer with HTTP 400 and {"message": ...}.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from common.exceptions import AdapterError
from common.http import http_request

OSCP_VERSION = "2.0"
CAPACITY_FORECAST_TYPES = ("CONSUMPTION", "GENERATION", "FALLBACK_CONSUMPTION", "FALLBACK_GENERATION", "OPTIMUM")
PHASES = ("UNKNOWN", "ONE", "TWO", "THREE", "ALL")
FORECAST_UNITS = ("A", "W", "KW", "WH", "KWH")  # pyoscp's EUR, EUR/KWH, EUR/KW are not OSCP: refused
ENERGY_UNITS = ("WH", "KWH")
DIRECTIONS = ("NET", "IMPORT", "EXPORT")
ENERGY_TYPES = ("FLEXIBLE", "NONFLEXIBLE", "TOTAL")
MEASUREMENT_CONFIGURATIONS = ("CONTINUOUS", "INTERMITTENT")


class OscpBodyError(ValueError):
    """An inbound OSCP body does not follow the message schema; the text names the field."""


# --- time -------------------------------------------------------------------------------------------


def oscp_datetime(value: datetime) -> str:
    """RFC 3339 in UTC with a trailing Z (second precision: forecasts are ISP-aligned)."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime not allowed: {value!r}")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_oscp_datetime(text: Any, *, field: str) -> datetime:
    """Parse an RFC 3339 DateTime; the zone (Z or an offset) is required."""
    if not isinstance(text, str) or "T" not in text.upper():
        raise OscpBodyError(f"{field}: expected an RFC 3339 date-time with zone, got {text!r}")
    try:
        value = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:
        raise OscpBodyError(f"{field}: expected an RFC 3339 date-time with zone, got {text!r}") from exc
    if value.tzinfo is None or value.utcoffset() is None:
        raise OscpBodyError(f"{field}: the date-time needs a zone (Z or an offset): {text!r}")
    return value.astimezone(UTC)


# --- headers ----------------------------------------------------------------------------------------


def auth_header(token: str) -> str:
    """`Token <token>` with the raw token (brief 2: SolarNetwork and pyoscp send it without Base64)."""
    return f"Token {token}"


def presented_tokens(header_value: str | None) -> list[str]:
    """Tokens a caller may mean: the raw value first (OSCP), then its Base64 decoding for OCPI-minded peers."""
    if not header_value or not header_value.startswith("Token "):
        return []
    raw = header_value[len("Token "):].strip()
    if not raw:
        return []
    candidates = [raw]
    try:
        decoded = base64.b64decode(raw, validate=True).decode("utf-8").strip()
        if decoded and decoded != raw:
            candidates.append(decoded)
    except (binascii.Error, UnicodeDecodeError):
        pass
    return candidates


def request_headers(*, token: str, request_id: str, correlation_id: str = "") -> dict[str, str]:
    headers = {"Authorization": auth_header(token), "X-Request-ID": request_id, "Content-Type": "application/json"}
    if correlation_id:
        headers["X-Correlation-ID"] = correlation_id
    return headers


def send(*, method: str, url: str, token: str, request_id: str, body: dict[str, Any] | None,
         correlation_id: str = "") -> httpx.Response:
    """Send one OSCP message. Any 2xx is success (204 is what the spec asks for); AdapterError otherwise.

    A 501 (no common version at Register) will not change by itself, so it is permanent like other 4xx.
    """
    headers = request_headers(token=token, request_id=request_id, correlation_id=correlation_id)
    try:
        response = http_request(method, url, json=body, headers=headers)
    except AdapterError as exc:
        if exc.status_code == 501:
            raise AdapterError(exc.message, permanent=True, status_code=501) from exc
        raise
    if not 200 <= response.status_code < 300:
        # A redirect or informational answer (a proxy's login page, a misrouted URL) is not an acknowledgement.
        raise AdapterError(f"{method} {url} answered HTTP {response.status_code}, not 2xx: {response.text[:200]!r}",
                           permanent=False, status_code=response.status_code)
    return response


# --- bodies we send ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One ForecastedBlock in our terms: [start, end) UTC with a capacity in `unit`."""

    start: datetime
    end: datetime
    capacity: float
    unit: str = "KW"
    phase: str = "ALL"

    def as_json(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "phase": self.phase, "unit": self.unit,
                "start_time": oscp_datetime(self.start), "end_time": oscp_datetime(self.end)}


def register_body(*, token: str, base_url: str) -> dict[str, Any]:
    return {"token": token, "version_url": [{"version": OSCP_VERSION, "base_url": base_url}]}


def required_behaviour(*, heartbeat_interval_s: int | None, measurement_configuration: Iterable[str]) -> dict[str, Any]:
    behaviour: dict[str, Any] = {"measurement_configuration": list(dict.fromkeys(measurement_configuration))}
    if heartbeat_interval_s:
        behaviour["heartbeat_interval"] = heartbeat_interval_s
    return behaviour


def heartbeat_body(*, offline_mode_at: datetime) -> dict[str, Any]:
    return {"offline_mode_at": oscp_datetime(offline_mode_at)}


def capacity_forecast_body(*, group_id: str, forecast_type: str, blocks: Iterable[Block]) -> dict[str, Any]:
    if forecast_type not in CAPACITY_FORECAST_TYPES:
        raise ValueError(f"unknown CapacityForecastType {forecast_type!r}")
    rows = [block.as_json() for block in blocks]
    if not rows:
        raise ValueError("a capacity forecast needs at least one block")
    return {"group_id": group_id, "type": forecast_type, "forecasted_blocks": rows}


def merge_equal_blocks(blocks: Iterable[Block]) -> list[Block]:
    """Join contiguous blocks of equal capacity (fewer, longer blocks; same limits)."""
    merged: list[Block] = []
    for block in blocks:
        last = merged[-1] if merged else None
        if (last is not None and last.end == block.start and last.capacity == block.capacity
                and last.unit == block.unit and last.phase == block.phase):
            merged[-1] = Block(start=last.start, end=block.end, capacity=last.capacity, unit=last.unit,
                               phase=last.phase)
        else:
            merged.append(block)
    return merged


# --- bodies we receive ------------------------------------------------------------------------------


def _object(body: Any, *, field: str = "body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise OscpBodyError(f"{field}: expected a JSON object")
    return body


def _string(body: dict[str, Any], key: str, *, field: str, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise OscpBodyError(f"{field}{key}: required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise OscpBodyError(f"{field}{key}: expected a non-empty string")
    return value


def _enum(body: dict[str, Any], key: str, allowed: tuple[str, ...], *, field: str, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise OscpBodyError(f"{field}{key}: required")
        return None
    if value not in allowed:
        raise OscpBodyError(f"{field}{key}: {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _number(body: dict[str, Any], key: str, *, field: str, minimum: float | None = None) -> Decimal:
    value = body.get(key)
    if value is None:
        raise OscpBodyError(f"{field}{key}: required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OscpBodyError(f"{field}{key}: expected a number, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:  # pragma: no cover - int/float always convert
        raise OscpBodyError(f"{field}{key}: expected a number") from exc
    if not number.is_finite() or (minimum is not None and number < minimum):
        raise OscpBodyError(f"{field}{key}: must be a number >= {minimum}")
    return number


def _array(body: dict[str, Any], key: str, *, field: str, required: bool = True) -> list[Any]:
    value = body.get(key)
    if value is None:
        if required:
            raise OscpBodyError(f"{field}{key}: required")
        return []
    if not isinstance(value, list) or not value:
        raise OscpBodyError(f"{field}{key}: expected a non-empty array")
    return value


@dataclass(frozen=True)
class ParsedRegister:
    token: str
    base_url: str | None  # the 2.0 entry, None if the peer offers no 2.0


def parse_register(body: Any) -> ParsedRegister:
    data = _object(body)
    token = _string(data, "token", field="")
    base_url = None
    for index, entry in enumerate(_array(data, "version_url", field="")):
        item = _object(entry, field=f"version_url[{index}]")
        version = _string(item, "version", field=f"version_url[{index}].")
        url = _string(item, "base_url", field=f"version_url[{index}].")
        if not str(url).startswith(("http://", "https://")):
            raise OscpBodyError(f"version_url[{index}].base_url: expected an http(s) URL, got {url!r}")
        if version == OSCP_VERSION and base_url is None:
            base_url = str(url).rstrip("/")
    return ParsedRegister(token=str(token), base_url=base_url)


def parse_required_behaviour(body: Any, *, field: str = "required_behaviour") -> dict[str, Any]:
    data = _object(body, field=field)
    configs = data.get("measurement_configuration")
    if configs is None:
        raise OscpBodyError(f"{field}.measurement_configuration: required")
    if not isinstance(configs, list) or any(c not in MEASUREMENT_CONFIGURATIONS for c in configs):
        raise OscpBodyError(f"{field}.measurement_configuration: expected an array of "
                            f"{', '.join(MEASUREMENT_CONFIGURATIONS)}")
    if len(set(configs)) != len(configs):
        raise OscpBodyError(f"{field}.measurement_configuration: items must be unique")
    behaviour: dict[str, Any] = {"measurement_configuration": list(configs)}
    if data.get("heartbeat_interval") is not None:
        interval = _number(data, "heartbeat_interval", field=f"{field}.", minimum=1)
        behaviour["heartbeat_interval"] = int(interval) if interval == int(interval) else float(interval)
    return behaviour


def parse_handshake(body: Any) -> dict[str, Any] | None:
    """Handshake and HandshakeAcknowledge: an optional RequiredBehaviour."""
    data = _object(body)
    if data.get("required_behaviour") is None:
        return None
    return parse_required_behaviour(data["required_behaviour"])


def parse_heartbeat(body: Any) -> datetime:
    data = _object(body)
    if data.get("offline_mode_at") is None:
        raise OscpBodyError("offline_mode_at: required")
    return parse_oscp_datetime(data["offline_mode_at"], field="offline_mode_at")


def parse_blocks(values: list[Any], *, field: str = "forecasted_blocks") -> list[Block]:
    blocks = []
    for index, raw in enumerate(values):
        where = f"{field}[{index}]."
        item = _object(raw, field=where.rstrip("."))
        capacity = _number(item, "capacity", field=where, minimum=0)
        phase = _enum(item, "phase", PHASES, field=where)
        unit = _enum(item, "unit", FORECAST_UNITS, field=where)
        start = parse_oscp_datetime(item.get("start_time"), field=where + "start_time")
        end = parse_oscp_datetime(item.get("end_time"), field=where + "end_time")
        if end <= start:
            raise OscpBodyError(f"{where}end_time: must be after start_time")
        blocks.append(Block(start=start, end=end, capacity=float(capacity), unit=str(unit), phase=str(phase)))
    return blocks


@dataclass(frozen=True)
class ParsedForecast:
    group_id: str
    forecast_type: str
    blocks: list[Block]


def parse_capacity_forecast(body: Any) -> ParsedForecast:
    """UpdateGroupCapacityForecast / AdjustGroupCapacityForecast."""
    data = _object(body)
    group_id = _string(data, "group_id", field="")
    forecast_type = _enum(data, "type", CAPACITY_FORECAST_TYPES, field="")
    blocks = parse_blocks(_array(data, "forecasted_blocks", field=""))
    return ParsedForecast(group_id=str(group_id), forecast_type=str(forecast_type), blocks=blocks)


@dataclass(frozen=True)
class ParsedComplianceError:
    message: str
    blocks: list[Block]


def parse_compliance_error(body: Any) -> ParsedComplianceError:
    data = _object(body)
    message = _string(data, "message", field="")
    blocks = parse_blocks(_array(data, "forecasted_blocks", field="", required=False))
    return ParsedComplianceError(message=str(message), blocks=blocks)


@dataclass(frozen=True)
class EnergyMeasurement:
    value: Decimal
    phase: str
    unit: str
    direction: str
    energy_type: str
    measure_time: datetime
    initial_measure_time: datetime | None

    @property
    def value_kwh(self) -> Decimal:
        return self.value / 1000 if self.unit == "WH" else self.value


@dataclass(frozen=True)
class ParsedGroupMeasurements:
    group_id: str
    measurements: list[EnergyMeasurement]


def parse_group_measurements(body: Any, *, intermittent_required: bool = False) -> ParsedGroupMeasurements:
    """UpdateGroupMeasurements. `intermittent_required`: we asked for INTERMITTENT, so initial_measure_time is
    mandatory (brief 3.2)."""
    data = _object(body)
    group_id = _string(data, "group_id", field="")
    measurements = []
    for index, raw in enumerate(_array(data, "measurements", field="")):
        where = f"measurements[{index}]."
        item = _object(raw, field=where.rstrip("."))
        initial = item.get("initial_measure_time")
        if initial is None and intermittent_required:
            raise OscpBodyError(f"{where}initial_measure_time: required (we asked for INTERMITTENT measurements)")
        measurements.append(EnergyMeasurement(
            value=_number(item, "value", field=where),
            phase=str(_enum(item, "phase", PHASES, field=where)),
            unit=str(_enum(item, "unit", ENERGY_UNITS, field=where)),
            direction=str(_enum(item, "direction", DIRECTIONS, field=where)),
            energy_type=_enum(item, "energy_type", ENERGY_TYPES, field=where, required=False) or "TOTAL",
            measure_time=parse_oscp_datetime(item.get("measure_time"), field=where + "measure_time"),
            initial_measure_time=None if initial is None
            else parse_oscp_datetime(initial, field=where + "initial_measure_time"),
        ))
    return ParsedGroupMeasurements(group_id=str(group_id), measurements=measurements)
