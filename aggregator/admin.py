"""Admin for the EV portfolio: CPOs (tokens masked), charge points, sessions, schedules and the command outbox.

Schedules are optimiser output and commands are the dispatch outbox, whose states the CPO's answers
drive: both are read-only here, as is every `status`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import models
from django.http import HttpRequest

from aggregator.models import (
    ChargePoint,
    ChargePointOperator,
    ChargingProfileCommand,
    ChargingSession,
    OcpiEvse,
    OcpiLocation,
    OcpiSession,
    SessionSchedule,
)
from aggregator.models.drivers import Driver, DriverToken
from aggregator.models.oscp import (
    CapacityAdjustment,
    CapacityGroup,
    ComplianceError,
    GroupMeasurement,
    OscpInboundMessage,
    OscpOutboundMessage,
    OscpPeer,
)
from aggregator.oscp import services as oscp_services
from common.admin import ReadOnlyAdminMixin, mask_secret
from common.exceptions import ApplicationError

STAMPS = ("created_at", "updated_at")
CPO_TOKEN_FIELDS = ("token_for_cpo", "token_from_cpo", "token_a")
CPO_READONLY_OCPI = ("registration", "ocpi_version", "ocpi_endpoints", "ocpi_roles", "sessions_synced_until")


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

    actions = ("issue_token_a", "rotate_credentials", "unregister", "resync_sessions")

    def get_exclude(self, request: HttpRequest, obj: ChargePointOperator | None = None) -> tuple[str, ...]:
        return CPO_TOKEN_FIELDS if obj is not None else ("token_a",)

    def get_readonly_fields(self, request: HttpRequest, obj: ChargePointOperator | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("id", *CPO_READONLY_OCPI, *STAMPS)
        return ("id", "masked_token_for_cpo", "masked_token_from_cpo", *CPO_READONLY_OCPI, *STAMPS)

    def _each(self, request: HttpRequest, queryset: Any, action: Any, done: str) -> None:
        for cpo in queryset:
            try:
                result = action(cpo)
            except ApplicationError as exc:
                self.message_user(request, f"{cpo}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, done.format(cpo=cpo, result=result), messages.SUCCESS)

    @admin.action(description="OCPI: issue a registration token A (shown once)")
    def issue_token_a(self, request: HttpRequest, queryset: Any) -> None:
        from aggregator.ocpi import registration

        self._each(request, queryset, lambda cpo: registration.token_a_issue(cpo=cpo, actor=request.user),
                   "{cpo}: token A {result} - give it with our versions URL to the CPO; it is not shown again.")

    @admin.action(description="OCPI: rotate credentials at the CPO (PUT)")
    def rotate_credentials(self, request: HttpRequest, queryset: Any) -> None:
        from aggregator.ocpi import registration

        self._each(request, queryset, lambda cpo: registration.rotate_at_cpo(cpo=cpo, actor=request.user),
                   "{cpo}: credentials rotated.")

    @admin.action(description="OCPI: unregister at the CPO (DELETE)")
    def unregister(self, request: HttpRequest, queryset: Any) -> None:
        from aggregator.ocpi import registration

        self._each(request, queryset, lambda cpo: registration.unregister_at_cpo(cpo=cpo, actor=request.user),
                   "{cpo}: unregistered.")

    @admin.action(description="OCPI: pull sessions changed since the last sync")
    def resync_sessions(self, request: HttpRequest, queryset: Any) -> None:
        from aggregator.ocpi import receivers

        self._each(request, queryset, lambda cpo: receivers.sessions_resync(cpo=cpo), "{cpo}: {result} sessions read.")

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
        "energy_source",
        "departure_source",
        "energy_delivered_kwh",
        "boosted_at",
        "ended_at",
    )
    list_filter = ("status", "energy_source", "departure_source", "flex_opt_out", "v2g_capable",
                   ("charge_point__cpo", admin.RelatedOnlyFieldListFilter))
    search_fields = ("cpo_session_id", "charge_point__evse_uid", "=charge_point__connection__ean", "=token_uid",
                     "=driver__reference")
    date_hierarchy = "arrival_at"
    list_select_related = ("charge_point",)
    raw_id_fields = ("charge_point", "driver")
    readonly_fields = ("id", "status", "boosted_at", *STAMPS)
    show_full_result_count = False


class DriverTokenInline(admin.TabularInline):
    """Tokens are added through the API; support may delete a lost card here."""

    model = DriverToken
    fields = ("uid", "created_at")
    readonly_fields = ("uid", "created_at")
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Driver)
class DriverAdmin(admin.ModelAdmin):
    """Drivers and their standing preferences. Change preferences through the API (it re-plans open sessions);
    here they are shown for support."""

    list_display = ("reference", "aggregator", "usual_departure_time", "min_energy_kwh", "min_energy_by_time",
                    "flex_opt_out", "v2g_allowed", "created_at")
    list_filter = (("aggregator", admin.RelatedOnlyFieldListFilter), "flex_opt_out", "v2g_allowed")
    search_fields = ("reference", "=tokens__uid")
    list_select_related = ("aggregator",)
    readonly_fields = ("id", "aggregator", "usual_departure_time", "min_energy_kwh", "min_energy_by_time",
                       "flex_opt_out", "v2g_allowed", "battery_capacity_kwh", *STAMPS)
    inlines = [DriverTokenInline]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # drivers are registered through the API, with their tokens and audit trail


@admin.register(DriverToken)
class DriverTokenAdmin(admin.ModelAdmin):
    """Which driver a card or app token belongs to (support looks up a session's token here)."""

    list_display = ("uid", "driver", "aggregator", "created_at")
    list_filter = (("aggregator", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("=uid", "driver__reference")
    list_select_related = ("driver", "aggregator")
    readonly_fields = ("id", "aggregator", "driver", "uid", *STAMPS)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are added through the API, where their uniqueness per aggregator is checked


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
    actions = ("retry_commands",)

    @admin.action(description="Re-try the selected dead-lettered / failed / timed-out commands")
    def retry_commands(self, request: HttpRequest, queryset: Any) -> None:
        """The dead-letter console: filter by status DEAD_LETTER, select, re-try (a command a newer one replaced is
        superseded instead of re-sent)."""
        from aggregator.delivery import commands_retry

        try:
            result = commands_retry(command_ids=list(queryset.values_list("pk", flat=True)), actor=request.user)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"{result['requeued']} re-queued, {result['superseded']} superseded by newer "
                                   "commands.", messages.SUCCESS)


# --- OCPI objects as the CPOs sent them ---------------------------------------------------------------


class OcpiEvseInline(admin.TabularInline):
    model = OcpiEvse
    fields = ("evse_uid", "status", "max_power_w", "phases", "profiles_supported", "charge_point")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(OcpiLocation)
class OcpiLocationAdmin(admin.ModelAdmin):
    """The one thing an operator sets here: the grid connection a location hangs off (its EVSEs then join the
    portfolio as charge points on the next push or resync)."""

    list_display = ("location_id", "name", "cpo", "connection", "last_updated")
    list_filter = (("cpo", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("location_id", "name", "=connection__ean")
    list_select_related = ("cpo", "connection")
    raw_id_fields = ("connection",)
    readonly_fields = ("cpo", "location_id", "name", "data", "last_updated", *STAMPS)
    inlines = (OcpiEvseInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # locations come from the CPO


@admin.register(OcpiEvse)
class OcpiEvseAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("evse_uid", "cpo", "location", "status", "max_power_w", "phases", "profiles_supported")
    list_filter = ("status", "profiles_supported", ("cpo", admin.RelatedOnlyFieldListFilter))
    search_fields = ("evse_uid",)
    list_select_related = ("cpo", "location")


@admin.register(OcpiSession)
class OcpiSessionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("session_id", "cpo", "status", "evse_uid", "kwh", "start_date_time", "last_updated")
    list_filter = ("status", ("cpo", admin.RelatedOnlyFieldListFilter))
    search_fields = ("session_id", "evse_uid")
    date_hierarchy = "start_date_time"
    list_select_related = ("cpo",)
    show_full_result_count = False


# --- OSCP 2.0 (we are Capacity Provider; CPOs' back-offices are Flexibility Providers) ------------------


class CapacityGroupInline(admin.TabularInline):
    model = CapacityGroup
    fields = ("group_id", "congestion_point", "offpeak_capacity_kw", "peak_capacity_kw", "fallback_capacity_kw",
              "is_active")
    raw_id_fields = ("congestion_point",)
    extra = 0
    show_change_link = True


@admin.register(OscpPeer)
class OscpPeerAdmin(admin.ModelAdmin):
    """Registration: either issue token A (shown once) for the CPO to register at us, or type in the token the CPO
    gave us and its base URL, then "Register at the peer". Tokens we issued are kept only as digests."""

    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ("cpo", "base_url", "registration_status", "handshake_status", "last_heartbeat_received_at",
                    "peer_offline_mode_at", "is_active")
    list_filter = ("registration_status", "handshake_status", "is_active")
    search_fields = ("cpo__name", "base_url")
    list_select_related = ("cpo",)
    autocomplete_fields = ("cpo",)
    inlines = (CapacityGroupInline,)
    actions = ("issue_registration_token", "register_at_peer", "rotate_token", "send_handshake", "publish_forecasts")
    readonly_fields = ("id", "registration_status", "handshake_status", "token_from_peer_digest",
                       "initial_token_digest", "peer_required_behaviour", "last_heartbeat_sent_at",
                       "last_heartbeat_received_at", "peer_offline_mode_at", "offline_alerted_at", *STAMPS)

    def get_exclude(self, request: HttpRequest, obj: OscpPeer | None = None) -> tuple[str, ...]:
        return ("token_for_peer",) if obj is not None and obj.token_for_peer else ()

    def get_readonly_fields(self, request: HttpRequest, obj: OscpPeer | None = None) -> tuple[str, ...]:
        masked = ("masked_token_for_peer",) if obj is not None and obj.token_for_peer else ()
        return (*self.readonly_fields, *masked)

    @admin.display(description="Token for peer")
    def masked_token_for_peer(self, peer: OscpPeer) -> str:
        return mask_secret(peer.token_for_peer)

    @admin.action(description="Issue a registration token (token A) for the CPO to register at us")
    def issue_registration_token(self, request: HttpRequest, queryset: models.QuerySet[OscpPeer]) -> None:
        for peer in queryset:
            token = oscp_services.peer_initial_token_issue(peer=peer, actor=request.user)
            self.message_user(request, f"{peer}: give the CPO this token and our URL {oscp_services.cp_base_url()} "
                                       f"(shown once): {token}", messages.WARNING)

    @admin.action(description="Register at the peer (with the token it gave us)")
    def register_at_peer(self, request: HttpRequest, queryset: models.QuerySet[OscpPeer]) -> None:
        for peer in queryset:
            try:
                oscp_services.peer_register(peer=peer, peer_token=peer.token_for_peer, actor=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"{peer}: {exc.message}", messages.ERROR)

    @admin.action(description="Give the peer a new token for calling us (PUT register)")
    def rotate_token(self, request: HttpRequest, queryset: models.QuerySet[OscpPeer]) -> None:
        for peer in queryset:
            try:
                oscp_services.peer_token_rotate(peer=peer, actor=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"{peer}: {exc.message}", messages.ERROR)

    @admin.action(description="Send a handshake")
    def send_handshake(self, request: HttpRequest, queryset: models.QuerySet[OscpPeer]) -> None:
        for peer in queryset:
            oscp_services.handshake_send(peer=peer)

    @admin.action(description="Publish capacity forecasts for today and tomorrow")
    def publish_forecasts(self, request: HttpRequest, queryset: models.QuerySet[OscpPeer]) -> None:
        from aggregator import oscp_dispatch

        count = sum(oscp_dispatch.peer_forecasts_queue(peer=peer) for peer in queryset)
        self.message_user(request, f"{count} forecast message(s) queued")


@admin.register(CapacityGroup)
class CapacityGroupAdmin(admin.ModelAdmin):
    list_display = ("group_id", "peer", "congestion_point", "offpeak_capacity_kw", "peak_capacity_kw", "peak_start",
                    "peak_end", "fallback_capacity_kw", "is_active")
    list_filter = ("is_active", ("peer", admin.RelatedOnlyFieldListFilter))
    search_fields = ("group_id", "=congestion_point__ean")
    list_select_related = ("peer__cpo", "congestion_point")
    raw_id_fields = ("congestion_point", "charge_points")
    readonly_fields = ("id", *STAMPS)


@admin.register(OscpOutboundMessage)
class OscpOutboundMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The OSCP outbox. Failed (refused) and dead-lettered messages can be put back in the queue."""

    list_display = ("id", "endpoint", "peer", "group", "status", "attempts", "http_status", "next_attempt_at",
                    "sent_at", "created_at")
    list_filter = ("status", "endpoint", ("peer", admin.RelatedOnlyFieldListFilter))
    search_fields = ("=id", "=correlation_id", "group__group_id", "=flex_order__order_reference")
    date_hierarchy = "created_at"
    list_select_related = ("peer__cpo", "group")
    exclude = ("auth_token",)
    actions = ("retry_messages",)
    show_full_result_count = False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # Read-only for edits, but re-queueing a dead letter is an operation, not an edit.
        return admin.ModelAdmin.get_actions(self, request)

    @admin.action(description="Retry (failed or dead-lettered messages only)")
    def retry_messages(self, request: HttpRequest, queryset: models.QuerySet[OscpOutboundMessage]) -> None:
        retried = 0
        for message in queryset.filter(status__in=OscpOutboundMessage.RETRIABLE_BY_OPERATOR):
            oscp_services.message_retry(message=message, actor=request.user)
            retried += 1
        self.message_user(request, f"{retried} message(s) queued again")


@admin.register(OscpInboundMessage)
class OscpInboundMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("request_id", "endpoint", "method", "peer", "correlation_id", "created_at")
    list_filter = ("endpoint", ("peer", admin.RelatedOnlyFieldListFilter))
    search_fields = ("=request_id", "=correlation_id")
    date_hierarchy = "created_at"
    list_select_related = ("peer__cpo",)
    show_full_result_count = False


@admin.register(GroupMeasurement)
class GroupMeasurementAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("group", "measure_time", "value", "unit", "value_kwh", "direction", "energy_type", "phase")
    list_filter = ("direction", "energy_type", ("group", admin.RelatedOnlyFieldListFilter))
    search_fields = ("group__group_id",)
    date_hierarchy = "measure_time"
    list_select_related = ("group",)
    show_full_result_count = False


@admin.register(ComplianceError)
class ComplianceErrorAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Alerts: a CPO says it cannot keep a forecast. Acknowledge once handled."""

    list_display = ("created_at", "peer", "group", "message", "forecast", "acknowledged_at")
    list_filter = (("acknowledged_at", admin.EmptyFieldListFilter), ("peer", admin.RelatedOnlyFieldListFilter))
    search_fields = ("message", "group__group_id")
    list_select_related = ("peer__cpo", "group")
    actions = ("acknowledge",)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return admin.ModelAdmin.get_actions(self, request)

    @admin.action(description="Acknowledge")
    def acknowledge(self, request: HttpRequest, queryset: models.QuerySet[ComplianceError]) -> None:
        for error in queryset.filter(acknowledged_at__isnull=True):
            oscp_services.compliance_error_acknowledge(error=error, actor=request.user)


@admin.register(CapacityAdjustment)
class CapacityAdjustmentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "group", "forecast_type", "decision", "reason", "response")
    list_filter = ("decision", ("group", admin.RelatedOnlyFieldListFilter))
    search_fields = ("group__group_id",)
    list_select_related = ("group", "response")
