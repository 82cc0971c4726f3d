"""API keys of my organisation: list, issue (shown once) and revoke. Managed by people, not by keys."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import get_object_or_404
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from common.idempotency import idempotent
from market.apikeys import api_key_create, api_key_revoke
from market.apis._shared import ERROR_RESPONSES, IDEMPOTENCY_PARAMETER, ScopedListView, ScopedView
from market.filters import ApiKeyFilter
from market.models import ApiKey, User
from market.permissions import IsMarketParticipant


class IsPerson(BasePermission):
    """Keys are managed by a signed-in person (token or session), never by another key."""

    message = "API keys are managed with a user's credentials, not with an API key."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, User)


class ApiKeyOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    scopes = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class ApiKeyCreatedSerializer(ApiKeyOutputSerializer):
    key = serializers.CharField(help_text="The key itself: shown this once, store it safely.")


class ApiKeyInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(child=serializers.CharField(), required=False,
                                   help_text="Subset of your role's scopes; all of them when omitted.")

    class Meta:
        ref_name = "ApiKeyCreate"


class KeyAdmin(ScopedView):
    permission_classes = [IsMarketParticipant, IsPerson]
    required_scope = None  # type: ignore[assignment]


@extend_schema(tags=["account"], summary="My organisation's API keys")
class ApiKeyListApi(KeyAdmin, ScopedListView):
    queryset = ApiKey.objects.none()  # the model, for the schema; get_queryset scopes the rows
    serializer_class = ApiKeyOutputSerializer
    filterset_class = ApiKeyFilter

    def get_queryset(self) -> QuerySet[ApiKey]:
        return ApiKey.objects.filter(participant=self.participant)


@extend_schema(tags=["account"], summary="Issue an API key (the key is in this response only)",
               description="Scopes available per role: AGR market:read, offers:write, prognoses:write, "
                           "settlement:read; DSO market:read, requests:write, orders:write, contracts:write, "
                           "settlement:read.",
               request=ApiKeyInputSerializer, responses={201: ApiKeyCreatedSerializer, **ERROR_RESPONSES},
               parameters=[IDEMPOTENCY_PARAMETER])
class ApiKeyCreateApi(KeyAdmin):
    @idempotent
    def post(self, request: Request) -> Response:
        serializer = ApiKeyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key, raw = api_key_create(participant=self.participant, name=serializer.validated_data["name"],
                                      scopes=serializer.validated_data.get("scopes"),
                                      actor=request.user)  # type: ignore[arg-type]
        body = {**ApiKeyOutputSerializer(api_key).data, "key": raw}
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema(tags=["account"], summary="Revoke an API key", request=None,
               responses={200: ApiKeyOutputSerializer, 409: ERROR_RESPONSES[400], **ERROR_RESPONSES},
               parameters=[IDEMPOTENCY_PARAMETER])
class ApiKeyRevokeApi(KeyAdmin):
    @idempotent
    def post(self, request: Request, pk: str) -> Response:
        api_key = get_object_or_404(ApiKey.objects.filter(participant=self.participant), pk=pk)
        api_key = api_key_revoke(api_key=api_key, actor=request.user)  # type: ignore[arg-type]
        return Response(ApiKeyOutputSerializer(api_key).data)


