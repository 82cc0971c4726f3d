"""API throttling per participant (organisation), not per user or key: one budget per tenant.

Rate: the participant's own `api_rate_limit` when set, else REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
["participant"] (API_THROTTLE_RATE). A refused request gets 429 with Retry-After.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle


class ParticipantRateThrottle(SimpleRateThrottle):
    scope = "participant"

    def allow_request(self, request: Request, view: Any) -> bool:
        participant = getattr(request.user, "participant", None)
        override = getattr(participant, "api_rate_limit", "") if participant is not None else ""
        if override:
            self.rate = override
            self.num_requests, self.duration = self.parse_rate(override)
        return super().allow_request(request, view)

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        participant = getattr(request.user, "participant", None)
        if participant is not None:
            ident = f"participant:{participant.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
