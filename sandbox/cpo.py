"""A simulated CPO speaking OCPI 2.2.1 chargingprofiles (the receiver side), for demos and tests.

PUT /sandbox/cpo/ocpi/2.2.1/chargingprofiles/{session_id} answers a ChargingProfileResponse at once
and, after commit, posts the asynchronous ChargingProfileResult to the response_url (a Celery task, so
with real workers it really is asynchronous). The charger "applies" the newest profile per session;
sandbox.meters reads it back to simulate what the car drew.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from aggregator.adapters.ocpi import envelope, token_candidates
from aggregator.encryption import token_digest
from aggregator.models import ChargingSession
from sandbox.models import SandboxChargingProfile, SandboxCpoClient

RESULT_TIMEOUT_S = 30


def _client(request: HttpRequest) -> SandboxCpoClient | None:
    for candidate in token_candidates(request.headers.get("Authorization")):  # decoded first, raw as fallback
        client = SandboxCpoClient.objects.filter(token_from_client=candidate).first()
        if client is not None:
            return client
    return None


def _reply(request: HttpRequest, body: dict[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(body, status=status)
    for header in ("X-Request-ID", "X-Correlation-ID"):
        if request.headers.get(header):
            response[header] = request.headers[header]
    # Routing headers mirrored (OCPI-BRIEF 2.5): the response goes back to the requester.
    for ours, theirs in (("OCPI-from-country-code", "OCPI-to-country-code"), ("OCPI-from-party-id", "OCPI-to-party-id")):
        if request.headers.get(theirs):
            response[ours] = request.headers[theirs]
        if request.headers.get(ours):
            response[theirs] = request.headers[ours]
    return response


def _valid_profile(body: Any) -> str | None:
    """Return a reason when the SetChargingProfile object is malformed."""
    if not isinstance(body, dict):
        return "body must be a SetChargingProfile object"
    profile = body.get("charging_profile")
    if not isinstance(profile, dict):
        return "charging_profile is required"
    if profile.get("charging_rate_unit") not in ("W", "A"):
        return "charging_rate_unit must be W or A"
    periods = profile.get("charging_profile_period") or []
    if not isinstance(periods, list) or not all(
        isinstance(p, dict) and isinstance(p.get("start_period"), int) and isinstance(p.get("limit"), int | float)
        for p in periods
    ):
        return "charging_profile_period entries need integer start_period and numeric limit"
    if not isinstance(body.get("response_url"), str) or not body["response_url"].startswith(("http://", "https://")):
        return "response_url is required"
    return None


@csrf_exempt
@require_http_methods(["PUT"])
def charging_profile_put(request: HttpRequest, session_id: str) -> JsonResponse:
    client = _client(request)
    if client is None:
        return _reply(request, envelope(status_code=2000, status_message="Unknown token"), status=401)
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        return _reply(request, envelope(status_code=2001, status_message="Invalid JSON"), status=400)
    problem = _valid_profile(body)
    if problem:
        return _reply(request, envelope(status_code=2001, status_message=problem))

    session = ChargingSession.objects.filter(
        cpo_session_id__iexact=session_id,  # OCPI ids are CiString: case-insensitive
        charge_point__cpo__token_from_cpo_digest=token_digest(client.token_for_client),
        status__in=[ChargingSession.Status.PENDING, ChargingSession.Status.ACTIVE],
    ).first()
    if session is None:
        result = "UNKNOWN_SESSION"
    elif client.reject_all:
        result = "REJECTED"
    else:
        result = "ACCEPTED"
    with transaction.atomic():
        if result == "ACCEPTED":
            SandboxChargingProfile.objects.filter(client=client, session_id=session_id, is_active=True).update(
                is_active=False)
        profile = SandboxChargingProfile.objects.create(
            client=client, session_id=session_id, charging_profile=body["charging_profile"],
            response_url=body["response_url"], sync_result=result, is_active=result == "ACCEPTED",
        )
        if result == "ACCEPTED":
            profile_id = profile.pk
            transaction.on_commit(lambda: _post_result_later(profile_id))
    return _reply(request, envelope(data={"result": result, "timeout": RESULT_TIMEOUT_S}))


def _post_result_later(profile_id: int) -> None:
    from sandbox.tasks import post_profile_result_task

    post_profile_result_task.delay(profile_id)
