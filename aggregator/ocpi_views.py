"""OCPI 2.2.1 endpoints we expose as SCSP: versions, version details, and the chargingprofiles sender
interface the CPO calls (async results on our response_url). Plain Django views: OCPI has its own
envelope and status codes (see aggregator.adapters.ocpi)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from aggregator.adapters.ocpi import OCPI_VERSION, PROFILE_RESULT_TYPES, envelope, token_candidates
from aggregator.delivery import charging_profile_result_record
from aggregator.encryption import token_digest
from aggregator.models import ChargePointOperator, ChargingProfileCommand
from common.exceptions import ApplicationError


def _ocpi_response(request: HttpRequest, body: dict[str, Any], *, status: int = 200) -> JsonResponse:
    response = JsonResponse(body, status=status)
    for header in ("X-Request-ID", "X-Correlation-ID"):
        value = request.headers.get(header)
        if value:
            response[header] = value
    return response


def _authenticated_cpo(request: HttpRequest) -> ChargePointOperator | None:
    # The Base64-decoded reading is tried first (OCPI 2.2.x), the raw token only as a fallback.
    for candidate in token_candidates(request.headers.get("Authorization")):
        cpo = ChargePointOperator.objects.filter(token_from_cpo_digest=token_digest(candidate), is_active=True).first()
        if cpo is not None:
            return cpo
    return None


def _unauthorized(request: HttpRequest) -> JsonResponse:
    return _ocpi_response(request, envelope(status_code=2000, status_message="Unknown or missing token"), status=401)


@require_GET
def versions(request: HttpRequest) -> JsonResponse:
    if _authenticated_cpo(request) is None:
        return _unauthorized(request)
    data = [{"version": OCPI_VERSION, "url": f"{settings.PUBLIC_BASE_URL}/ocpi/{OCPI_VERSION}"}]
    return _ocpi_response(request, envelope(data=data))


@require_GET
def version_details(request: HttpRequest) -> JsonResponse:
    if _authenticated_cpo(request) is None:
        return _unauthorized(request)
    base = f"{settings.PUBLIC_BASE_URL}/ocpi/{OCPI_VERSION}"
    data = {
        "version": OCPI_VERSION,
        "endpoints": [{"identifier": "chargingprofiles", "role": "SENDER", "url": f"{base}/chargingprofiles/"}],
    }
    return _ocpi_response(request, envelope(data=data))


@csrf_exempt
@require_POST
def charging_profile_result(request: HttpRequest, command_id: str) -> JsonResponse:
    """POST {response_url}: the CPO's ChargingProfileResult for one of our commands."""
    cpo = _authenticated_cpo(request)
    if cpo is None:
        return _unauthorized(request)
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        return _ocpi_response(request, envelope(status_code=2001, status_message="Invalid JSON"), status=400)
    command = ChargingProfileCommand.objects.filter(pk=command_id, cpo=cpo).first()
    if command is None:
        return _ocpi_response(request, envelope(status_code=2001, status_message="Unknown command"), status=404)
    result = body.get("result") if isinstance(body, dict) else None
    if result not in PROFILE_RESULT_TYPES:
        return _ocpi_response(request, envelope(status_code=2001, status_message="result must be one of "
                                                + ", ".join(sorted(PROFILE_RESULT_TYPES))))
    try:
        charging_profile_result_record(command=command, result=result, body=body)
    except ApplicationError as exc:
        return _ocpi_response(request, envelope(status_code=2000, status_message=exc.message))
    return _ocpi_response(request, envelope())
