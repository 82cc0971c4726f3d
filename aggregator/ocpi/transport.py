"""Server-side OCPI transport rules (OCPI-BRIEF 2): who is calling, the envelope, echoed headers, pagination."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from aggregator.adapters.ocpi import envelope, parse_ocpi_datetime, token_candidates
from aggregator.encryption import token_digest
from aggregator.models import ChargePointOperator
from common.exceptions import ApplicationError

logger = logging.getLogger("aggregator.ocpi")

# OCPI status codes (OCPI-BRIEF 2.3).
SUCCESS = 1000
CLIENT_ERROR = 2000
INVALID_PARAMETERS = 2001
NOT_ENOUGH_INFORMATION = 2002
UNKNOWN_LOCATION = 2003
SERVER_ERROR = 3000
UNABLE_TO_USE_CLIENT_API = 3001
UNSUPPORTED_VERSION = 3002
NO_MATCHING_ENDPOINTS = 3003

MAX_PAGE_SIZE = 100


class OcpiError(Exception):
    """Answer with this OCPI status (and HTTP status) instead of success."""

    def __init__(self, message: str, *, status_code: int = INVALID_PARAMETERS, http_status: int = 200) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.http_status = http_status


@dataclass(frozen=True)
class Caller:
    """The authenticated peer and with which token: "A" (registration only) or "C" (registered)."""

    cpo: ChargePointOperator
    token: str
    stage: str


def authenticate(request: HttpRequest) -> Caller | None:
    """The Base64-decoded reading of the Token header first (OCPI 2.2.x), the raw value as fallback."""
    for candidate in token_candidates(request.headers.get("Authorization")):
        digest = token_digest(candidate)
        cpo = ChargePointOperator.objects.filter(token_from_cpo_digest=digest, is_active=True).first()
        if cpo is not None:
            return Caller(cpo=cpo, token=candidate, stage="C")
        cpo = ChargePointOperator.objects.filter(token_a_digest=digest, is_active=True).first()
        if cpo is not None:
            return Caller(cpo=cpo, token=candidate, stage="A")
    return None


def ocpi_response(request: HttpRequest, body: dict[str, Any], *, status: int = 200, routed: bool = False,
                  headers: dict[str, str] | None = None) -> JsonResponse:
    """Echo X-Request-ID / X-Correlation-ID; on functional modules mirror the routing headers (to <-> from)."""
    response = JsonResponse(body, status=status)
    for name, value in echo_headers(request.headers, routed=routed):
        response[name] = value
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def echo_headers(request_headers: Mapping[str, str], *, routed: bool) -> list[tuple[str, str]]:
    """The answer's X-Request-ID / X-Correlation-ID (echoed) and, when routed, OCPI-to-* / OCPI-from-* (mirrored).
    Shared by ocpi_response and the WSGI front for results (aggregator.ocpi.result_wsgi)."""
    out = [(header, value) for header in ("X-Request-ID", "X-Correlation-ID") if (value := request_headers.get(header))]
    if routed:
        ours = {"country-code": settings.OCPI_COUNTRY_CODE, "party-id": settings.OCPI_PARTY_ID}
        for suffix, our_value in ours.items():
            requester = request_headers.get(f"OCPI-from-{suffix}")
            if requester:
                out.append((f"OCPI-to-{suffix}", requester))
            out.append((f"OCPI-from-{suffix}", request_headers.get(f"OCPI-to-{suffix}") or our_value))
    return out


def json_body(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body or b"null")
    except ValueError as exc:
        raise OcpiError("Invalid JSON", status_code=INVALID_PARAMETERS, http_status=400) from exc


def ocpi_view(*, methods: Sequence[str], functional: bool, allow_token_a: bool = False,
              ) -> Callable[[Callable[..., JsonResponse | dict[str, Any]]], Callable[..., JsonResponse]]:
    """Wrap an OCPI endpoint: method check, authentication (401 without a known token; 401 for token A outside
    versions/credentials), logging with both ids, and errors as envelopes (bad JSON -> HTTP 400 + 2001, a bad
    field -> HTTP 200 + 2001, OcpiError -> its codes). The view returns a JsonResponse or a body dict."""

    def decorate(view: Callable[..., JsonResponse | dict[str, Any]]) -> Callable[..., JsonResponse]:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            logger.debug("OCPI %s %s request-id=%s correlation-id=%s", request.method, request.path,
                        request.headers.get("X-Request-ID", "-"), request.headers.get("X-Correlation-ID", "-"))
            if request.method not in methods:
                response = ocpi_response(request, envelope(status_code=CLIENT_ERROR,
                                                           status_message=f"{request.method} not allowed"),
                                         status=405)
                response["Allow"] = ", ".join(methods)
                return response
            caller = authenticate(request)
            if caller is None or (caller.stage == "A" and not allow_token_a):
                return ocpi_response(request, envelope(status_code=CLIENT_ERROR,
                                                       status_message="Unknown or missing token"), status=401)
            try:
                result = view(request, caller, *args, **kwargs)
            except OcpiError as exc:
                return ocpi_response(request, envelope(status_code=exc.status_code, status_message=exc.message),
                                     status=exc.http_status, routed=functional)
            except ApplicationError as exc:
                return ocpi_response(request, envelope(status_code=INVALID_PARAMETERS, status_message=exc.message),
                                     routed=functional)
            if isinstance(result, JsonResponse):
                return result
            return ocpi_response(request, result, routed=functional)

        return wrapper

    return decorate


# --- pagination (server side) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageRequest:
    date_from: datetime | None
    date_to: datetime | None
    offset: int
    limit: int


def page_request(request: HttpRequest, *, max_limit: int = MAX_PAGE_SIZE) -> PageRequest:
    """date_from (inclusive) / date_to (exclusive) on last_updated, offset, limit capped at our maximum."""
    try:
        date_from = parse_ocpi_datetime(request.GET["date_from"]) if request.GET.get("date_from") else None
        date_to = parse_ocpi_datetime(request.GET["date_to"]) if request.GET.get("date_to") else None
        offset = int(request.GET.get("offset", 0))
        limit = int(request.GET.get("limit", max_limit))
    except ValueError as exc:
        raise OcpiError(f"Invalid pagination parameter: {exc}") from exc
    if offset < 0 or limit < 1:
        raise OcpiError("offset must be >= 0 and limit >= 1")
    return PageRequest(date_from=date_from, date_to=date_to, offset=offset, limit=min(limit, max_limit))


def paginated_response(request: HttpRequest, *, items: list[Any], total: int, page: PageRequest, max_limit: int,
                       routed: bool = True) -> JsonResponse:
    """The list envelope with X-Total-Count, X-Limit (our maximum) and Link rel="next" (only when more pages exist,
    carrying the original filters)."""
    headers = {"X-Total-Count": str(total), "X-Limit": str(max_limit)}
    next_offset = page.offset + len(items)
    if next_offset < total and items:
        query = {key: value for key, value in request.GET.items() if key not in ("offset", "limit")}
        query.update({"offset": str(next_offset), "limit": str(page.limit)})
        headers["Link"] = f'<{request.build_absolute_uri(request.path)}?{urlencode(query)}>; rel="next"'
    return ocpi_response(request, envelope(data=items), routed=routed, headers=headers)
