"""Admin for the EV portfolio: CPOs (tokens masked), charge points, sessions, schedules and the command outbox.

Schedules are optimiser output and commands are the dispatch outbox, whose states the CPO's answers
drive: both are read-only here, as is every `status`.
"""

from __future__ import annotations

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from aggregator.models import ChargePoint, ChargePointOperator, ChargingProfileCommand, ChargingSession, SessionSchedule
from common.admin import ReadOnlyAdminMixin, mask_secret

STAMPS = ("created_at", "updated_at")
CPO_TOKEN_FIELDS = ("token_for_cpo", "token_from_cpo")


class ChargePointInline(admin.TabularInline):
    model = ChargePoint
    fields = ("evse_uid", "connection", "max_power_w", "phases")
    raw_id_fields = ("connection",)
    extra = 0
    show_change_link = True


@admin.register(ChargePointOperator)
class ChargePointOperatorAdmin(admin.ModelAdmin):
    """OCPI tokens are typed in once, on the add form; afterwards only their last 4 characters are shown."""

    # OCPI endpoints are HTTPS; a scheme-less URL typed here means https (and silences the Django 6 warning).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    list_display = (
        "name",
        "country_code",
        "party_id",
        "aggregator",
        "chargingprofiles_url",
        "auth_base64",
        "is_active",
    )
    list_filter = ("is_active", "country_code", ("aggregator", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "party_id", "aggregator__name")
    list_select_related = ("aggregator",)
    autocomplete_fields = ("aggregator",)
    inlines = (ChargePointInline,)

    def get_exclude(self, request: HttpRequest, obj: ChargePointOperator | None = None) -> tuple[str, ...]:
        return CPO_TOKEN_FIELDS if obj is not None else ()

    def get_readonly_fields(self, request: HttpRequest, obj: ChargePointOperator | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("id", *STAMPS)
        return ("id", "masked_token_for_cpo", "masked_token_from_cpo", *STAMPS)

    @admin.display(description="Token for CPO")
    def masked_token_for_cpo(self, cpo: ChargePointOperator) -> str:
        return mask_secret(cpo.token_for_cpo)

    @admin.display(description="Token from CPO")
    def masked_token_from_cpo(self, cpo: ChargePointOperator) -> str:
        return mask_secret(cpo.token_from_cpo)


@admin.register(ChargePoint)
class ChargePointAdmin(admin.ModelAdmin):
    list_display = ("evse_uid", "cpo", "connection", "max_power_w", "phases", "created_at")
    list_filter = (("cpo", admin.RelatedOnlyFieldListFilter), "phases")
    search_fields = ("evse_uid", "=connection__ean")
    list_select_related = ("cpo", "connection")
    autocomplete_fields = ("cpo",)
    raw_id_fields = ("connection",)
    readonly_fields = ("id", *STAMPS)


@admin.register(ChargingSession)
class ChargingSessionAdmin(admin.ModelAdmin):
    list_display = (
        "cpo_session_id",
        "charge_point",
        "status",
        "arrival_at",
        "expected_departure_at",
        "energy_requested_kwh",
        "energy_delivered_kwh",
        "ended_at",
    )
    list_filter = ("status", ("charge_point__cpo", admin.RelatedOnlyFieldListFilter))
    search_fields = ("cpo_session_id", "charge_point__evse_uid", "=charge_point__connection__ean")
    date_hierarchy = "arrival_at"
    list_select_related = ("charge_point",)
    raw_id_fields = ("charge_point",)
    readonly_fields = ("id", "status", *STAMPS)
    show_full_result_count = False


@admin.register(SessionSchedule)
class SessionScheduleAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "session",
        "flex_order",
        "start",
        "planned_energy_kwh",
        "shortfall_kwh",
        "is_current",
        "created_at",
    )
    list_filter = ("is_current",)
    search_fields = ("=session__cpo_session_id", "=flex_order__order_reference")
    date_hierarchy = "start"
    list_select_related = ("session", "flex_order")
    show_full_result_count = False


@admin.register(ChargingProfileCommand)
class ChargingProfileCommandAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "cpo",
        "session",
        "flex_order",
        "status",
        "attempts",
        "sent_at",
        "result_at",
        "created_at",
    )
    list_filter = ("status", "kind", ("cpo", admin.RelatedOnlyFieldListFilter))
    search_fields = ("=id", "=session__cpo_session_id", "=flex_order__order_reference")
    date_hierarchy = "created_at"
    list_select_related = ("cpo", "session", "flex_order")
    show_full_result_count = False
