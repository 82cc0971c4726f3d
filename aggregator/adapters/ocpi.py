"""OCPI 2.2.1 as Smart Charging Service Provider: the chargingprofiles sender side and transport rules.

Written to ../shared/specs/ocpi/OCPI-BRIEF.md: `Authorization: Token <base64>` (raw token for peers
configured without Base64), X-Request-ID / X-Correlation-ID, OCPI-from/to routing headers on functional
modules, the {data, status_code, status_message, timestamp} envelope, DateTime as YYYY-MM-DDTHH:MM:SSZ.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from django.conf import settings

from aggregator.adapters.base import ChargingProfileAdapter, ProfileSendResult
from aggregator.models import ChargePointOperator
from common import time as clock
from common.exceptions import AdapterError
from common.http import http_request
from common.isp import ISP

OCPI_VERSION = "2.2.1"
PROFILE_RESPONSE_RESULTS = {"ACCEPTED", "NOT_SUPPORTED", "REJECTED", "TOO_OFTEN", "UNKNOWN_SESSION"}
PROFILE_RESULT_TYPES = {"ACCEPTED", "REJECTED", "UNKNOWN"}


# --- transport helpers ------------------------------------------------------------------------------


def ocpi_datetime(value: datetime) -> str:
    """OCPI DateTime: UTC, second precision, trailing Z (offsets like +00:00 are not allowed)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ocpi_datetime(text: str) -> datetime:
    """Parse an OCPI DateTime, with or without the trailing Z and fractional seconds (always UTC)."""
    cleaned = text.strip().removesuffix("Z").removesuffix("z")
    if "+" in cleaned[10:] or "-" in cleaned[10:]:
        raise ValueError(f"OCPI DateTime must be UTC without offset: {text!r}")
    return datetime.fromisoformat(cleaned).replace(tzinfo=UTC)


def token_header(token: str, *, base64_encoded: bool = True) -> str:
    """Authorization header value: 'Token ' + Base64(UTF-8 token) (2.2.x), or the raw token for older peers."""
    if not base64_encoded:
        return f"Token {token}"
    return "Token " + base64.b64encode(token.encode("utf-8")).decode("ascii")


def token_candidates(header_value: str | None) -> list[str]:
    """Tokens a peer may mean by its Authorization header: the Base64-decoded value first, then the raw one.

    Tolerates a trailing newline after decoding: both encoded examples in the spec Base64-encode one.
    """
    if not header_value or not header_value.startswith("Token "):
        return []
    raw = header_value[len("Token "):].strip()
    candidates: list[str] = []
    try:
        decoded = base64.b64decode(raw, validate=True).decode("utf-8").rstrip("\n")
        if decoded:
            candidates.append(decoded)
    except (binascii.Error, UnicodeDecodeError):
        pass
    candidates.append(raw)
    return candidates


def envelope(*, data: Any = None, status_code: int = 1000, status_message: str | None = None) -> dict[str, Any]:
    """OCPI response envelope; `data` is omitted when None (e.g. replies to result POSTs)."""
    body: dict[str, Any] = {"status_code": status_code, "timestamp": ocpi_datetime(clock.now())}
    if data is not None:
        body["data"] = data
    if status_message:
        body["status_message"] = status_message
    return body


def functional_headers(*, cpo: ChargePointOperator, correlation_id: str) -> dict[str, str]:
    """Headers for a functional-module request from us (SCSP) to the CPO."""
    return {
        "Authorization": token_header(cpo.token_for_cpo, base64_encoded=cpo.auth_base64),
        "X-Request-ID": str(uuid.uuid4()),
        "X-Correlation-ID": correlation_id,
        "OCPI-from-country-code": settings.OCPI_COUNTRY_CODE,
        "OCPI-from-party-id": settings.OCPI_PARTY_ID,
        "OCPI-to-country-code": cpo.country_code,
        "OCPI-to-party-id": cpo.party_id,
    }


# --- charging profiles ------------------------------------------------------------------------------


def charging_profile_periods(limits_w: Sequence[int]) -> list[dict[str, Any]]:
    """Merge per-ISP limits into OCPI ChargingProfilePeriods (start_period seconds from profile start)."""
    periods: list[dict[str, Any]] = []
    step_s = int(ISP.total_seconds())
    for index, limit in enumerate(limits_w):
        if periods and periods[-1]["limit"] == float(limit):
            continue
        periods.append({"start_period": index * step_s, "limit": float(limit)})
    return periods


def set_charging_profile_body(*, start: datetime, limits_w: Sequence[int], response_url: str) -> dict[str, Any]:
    """A SetChargingProfile object: W limits per ISP from `start`, ending after the last ISP."""
    duration = timedelta(seconds=len(limits_w) * ISP.total_seconds())
    return {
        "charging_profile": {
            "start_date_time": ocpi_datetime(start),
            "duration": int(duration.total_seconds()),
            "charging_rate_unit": "W",
            "charging_profile_period": charging_profile_periods(limits_w),
        },
        "response_url": response_url,
    }


class OcpiChargingProfiles(ChargingProfileAdapter):
    """PUT {cpo chargingprofiles}/{session_id}, interpreting the synchronous ChargingProfileResponse."""

    def set_charging_profile(
        self, *, cpo: ChargePointOperator, session_id: str, body: dict[str, Any], correlation_id: str
    ) -> ProfileSendResult:
        # Session ids are CiString (any printable ASCII): one percent-encoded path segment, '/', '#', '?' included.
        url = cpo.chargingprofiles_url.rstrip("/") + "/" + quote(session_id, safe="")
        try:
            response = http_request("PUT", url, json=body,
                                    headers=functional_headers(cpo=cpo, correlation_id=correlation_id))
        except AdapterError as exc:
            if exc.status_code == 404:
                # Some CPOs answer an unknown session with HTTP 404 instead of UNKNOWN_SESSION (brief 6.5).
                return ProfileSendResult(result="UNKNOWN_SESSION", detail={"http_status": 404})
            raise
        try:
            payload = response.json()
        except ValueError as exc:
            raise AdapterError(f"PUT {url} answered non-JSON: {response.text[:200]!r}", permanent=False) from exc
        if not isinstance(payload, dict) or "status_code" not in payload:
            raise AdapterError(f"PUT {url} answered without an OCPI envelope: {payload!r:.200}", permanent=False)
        status_code = payload.get("status_code")
        if not isinstance(status_code, int):
            raise AdapterError(f"PUT {url}: status_code is not an integer: {status_code!r}", permanent=False)
        if 2000 <= status_code < 3000:
            # Client-side OCPI errors for a session PUT mean the CPO does not know the session (brief 6.5).
            return ProfileSendResult(result="UNKNOWN_SESSION", detail=payload)
        if status_code >= 3000:
            raise AdapterError(f"PUT {url}: OCPI server error {status_code} {payload.get('status_message', '')}",
                               permanent=False)
        data = payload.get("data") or {}
        result = data.get("result") if isinstance(data, dict) else None
        if result not in PROFILE_RESPONSE_RESULTS:
            raise AdapterError(f"PUT {url}: unknown ChargingProfileResponse result {result!r}", permanent=False)
        timeout = data.get("timeout")
        return ProfileSendResult(result=result, timeout_s=timeout if isinstance(timeout, int) else None, detail=payload)
