"""Role permissions for the API: what a participant may do follows its USEF role."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from market.models import Participant


def request_participant(request: Request) -> Participant:
    """The organisation the authenticated caller acts for (views behind the permissions below only)."""
    participant = getattr(request.user, "participant", None)
    if not isinstance(participant, Participant):
        raise PermissionDenied("You act for no organisation.")
    return participant


class _HasRole(BasePermission):
    role: str = ""
    message = "Your organisation's role does not allow this."

    def has_permission(self, request: Request, view: Any) -> bool:
        participant = getattr(request.user, "participant", None)
        return bool(request.user and request.user.is_authenticated and participant and participant.is_active
                    and participant.role == self.role)


class IsAggregator(_HasRole):
    role = Participant.Role.AGR
    message = "Only aggregators (AGR) may do this."


class IsDso(_HasRole):
    role = Participant.Role.DSO
    message = "Only DSOs may do this."


class IsMarketParticipant(BasePermission):
    """Any active DSO or aggregator (reads are scoped to the participant by selectors)."""

    message = "Only DSOs and aggregators use this API."

    def has_permission(self, request: Request, view: Any) -> bool:
        participant = getattr(request.user, "participant", None)
        return bool(request.user and request.user.is_authenticated and participant and participant.is_active
                    and participant.role in (Participant.Role.AGR, Participant.Role.DSO))


class HasScope(BasePermission):
    """The view's `required_scope` must be among the caller's scopes: all of its role's for a user token,
    the key's own (within its role) for an API key."""

    message = "Your credentials lack the scope this action needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        required = getattr(view, "required_scope", None)
        if required is None:
            return True
        participant = getattr(request.user, "participant", None)
        if participant is None:
            return False
        from market.apikeys import role_scopes
        from market.models import ApiKey

        scopes = set(role_scopes(participant))
        if isinstance(request.auth, ApiKey):
            scopes &= set(request.auth.scopes)
        return required in scopes


def request_actor(request: Request) -> tuple[Any, str]:
    """(user, label) to record as the actor of a change: the user, or the API key's name."""
    from market.models import ApiKey

    if isinstance(request.auth, ApiKey):
        return None, f"api-key:{request.auth.participant.domain}:{request.auth.name}"
    return request.user, ""
