"""OCPI 2.2.1 as Smart Charging Service Provider: the chargingprofiles sender side and transport rules.

Written to ../shared/specs/ocpi/OCPI-BRIEF.md: `Authorization: Token <base64>` (raw token for peers
configured without Base64), X-Request-ID / X-Correlation-ID, OCPI-from/to routing headers on functional
modules, the {data, status_code, status_message, timestamp} envelope, DateTime as YYYY-MM-DDTHH:MM:SSZ.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
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
    """The CPO's chargingprofiles RECEIVER: PUT / GET / DELETE {base}/{session_id}, interpreting the synchronous
    ChargingProfileResponse. Thread-safe (common.http keeps one pooled client per thread)."""

    def set_charging_profile(
        self, *, cpo: ChargePointOperator, session_id: str, body: dict[str, Any], correlation_id: str
    ) -> ProfileSendResult:
        return self._call("PUT", cpo=cpo, session_id=session_id, body=body, correlation_id=correlation_id)

    def get_active_profile(
        self, *, cpo: ChargePointOperator, session_id: str, duration_s: int, response_url: str, correlation_id: str
    ) -> ProfileSendResult:
        return self._call("GET", cpo=cpo, session_id=session_id, correlation_id=correlation_id,
                          params={"duration": str(duration_s), "response_url": response_url})

    def clear_profile(
        self, *, cpo: ChargePointOperator, session_id: str, response_url: str, correlation_id: str
    ) -> ProfileSendResult:
        return self._call("DELETE", cpo=cpo, session_id=session_id, correlation_id=correlation_id,
                          params={"response_url": response_url})

    def _call(self, method: str, *, cpo: ChargePointOperator, session_id: str, correlation_id: str,
              body: dict[str, Any] | None = None, params: dict[str, str] | None = None) -> ProfileSendResult:
        base = cpo.chargingprofiles_url or cpo.endpoint_url("chargingprofiles", "RECEIVER") or ""
        if not base:
            raise AdapterError(f"{cpo} published no chargingprofiles receiver endpoint", permanent=True)
        # Session ids are CiString (any printable ASCII): one percent-encoded path segment, '/', '#', '?' included.
        # response_url in the query is percent-encoded by httpx (OCPI-BRIEF 6.1).
        url = base.rstrip("/") + "/" + quote(session_id, safe="")
        try:
            response = http_request(method, url, json=body, params=params,
                                    headers=functional_headers(cpo=cpo, correlation_id=correlation_id))
        except AdapterError as exc:
            if exc.status_code == 404:
                # Some CPOs answer an unknown session with HTTP 404 instead of UNKNOWN_SESSION (brief 6.5).
                return ProfileSendResult(result="UNKNOWN_SESSION", detail={"http_status": 404})
            raise
        try:
            payload = response.json()
        except ValueError as exc:
            raise AdapterError(f"{method} {url} answered non-JSON: {response.text[:200]!r}", permanent=False) from exc
        if not isinstance(payload, dict) or "status_code" not in payload:
            raise AdapterError(f"{method} {url} answered without an OCPI envelope: {payload!r:.200}", permanent=False)
        status_code = payload.get("status_code")
        if not isinstance(status_code, int):
            raise AdapterError(f"{method} {url}: status_code is not an integer: {status_code!r}", permanent=False)
        if 2000 <= status_code < 3000:
            # Client-side OCPI errors for a session call mean the CPO does not know the session (brief 6.5).
            return ProfileSendResult(result="UNKNOWN_SESSION", detail=payload)
        if status_code >= 3000:
            raise AdapterError(f"{method} {url}: OCPI server error {status_code} {payload.get('status_message', '')}",
                               permanent=False)
        data = payload.get("data") or {}
        if isinstance(data, list) and len(data) == 1:
            data = data[0]  # some CPOs (extrawest-ocpi) wrap the one ChargingProfileResponse in a list
        result = data.get("result") if isinstance(data, dict) else None
        if result not in PROFILE_RESPONSE_RESULTS:
            raise AdapterError(f"{method} {url}: unknown ChargingProfileResponse result {result!r}", permanent=False)
        timeout = data.get("timeout")
        return ProfileSendResult(result=result, timeout_s=timeout if isinstance(timeout, int) else None, detail=payload)


# --- a generic OCPI client (credentials, versions, sessions/locations pull) ------------------------------


def ocpi_request(
    method: str,
    url: str,
    *,
    token: str,
    base64_encoded: bool = True,
    json: Any = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[Any, httpx.Response]:
    """Call a peer's OCPI endpoint and unwrap the envelope: (data, response).

    Raises AdapterError when the transport fails, the body is not an envelope, or status_code is not 1xxx
    (2xxx: our request is wrong, permanent; 3xxx/4xxx: the peer's or a hub's trouble, transient)."""
    all_headers = {"Authorization": token_header(token, base64_encoded=base64_encoded),
                   "X-Request-ID": str(uuid.uuid4())}
    all_headers.setdefault("X-Correlation-ID", all_headers["X-Request-ID"])
    all_headers.update(headers or {})
    response = http_request(method, url, json=json, params=params, headers=all_headers)
    try:
        payload = response.json()
    except ValueError as exc:
        raise AdapterError(f"{method} {url} answered non-JSON: {response.text[:200]!r}", permanent=False) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("status_code"), int):
        raise AdapterError(f"{method} {url} answered without an OCPI envelope: {payload!r:.200}", permanent=False)
    status_code = payload["status_code"]
    if not 1000 <= status_code < 2000:
        raise AdapterError(f"{method} {url}: OCPI status {status_code} {payload.get('status_message', '')}".strip(),
                           permanent=2000 <= status_code < 3000, status_code=status_code)
    return payload.get("data"), response


_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?', re.IGNORECASE)


def next_page_url(link_header: str | None) -> str | None:
    """The `rel="next"` target of a Link header (OCPI pagination), or None on the last page."""
    if not link_header:
        return None
    match = _LINK_NEXT.search(link_header)
    return match.group(1) if match else None


def ocpi_get_all(
    url: str, *, token: str, base64_encoded: bool = True, params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None, max_pages: int = 10_000,
) -> Iterator[dict[str, Any]]:
    """Every object of a paginated OCPI list: GET with the filters, then follow Link rel="next" verbatim (it
    carries the filters) until there is none (OCPI-BRIEF 2.4)."""
    next_url: str | None = url
    query = params
    for _ in range(max_pages):
        if next_url is None:
            return
        data, response = ocpi_request("GET", next_url, token=token, base64_encoded=base64_encoded, params=query,
                                      headers=headers)
        if not isinstance(data, list):
            raise AdapterError(f"GET {next_url}: a list endpoint answered {type(data).__name__}", permanent=False)
        yield from (item for item in data if isinstance(item, dict))
        next_url, query = next_page_url(response.headers.get("Link")), None
    raise AdapterError(f"GET {url}: more than {max_pages} pages", permanent=False)
