"""DRF authentication by API key (`Authorization: Api-Key <key>`), beside the per-user tokens."""

from __future__ import annotations

import functools
from typing import Any

from django.db import connection
from rest_framework.authentication import BaseAuthentication, TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from common.sql import instance_from_row, select_columns
from market.apikeys import api_key_authenticate
from market.models import ApiKey, Participant, User

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


@functools.cache
def _token_sql() -> str:
    token, user, participant = Token._meta, User._meta, Participant._meta
    return (
        f"SELECT {select_columns(Token, 't')}, {select_columns(User, 'u')}, {select_columns(Participant, 'p')} "  # noqa: S608
        f"FROM {token.db_table} t JOIN {user.db_table} u ON u.id = t.user_id "
        f"LEFT JOIN {participant.db_table} p ON p.id = u.participant_id WHERE t.key = %s"
    )


class ParticipantTokenAuthentication(TokenAuthentication):
    """DRF's user token, read together with the user and the user's participant: every API view needs all three.

    One hand-written statement (common.sql): it runs on every API call, and the ORM spends more time compiling this
    three-table select_related than the database spends answering it.
    """

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        with connection.cursor() as cursor:
            cursor.execute(_token_sql(), [key])
            row = cursor.fetchone()
        if row is None:
            raise AuthenticationFailed("Invalid token.")
        token, offset = instance_from_row(Token, row, offset=0, alias="t", connection=connection)
        user, offset = instance_from_row(User, row, offset=offset, alias="u", connection=connection)
        if user.participant_id is not None:
            user.participant, _ = instance_from_row(Participant, row, offset=offset, alias="p", connection=connection)
        token.user = user
        if not user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        return user, token
