"""A simulated Flexibility Provider (a CPO back-office speaking OSCP 2.0) for demos and tests.

Served at /sandbox/oscp/<fp name>/fp/2.0/<endpoint>: register (POST/PUT/DELETE), handshake,
handshake_acknowledge (and pyoscp's handshake_acknowledgment), heartbeat, update_group_capacity_forecast.
It follows the brief's flows: a Register from the CP (authenticated with the token A it handed out) is answered
with its own Register (new token, X-Correlation-ID = the CP's X-Request-ID); a Handshake is answered with a
HandshakeAcknowledge; forecasts are kept per group and type. It also starts messages of its own
(`fp_register_at_cp`, `fp_send_heartbeat`, `fp_send_measurements`, `fp_send_compliance_error`,
`fp_request_adjustment`).

Follow-ups are sent inline, before the 204 (`followups="inline"`, deterministic for tests) or after the response
has gone out (`followups="after_response"`, as SolarNetwork does).

Faults (`fp_fault_set`): the next `count` requests (-1: all) get `status` (e.g. 500, 503, 401, 400), or hang
`delay_s` seconds before answering ("timeout"), or an HTML error page with 502 ("garbage"). A peer that is down
for minutes is a fault with count -1 until cleared.

State lives in the Django cache (process memory by default; Redis with CACHE_URL), so the demo's one process and
the tests' live server share it. No database tables: the sandbox FP is a peer, not our data.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from common import time as clock
from common.exceptions import AdapterError
from common.http import http_request

OSCP_VERSION = "2.0"
CACHE_TIMEOUT_S = 7 * 24 * 3600
_lock = threading.Lock()


@dataclass
class Fault:
    status: int = 0  # answer this HTTP status
    mode: str = "status"  # status | timeout | garbage
    delay_s: float = 0.0
    count: int = 0  # requests still to fault; -1 = until cleared


@dataclass
class SandboxFp:
    name: str
    base_url: str  # our own FP base URL (what we announce in Register)
    tokens_in: list[str] = field(default_factory=list)  # tokens we issued (A, then C)
    token_out: str = ""  # the token the CP issued to us
    cp_base_url: str = ""
    groups: list[str] = field(default_factory=list)  # group ids we serve (empty: any)
    required_behaviour: dict[str, Any] = field(
        default_factory=lambda: {"heartbeat_interval": 60, "measurement_configuration": ["CONTINUOUS"]})
    cp_required_behaviour: dict[str, Any] | None = None
    cp_offline_mode_at: str | None = None
    handshake_complete: bool = False
    followups: str = "inline"
    fault: Fault = field(default_factory=Fault)
    received: list[dict[str, Any]] = field(default_factory=list)
    forecasts: dict[str, dict[str, Any]] = field(default_factory=dict)  # "group|type" -> body
    sent: list[dict[str, Any]] = field(default_factory=list)
    register_kwh: float = 0.0


def _key(name: str) -> str:
    return f"sandbox:oscp-fp:{name}"


def fp_get(name: str) -> SandboxFp | None:
    raw = cache.get(_key(name))
    if raw is None:
        return None
    raw = dict(raw)
    raw["fault"] = Fault(**raw.get("fault", {}))
    return SandboxFp(**raw)


def _put(fp: SandboxFp) -> None:
    cache.set(_key(fp.name), asdict(fp), CACHE_TIMEOUT_S)


def _update(name: str, change: Any) -> SandboxFp:
    with _lock:
        fp = fp_get(name)
        if fp is None:
            raise KeyError(name)
        change(fp)
        _put(fp)
        return fp


def fp_setup(*, name: str, base_url: str, initial_token: str | None = None, groups: list[str] | None = None,
             heartbeat_interval_s: int | None = 60, followups: str = "inline") -> tuple[SandboxFp, str]:
    """Create (or reset) a sandbox FP; returns it and the token A it hands the CP out of band."""
    token_a = initial_token or secrets.token_urlsafe(24)
    behaviour: dict[str, Any] = {"measurement_configuration": ["CONTINUOUS"]}
    if heartbeat_interval_s:
        behaviour["heartbeat_interval"] = heartbeat_interval_s
    fp = SandboxFp(name=name, base_url=base_url.rstrip("/"), tokens_in=[token_a], groups=list(groups or []),
                   required_behaviour=behaviour, followups=followups)
    with _lock:
        _put(fp)
    return fp, token_a


def fp_fault_set(name: str, *, status: int = 0, mode: str = "status", delay_s: float = 0.0, count: int = -1) -> None:
    _update(name, lambda fp: setattr(fp, "fault", Fault(status=status, mode=mode, delay_s=delay_s, count=count)))


def fp_fault_clear(name: str) -> None:
    _update(name, lambda fp: setattr(fp, "fault", Fault()))


# --- receiving ----------------------------------------------------------------------------------------


def _error(status: int, message: str) -> JsonResponse:
    response = JsonResponse({"message": message}, status=status)
    response["X-Error-Message"] = message
    return response


def _take_fault(name: str) -> Fault | None:
    with _lock:
        fp = fp_get(name)
        if fp is None or fp.fault.count == 0:
            return None
        fault = Fault(**asdict(fp.fault))
        if fp.fault.count > 0:
            fp.fault.count -= 1
        _put(fp)
        return fault


def _faulted(fault: Fault) -> HttpResponse:
    if fault.mode == "timeout":
        time.sleep(fault.delay_s)
        return HttpResponse(status=204)
    if fault.mode == "garbage":
        return HttpResponse(b"<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html")
    return _error(fault.status or 500, f"sandbox fault: HTTP {fault.status or 500}")


@csrf_exempt
def fp_endpoint(request: HttpRequest, name: str, endpoint: str) -> HttpResponse:
    fp = fp_get(name)
    if fp is None:
        return _error(404, f"no sandbox FP {name!r}")
    fault = _take_fault(name)
    if fault is not None:
        return _faulted(fault)
    header = request.headers.get("Authorization") or ""
    token = header[len("Token "):].strip() if header.startswith("Token ") else ""
    if not token:
        return _error(401, "Authorization: Token <token> is required")
    if token not in fp.tokens_in:
        return _error(403, "invalid token")
    request_id = request.headers.get("X-Request-ID") or ""
    if not request_id:
        return _error(400, "X-Request-ID header is required")
    body: Any = None
    if request.method in ("POST", "PUT"):
        try:
            body = json.loads(request.body or b"")
        except ValueError:
            return _error(400, "body: not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "body: expected a JSON object")
    correlation_id = request.headers.get("X-Correlation-ID") or ""
    record = {"endpoint": endpoint, "method": request.method, "request_id": request_id,
              "correlation_id": correlation_id, "authorization": header, "body": body}
    handler = _HANDLERS.get((endpoint, request.method or ""))
    if handler is None:
        return _error(404 if not any(e == endpoint for e, _ in _HANDLERS) else 405, f"{request.method} {endpoint}")
    problem = handler(name, body, request_id, correlation_id, token)
    if problem:
        return _error(400, problem)
    _update(name, lambda fp: fp.received.append(record))
    response = HttpResponse(status=204)
    followups = _pending_followups.pop(request_id, [])
    if fp.followups == "after_response":
        for followup in followups:
            response._resource_closers.append(followup)  # type: ignore[attr-defined]  # run after the response is sent
    else:
        for followup in followups:
            followup()
    return response


_pending_followups: dict[str, list[Any]] = {}


def _later(request_id: str, action: Any) -> None:
    _pending_followups.setdefault(request_id, []).append(action)


def _on_register(name: str, body: Any, request_id: str, correlation_id: str, token: str) -> str | None:
    versions = body.get("version_url") if isinstance(body.get("version_url"), list) else []
    chosen = next((v for v in versions if isinstance(v, dict) and v.get("version") == OSCP_VERSION), None)
    if not isinstance(body.get("token"), str) or chosen is None or not isinstance(chosen.get("base_url"), str):
        return "Register needs token and a version_url entry for 2.0"
    new_token = secrets.token_urlsafe(24)

    def change(fp: SandboxFp) -> None:
        fp.token_out = body["token"]
        fp.cp_base_url = chosen["base_url"].rstrip("/")
        if not correlation_id:  # the CP started: token A dies, our new token replaces it
            fp.tokens_in = [new_token]

    fp = _update(name, change)
    if not correlation_id:
        _later(request_id, lambda: _post(name, "register", {"token": new_token, "version_url": [
            {"version": OSCP_VERSION, "base_url": fp.base_url}]}, correlation_id=request_id))
    return None


def _on_register_put(name: str, body: Any, request_id: str, correlation_id: str, token: str) -> str | None:
    versions = body.get("version_url") or []
    chosen = next((v for v in versions if isinstance(v, dict) and v.get("version") == OSCP_VERSION), None)
    if not isinstance(body.get("token"), str) or chosen is None:
        return "Register needs token and a version_url entry for 2.0"

    def change(fp: SandboxFp) -> None:
        fp.token_out = body["token"]
        fp.cp_base_url = str(chosen["base_url"]).rstrip("/")

    _update(name, change)
    return None


def _on_unregister(name: str, body: Any, request_id: str, correlation_id: str, token: str) -> str | None:
    def change(fp: SandboxFp) -> None:
        fp.tokens_in, fp.token_out, fp.handshake_complete = [], "", False

    _update(name, change)
    return None


def _on_handshake(name: str, body: Any, request_id: str, correlation_id: str, token: str) -> str | None:
    behaviour = body.get("required_behaviour")
    if behaviour is not None and not isinstance(behaviour, dict):
        return "required_behaviour must be an object"

    def change(fp: SandboxFp) -> None:
        fp.cp_required_behaviour = behaviour
        fp.handshake_complete = True

    fp = _update(name, change)
    _later(request_id, lambda: _post(name, "handshake_acknowledge",
                                     {"required_behaviour": fp.required_behaviour}, correlation_id=request_id))
    return None


def _on_handshake_ack(name: str, body: Any, request_id: str, correlation_id: str, token: str) -> str | None:
    def change(fp: SandboxFp) -> None:
        fp.cp_required_behaviour = body.get("required_behaviour") or fp.cp_required_behaviour
        fp.handshake_complete = True

    _update(name, change)
    return None


def _on_heartbeat(name: str, body: Any, request_id: str, correlation_id: str, token: str) -> str | None:
    value = body.get("offline_mode_at")
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return "offline_mode_at must be an RFC 3339 date-time"
    if parsed.tzinfo is None:
        return "offline_mode_at needs a zone"
    _update(name, lambda fp: setattr(fp, "cp_offline_mode_at", parsed.astimezone(UTC).isoformat()))
    return None


def _on_forecast(name: str, body: Any, request_id: str, correlation_id: str, token: str) -> str | None:
    fp = fp_get(name)
    assert fp is not None
    group_id, forecast_type, blocks = body.get("group_id"), body.get("type"), body.get("forecasted_blocks")
    if not isinstance(group_id, str) or not isinstance(forecast_type, str) or not isinstance(blocks, list) or not blocks:
        return "UpdateGroupCapacityForecast needs group_id, type and forecasted_blocks"
    if fp.groups and group_id not in fp.groups:
        return f"unknown group_id {group_id!r}"
    if not fp.handshake_complete:
        return "handshake first"
    _update(name, lambda fp: fp.forecasts.__setitem__(f"{group_id}|{forecast_type}", body))
    return None


_HANDLERS = {
    ("register", "POST"): _on_register,
    ("register", "PUT"): _on_register_put,
    ("register", "DELETE"): _on_unregister,
    ("handshake", "POST"): _on_handshake,
    ("handshake_acknowledge", "POST"): _on_handshake_ack,
    ("handshake_acknowledgment", "POST"): _on_handshake_ack,
    ("heartbeat", "POST"): _on_heartbeat,
    ("update_group_capacity_forecast", "POST"): _on_forecast,
}


# --- sending ------------------------------------------------------------------------------------------


def _post(name: str, endpoint: str, body: dict[str, Any], *, correlation_id: str = "",
          token: str | None = None) -> int:
    """POST one message to the CP; returns the HTTP status (raises AdapterError on failure)."""
    fp = fp_get(name)
    assert fp is not None and fp.cp_base_url, "the sandbox FP does not know the CP's base URL yet"
    headers = {"Authorization": f"Token {token or fp.token_out}", "X-Request-ID": str(uuid.uuid4())}
    if correlation_id:
        headers["X-Correlation-ID"] = correlation_id
    response = http_request("POST", f"{fp.cp_base_url}/{endpoint}", json=body, headers=headers)
    _update(name, lambda fp: fp.sent.append({"endpoint": endpoint, "headers": headers, "body": body,
                                             "status": response.status_code}))
    return response.status_code


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fp_register_at_cp(name: str, *, cp_base_url: str, cp_token: str) -> int:
    """The FP starts registration: POST register to the CP with the token the CP handed out, carrying a new token."""
    new_token = secrets.token_urlsafe(24)

    def change(fp: SandboxFp) -> None:
        fp.cp_base_url = cp_base_url.rstrip("/")
        fp.tokens_in = [*fp.tokens_in, new_token]

    fp = _update(name, change)
    return _post(name, "register", {"token": new_token, "version_url": [{"version": OSCP_VERSION,
                                                                         "base_url": fp.base_url}]}, token=cp_token)


def fp_handshake(name: str) -> int:
    fp = fp_get(name)
    assert fp is not None
    return _post(name, "handshake", {"required_behaviour": fp.required_behaviour})


def fp_send_heartbeat(name: str, *, interval_s: int = 60) -> int:
    return _post(name, "heartbeat", {"offline_mode_at": _utc(clock.now() + timedelta(seconds=2 * interval_s))})


def fp_send_measurements(name: str, *, group_id: str, readings: list[tuple[datetime, float]] | None = None,
                         unit: str = "KWH", utilisation: float = 0.8) -> int:
    """UpdateGroupMeasurements. Without `readings`, the register advances by what the group drew in the last ISP:
    `utilisation` x the CONSUMPTION capacity in force then (from the latest forecast received)."""
    if readings is None:
        now = clock.now()
        fp = fp_get(name)
        assert fp is not None
        forecast = fp.forecasts.get(f"{group_id}|CONSUMPTION") or {"forecasted_blocks": []}
        capacity = next((block["capacity"] for block in forecast["forecasted_blocks"]
                         if block["start_time"] <= _utc(now - timedelta(minutes=15)) < block["end_time"]), 0.0)
        fp = _update(name, lambda fp: setattr(fp, "register_kwh", fp.register_kwh + capacity * utilisation / 4))
        readings = [(now, round(fp.register_kwh, 3))]
    body = {"group_id": group_id, "measurements": [
        {"value": value, "phase": "ALL", "unit": unit, "direction": "IMPORT", "energy_type": "TOTAL",
         "measure_time": _utc(at)} for at, value in readings]}
    return _post(name, "update_group_measurements", body)


def fp_send_compliance_error(name: str, *, message: str, forecast_request_id: str = "",
                             blocks: list[dict[str, Any]] | None = None) -> int:
    body: dict[str, Any] = {"message": message}
    if blocks:
        body["forecasted_blocks"] = blocks
    return _post(name, "group_capacity_compliance_error", body, correlation_id=forecast_request_id)


def fp_request_adjustment(name: str, *, group_id: str, blocks: list[dict[str, Any]],
                          forecast_type: str = "CONSUMPTION") -> int:
    return _post(name, "adjust_group_capacity_forecast",
                 {"group_id": group_id, "type": forecast_type, "forecasted_blocks": blocks})


__all__ = [
    "AdapterError",  # what the senders raise when the CP refuses or is unreachable
    "fp_endpoint",
    "fp_fault_clear",
    "fp_fault_set",
    "fp_get",
    "fp_handshake",
    "fp_register_at_cp",
    "fp_request_adjustment",
    "fp_send_compliance_error",
    "fp_send_heartbeat",
    "fp_send_measurements",
    "fp_setup",
]
