"""OSCP 2.0 endpoints we serve as Capacity Provider, under /oscp/cp/2.0/ (brief 4: register, handshake,
handshake_acknowledge, heartbeat, adjust_group_capacity_forecast, group_capacity_compliance_error,
update_group_measurements).

Plain Django views (OSCP has no envelope): success is 204 with an empty body; errors are {"message": ...} with
the same text in X-Error-Message (as SolarNetwork does): 400 bad body or missing X-Request-ID, 401 missing or
unknown token, 403 a known token that may not do this (token A outside register, no handshake yet, a group not
agreed with the peer), 405 wrong method, 501 no common version at register. Follow-up messages (our Register,
HandshakeAcknowledge, the forecast answering an adjustment) go through the outbox after the 204.
A message whose X-Request-ID was already processed is answered 204 again and not processed twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from aggregator import oscp_dispatch
from aggregator.adapters import oscp as protocol
from aggregator.models import OscpInboundMessage, OscpPeer
from aggregator.models.oscp import token_digest
from aggregator.oscp import services

logger = logging.getLogger(__name__)

MAX_REQUEST_ID_LENGTH = 100


@dataclass(frozen=True)
class Inbound:
    """One authenticated OSCP request."""

    peer: OscpPeer
    token: str
    endpoint: str
    method: str
    request_id: str
    correlation_id: str
    body: Any


def _error(status: int, message: str, *, headers: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse({"message": message}, status=status)
    # Header values must be latin-1 and one line.
    response["X-Error-Message"] = message.encode("latin-1", "replace").decode("latin-1").replace("\n", " ")[:500]
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _no_content() -> HttpResponse:
    return HttpResponse(status=204)


def _authenticate(request: HttpRequest) -> tuple[OscpPeer, str] | HttpResponse:
    header = request.headers.get("Authorization")
    tokens = protocol.presented_tokens(header)
    if not tokens:
        return _error(401, "Authorization: Token <token> is required", headers={"WWW-Authenticate": "Token"})
    for token in tokens:
        peer = services.peer_for_token(f"Token {token}")
        if peer is not None:
            return peer, token
    return _error(401, "Unknown token", headers={"WWW-Authenticate": "Token"})


Handler = Callable[[Inbound, OscpInboundMessage], None]


def _endpoint(name: str, handlers: dict[str, Handler], *, needs_body: set[str] | None = None
              ) -> Callable[[HttpRequest], HttpResponse]:
    """A view for one OSCP endpoint: method check, token, X-Request-ID, JSON, dedupe, then the handler in one
    transaction with the inbound log row (a refused request leaves no row, so the peer may retry it)."""
    bodied = needs_body if needs_body is not None else {"POST", "PUT"}

    @csrf_exempt
    def view(request: HttpRequest) -> HttpResponse:
        handler = handlers.get(request.method or "")
        if handler is None:
            response = _error(405, f"{request.method} not allowed on {name}")
            response["Allow"] = ", ".join(sorted(handlers))
            return response
        authenticated = _authenticate(request)
        if isinstance(authenticated, HttpResponse):
            return authenticated
        peer, token = authenticated
        is_initial = token_digest(token) == peer.initial_token_digest and token_digest(token) != \
            peer.token_from_peer_digest
        if is_initial and not (name == "register" and request.method == "POST"):
            return _error(403, "The registration token only opens POST register")
        request_id = (request.headers.get("X-Request-ID") or "").strip()
        if not request_id or len(request_id) > MAX_REQUEST_ID_LENGTH:
            return _error(400, f"X-Request-ID header is required (at most {MAX_REQUEST_ID_LENGTH} characters)")
        body: Any = None
        if request.method in bodied:
            try:
                body = json.loads(request.body or b"")
            except ValueError:
                return _error(400, "body: not valid JSON")
        inbound = Inbound(peer=peer, token=token, endpoint=name, method=request.method or "POST",
                          request_id=request_id, correlation_id=(request.headers.get("X-Correlation-ID") or "")[:100],
                          body=body)
        try:
            with transaction.atomic():
                row, created = services.inbound_record(
                    peer=peer, endpoint=name, method=inbound.method, request_id=request_id,
                    correlation_id=inbound.correlation_id, body=body)
                if created:
                    handler(inbound, row)
        except protocol.OscpBodyError as exc:
            return _error(400, str(exc))
        except services.OscpRefused as exc:
            return _error(exc.status_code, exc.message)
        if not created:
            logger.info("OSCP %s %s from %s already processed", name, request_id, peer)
        return _no_content()

    view.__name__ = f"oscp_{name}"
    return view


def _register_post(inbound: Inbound, row: OscpInboundMessage) -> None:
    services.register_received(peer=inbound.peer, register=protocol.parse_register(inbound.body),
                               presented_token=inbound.token, request_id=inbound.request_id,
                               correlation_id=inbound.correlation_id)


def _register_put(inbound: Inbound, row: OscpInboundMessage) -> None:
    services.register_update_received(peer=inbound.peer, register=protocol.parse_register(inbound.body))


def _register_delete(inbound: Inbound, row: OscpInboundMessage) -> None:
    services.unregister_received(peer=inbound.peer)


def _handshake(inbound: Inbound, row: OscpInboundMessage) -> None:
    services.handshake_received(peer=inbound.peer, behaviour=protocol.parse_handshake(inbound.body),
                                request_id=inbound.request_id)


def _handshake_acknowledge(inbound: Inbound, row: OscpInboundMessage) -> None:
    services.handshake_acknowledge_received(peer=inbound.peer, behaviour=protocol.parse_handshake(inbound.body))


def _heartbeat(inbound: Inbound, row: OscpInboundMessage) -> None:
    services.heartbeat_received(peer=inbound.peer, offline_mode_at=protocol.parse_heartbeat(inbound.body))


def _update_group_measurements(inbound: Inbound, row: OscpInboundMessage) -> None:
    intermittent = "INTERMITTENT" in (inbound.peer.measurement_configuration or []) and \
        "CONTINUOUS" not in (inbound.peer.measurement_configuration or [])
    parsed = protocol.parse_group_measurements(inbound.body, intermittent_required=intermittent)
    services.require_handshake(inbound.peer)
    services.measurements_record(peer=inbound.peer, inbound=row, parsed=parsed)


def _compliance_error(inbound: Inbound, row: OscpInboundMessage) -> None:
    parsed = protocol.parse_compliance_error(inbound.body)
    services.require_handshake(inbound.peer)
    services.compliance_error_record(peer=inbound.peer, inbound=row, parsed=parsed)


def _adjust(inbound: Inbound, row: OscpInboundMessage) -> None:
    parsed = protocol.parse_capacity_forecast(inbound.body)
    services.require_handshake(inbound.peer)
    oscp_dispatch.adjustment_decide(peer=inbound.peer, inbound=row, parsed=parsed)


register = _endpoint("register", {"POST": _register_post, "PUT": _register_put, "DELETE": _register_delete})
handshake = _endpoint("handshake", {"POST": _handshake})
handshake_acknowledge = _endpoint("handshake_acknowledge", {"POST": _handshake_acknowledge})
heartbeat = _endpoint("heartbeat", {"POST": _heartbeat})
update_group_measurements = _endpoint("update_group_measurements", {"POST": _update_group_measurements})
group_capacity_compliance_error = _endpoint("group_capacity_compliance_error", {"POST": _compliance_error})
adjust_group_capacity_forecast = _endpoint("adjust_group_capacity_forecast", {"POST": _adjust})
