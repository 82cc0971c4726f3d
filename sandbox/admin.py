"""Admin for the simulated CPO: its registered clients (tokens masked) and the charging profiles it received."""

from __future__ import annotations

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from common.admin import mask_secret
from sandbox.models import SandboxChargingProfile, SandboxCpoClient

CLIENT_TOKEN_FIELDS = ("token_from_client", "token_for_client")


@admin.register(SandboxCpoClient)
class SandboxCpoClientAdmin(admin.ModelAdmin):
    """Tokens are typed in once, on the add form; afterwards only their last 4 characters are shown."""

    list_display = ("name", "reject_all")
    list_filter = ("reject_all",)
    search_fields = ("name",)

    def get_exclude(self, request: HttpRequest, obj: SandboxCpoClient | None = None) -> tuple[str, ...]:
        return CLIENT_TOKEN_FIELDS if obj is not None else ()

    def get_readonly_fields(self, request: HttpRequest, obj: SandboxCpoClient | None = None) -> tuple[str, ...]:
        return ("masked_token_from_client", "masked_token_for_client") if obj is not None else ()

    @admin.display(description="Token from client")
    def masked_token_from_client(self, client: SandboxCpoClient) -> str:
        return mask_secret(client.token_from_client)

    @admin.display(description="Token for client")
    def masked_token_for_client(self, client: SandboxCpoClient) -> str:
        return mask_secret(client.token_for_client)


@admin.register(SandboxChargingProfile)
class SandboxChargingProfileAdmin(admin.ModelAdmin):
    """What the simulated CPO received: a record, so not added or edited here (deleting resets the sandbox)."""

    # OCPI endpoints are HTTPS; a scheme-less URL typed here means https (and silences the Django 6 warning).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    list_display = (
        "session_id",
        "client",
        "sync_result",
        "async_result",
        "is_active",
        "received_at",
        "result_posted_at",
    )
    list_filter = ("sync_result", "async_result", "is_active", ("client", admin.RelatedOnlyFieldListFilter))
    search_fields = ("=session_id",)
    date_hierarchy = "received_at"
    list_select_related = ("client",)
    readonly_fields = ("received_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SandboxChargingProfile | None = None) -> bool:
        return False
