"""OCPI 2.2.1 endpoints we expose as SCSP (routes in aggregator.ocpi_urls, mounted at /ocpi/).

versions, version details and credentials accept token A (registration) or the registered token; the functional
modules (sessions, locations receivers; chargingprofiles sender) only the registered one. Every answer is an
envelope; ids and routing headers are echoed (aggregator.ocpi.transport).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from aggregator.adapters.ocpi import OCPI_VERSION, PROFILE_RESULT_TYPES, envelope, token_candidates
from aggregator.delivery import charging_profile_result_record, charging_profile_result_record_fast
from aggregator.encryption import token_digest
from aggregator.models import ChargingProfileCommand, ChargingSession, OcpiSession
from aggregator.ocpi import receivers, registration
from aggregator.ocpi.transport import Caller, OcpiError, json_body, ocpi_response, ocpi_view
from common import time as clock
from common.exceptions import ApplicationError


def _base() -> str:
    return f"{settings.PUBLIC_BASE_URL}/ocpi/{OCPI_VERSION}"


@ocpi_view(methods=["GET"], functional=False, allow_token_a=True)
def versions(request: HttpRequest, caller: Caller) -> dict[str, Any]:
    return envelope(data=[{"version": OCPI_VERSION, "url": _base()}])


@ocpi_view(methods=["GET"], functional=False, allow_token_a=True)
def version_details(request: HttpRequest, caller: Caller) -> dict[str, Any]:
    base = _base()
    return envelope(data={"version": OCPI_VERSION, "endpoints": [
        # The spec advises publishing our own credentials endpoint as SENDER.
        {"identifier": "credentials", "role": "SENDER", "url": f"{base}/credentials"},
        {"identifier": "sessions", "role": "RECEIVER", "url": f"{base}/sessions/"},
        {"identifier": "locations", "role": "RECEIVER", "url": f"{base}/locations/"},
        # Published with a trailing '/': the CPO appends the session id without a separator (OCPI-BRIEF 6.2).
        {"identifier": "chargingprofiles", "role": "SENDER", "url": f"{base}/chargingprofiles/"},
    ]})


@ocpi_view(methods=["GET", "POST", "PUT", "DELETE"], functional=False, allow_token_a=True)
def credentials(request: HttpRequest, caller: Caller) -> dict[str, Any] | JsonResponse:
    cpo = caller.cpo
    if request.method == "GET":
        return envelope(data=registration.our_credentials(cpo=cpo, token=caller.token))
    if request.method == "POST":
        if caller.stage != "A":
            raise OcpiError("Already registered: use PUT to update", status_code=2000, http_status=405)
        return envelope(data=registration.credentials_post(cpo=cpo, body=json_body(request)))
    if caller.stage == "A":
        raise OcpiError("Not registered", status_code=2000, http_status=405)
    if request.method == "PUT":
        return envelope(data=registration.credentials_put(cpo=cpo, body=json_body(request)))
    registration.credentials_delete(cpo=cpo)
    return envelope()


@ocpi_view(methods=["GET", "PUT", "PATCH"], functional=True)
def session(request: HttpRequest, caller: Caller, country_code: str, party_id: str,
            session_id: str) -> dict[str, Any] | JsonResponse:
    if request.method == "GET":
        return envelope(data=receivers.session_get(cpo=caller.cpo, country_code=country_code, party_id=party_id,
                                                   session_id=session_id))
    body = json_body(request)
    if request.method == "PUT":
        created = receivers.session_put(cpo=caller.cpo, country_code=country_code, party_id=party_id,
                                        session_id=session_id, body=body)
        return ocpi_response(request, envelope(), status=201 if created else 200, routed=True)
    receivers.session_patch(cpo=caller.cpo, country_code=country_code, party_id=party_id, session_id=session_id,
                            body=body)
    return envelope()


@ocpi_view(methods=["GET", "PUT", "PATCH"], functional=True)
def location(request: HttpRequest, caller: Caller, country_code: str, party_id: str, location_id: str,
             evse_uid: str | None = None, connector_id: str | None = None) -> dict[str, Any] | JsonResponse:
    if request.method == "GET":
        return envelope(data=receivers.location_get(cpo=caller.cpo, country_code=country_code, party_id=party_id,
                                                    location_id=location_id, evse_uid=evse_uid,
                                                    connector_id=connector_id))
    created = receivers.location_push(cpo=caller.cpo, country_code=country_code, party_id=party_id,
                                      location_id=location_id, body=json_body(request),
                                      partial=request.method == "PATCH", evse_uid=evse_uid,
                                      connector_id=connector_id)
    return ocpi_response(request, envelope(), status=201 if created else 200, routed=True)


@csrf_exempt
def charging_profile_result(request: HttpRequest, command_id: uuid.UUID) -> JsonResponse:
    """POST {response_url}: the CPO's ChargingProfileResult / ClearProfileResult / ActiveChargingProfileResult for
    one of our commands (the URL names the command, so the three look-alike bodies cannot be confused).

    Every command's result comes here once, so the usual case (the registered token's CPO, its command awaiting
    this result) is one UPDATE (delivery.charging_profile_result_record_fast); everything else, errors included,
    takes the full path below with the answers it always gave."""
    if request.method == "POST":
        candidates = token_candidates(request.headers.get("Authorization"))
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            body = None
        if candidates and isinstance(body, dict) and isinstance(body.get("result"), str) and \
                charging_profile_result_record_fast(command_id=command_id, cpo_token_digest=token_digest(candidates[0]),
                                                    result=body["result"], body=body):
            return ocpi_response(request, envelope(), routed=True)
    return _charging_profile_result(request, command_id=command_id)


@ocpi_view(methods=["POST"], functional=True)
def _charging_profile_result(request: HttpRequest, caller: Caller, command_id: uuid.UUID) -> dict[str, Any]:
    body = json_body(request)
    command = ChargingProfileCommand.objects.filter(pk=command_id, cpo=caller.cpo).first()
    if command is None:
        raise OcpiError("Unknown command", status_code=2001, http_status=404)
    result = body.get("result") if isinstance(body, dict) else None
    if result not in PROFILE_RESULT_TYPES:
        raise OcpiError("result must be one of " + ", ".join(sorted(PROFILE_RESULT_TYPES)))
    try:
        charging_profile_result_record(command=command, result=result, body=body)
    except ApplicationError as exc:
        raise OcpiError(exc.message, status_code=2000) from exc
    return envelope()


@ocpi_view(methods=["PUT"], functional=True)
def active_charging_profile(request: HttpRequest, caller: Caller, session_id: str) -> dict[str, Any]:
    """PUT {our chargingprofiles url}{session_id}: the CPO's unsolicited ActiveChargingProfile update, kept on the
    session for verification against what was dispatched."""
    body = json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("charging_profile"), dict) or \
            not isinstance(body.get("start_date_time"), str):
        raise OcpiError("The body must be an ActiveChargingProfile (start_date_time, charging_profile)")
    stored = OcpiSession.objects.filter(cpo=caller.cpo, session_id__iexact=session_id).first()
    if stored is None:
        portfolio_session = ChargingSession.objects.filter(
            charge_point__cpo=caller.cpo, cpo_session_id__iexact=session_id).select_related("charge_point").first()
        if portfolio_session is None:
            raise OcpiError(f"Unknown session {session_id}", status_code=2001, http_status=404)
        stored = OcpiSession.objects.create(
            cpo=caller.cpo, session_id=portfolio_session.cpo_session_id, country_code=caller.cpo.country_code,
            party_id=caller.cpo.party_id, status=portfolio_session.status, location_id="",
            evse_uid=portfolio_session.charge_point.evse_uid, start_date_time=portfolio_session.arrival_at,
            charging_session=portfolio_session, last_updated=clock.now())
    OcpiSession.objects.filter(pk=stored.pk).update(active_charging_profile=body, active_profile_at=clock.now())
    return envelope()
