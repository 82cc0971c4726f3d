"""DRF authentication by API key (`Authorization: Api-Key <key>`), beside the per-user tokens."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication, TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from market.apikeys import api_key_authenticate
from market.models import ApiKey, Participant

KEYWORD = "Api-Key"


class ApiKeyPrincipal:
    """Stands in for request.user when a machine authenticates with an API key."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        self.participant: Participant = api_key.participant
        self.username = f"api-key:{api_key.name}"

    def __str__(self) -> str:
        return self.username

    def has_perm(self, *args: Any, **kwargs: Any) -> bool:
        return False


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header.startswith(f"{KEYWORD} "):
            return None
        api_key = api_key_authenticate(header[len(KEYWORD) + 1:].strip())
        if api_key is None:
            raise AuthenticationFailed("Invalid or revoked API key.")
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD


class ParticipantTokenAuthentication(TokenAuthentication):
    """DRF's user token, fetched together with the user's participant: every API view needs both."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        token = Token.objects.select_related("user__participant").filter(key=key).first()
        if token is None:
            raise AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        return token.user, token
