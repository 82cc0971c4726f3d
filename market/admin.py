"""Admin for the exchange: participants and users, the grid, and the USEF flex messages with their ISP rows.

Flex messages change state only through market.services, so `status` is read-only everywhere. A flex
request can be drafted here and edited while it is a draft; D-prognoses (the settlement baseline),
offers and orders (binding documents) arrive through the API/UFTP and are read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from common.admin import AuditTrailAdminMixin, ReadOnlyAdminMixin, ReadOnlyTabularInline
from common.exceptions import ApplicationError
from market import services
from market.models import (
    AggregatorConnection,
    ApiKey,
    CongestionPoint,
    Connection,
    DPrognosis,
    DPrognosisIsp,
    FlexContract,
    FlexOffer,
    FlexOfferOption,
    FlexOfferOptionIsp,
    FlexOrder,
    FlexOrderIsp,
    FlexRequest,
    FlexRequestIsp,
    FlexReservationUpdate,
    FlexReservationUpdateIsp,
    Market,
    Participant,
    User,
)

STAMPS = ("created_at", "updated_at")
MESSAGE_IDS = ("id", "message_id", "conversation_id")


# --- participants and users ---------------------------------------------------------------------------


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ("name", "role", "domain", "is_active", "created_at")
    list_filter = ("role", "is_active")
    search_fields = ("name", "domain")
    readonly_fields = ("id", *STAMPS)


class FlexUserChangeForm(UserChangeForm):
    class Meta(UserChangeForm.Meta):
        model = User


class FlexUserCreationForm(AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):
        model = User
        fields = ("username", "participant")


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Django's user admin plus the participant a user acts for."""

    form = FlexUserChangeForm
    add_form = FlexUserCreationForm
    list_display = ("username", "email", "participant", "participant_role", "is_staff", "is_active", "last_login")
    list_filter = ("participant__role", "is_staff", "is_superuser", "is_active")
    search_fields = ("username", "first_name", "last_name", "email", "participant__name", "participant__domain")
    list_select_related = ("participant",)
    autocomplete_fields = ("participant",)
    fieldsets = (
        (None, {"fields": ("username", "password", "participant")}),
        *(DjangoUserAdmin.fieldsets or ())[1:],
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("username", "participant", "usable_password", "password1", "password2"),
            },
        ),
    )
    readonly_fields = ("last_login", "date_joined")

    @admin.display(description="Role", ordering="participant__role")
    def participant_role(self, user: User) -> str:
        return user.role or "-"


# --- the grid -----------------------------------------------------------------------------------------


@admin.register(CongestionPoint)
class CongestionPointAdmin(admin.ModelAdmin):
    list_display = ("name", "ean", "dso", "market", "capacity_kw", "mutex_offers_supported", "created_at")
    list_filter = (("dso", admin.RelatedOnlyFieldListFilter), "market")
    search_fields = ("name", "ean", "dso__name")
    list_select_related = ("dso",)
    autocomplete_fields = ("dso",)
    readonly_fields = ("id", *STAMPS)


class AggregatorConnectionInline(admin.TabularInline):
    model = AggregatorConnection
    fields = ("aggregator", "valid_from", "valid_until")
    autocomplete_fields = ("aggregator",)
    extra = 0


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = ("ean", "congestion_point", "annual_consumption_kwh", "created_at")
    list_filter = (("congestion_point__dso", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("ean", "congestion_point__ean", "congestion_point__name")
    list_select_related = ("congestion_point",)
    autocomplete_fields = ("congestion_point",)
    readonly_fields = STAMPS
    inlines = (AggregatorConnectionInline,)

    def get_readonly_fields(self, request: HttpRequest, obj: Connection | None = None) -> tuple[str, ...]:
        # The EAN is the primary key: editing it would create a copy, not rename the connection.
        return (*self.readonly_fields, "ean") if obj is not None else tuple(self.readonly_fields)


@admin.register(AggregatorConnection)
class AggregatorConnectionAdmin(admin.ModelAdmin):
    list_display = ("connection", "aggregator", "valid_from", "valid_until", "created_at")
    list_filter = (("aggregator", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("=connection__ean", "aggregator__name")
    date_hierarchy = "valid_from"
    list_select_related = ("aggregator", "connection")
    autocomplete_fields = ("aggregator", "connection")
    readonly_fields = STAMPS


# --- flex messages ------------------------------------------------------------------------------------


class FlexMessageAdmin(AuditTrailAdminMixin, admin.ModelAdmin):
    """Shared by the four USEF messages: ids, stamps, status and the audit trail are read-only.

    `editable_statuses` lists the states in which the admin may edit a message (empty: never);
    nothing here deletes a message, whose audit trail must stay resolvable.
    """

    editable_statuses: frozenset[str] = frozenset()
    date_hierarchy = "period"
    show_full_result_count = False
    readonly_fields: ClassVar[tuple[str, ...]] = (*MESSAGE_IDS, "status", *STAMPS, "audit_trail_table")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Outside its editable states the change page becomes a view page (every field read-only).
        editable = obj is None or obj.status in self.editable_statuses
        return editable and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class FlexRequestIspInline(admin.TabularInline):
    model = FlexRequestIsp
    fields = ("isp", "disposition", "min_power_w", "max_power_w")
    extra = 0

    def _parent_editable(self, obj: FlexRequest | None) -> bool:
        return obj is None or obj.status == FlexRequest.Status.DRAFT

    def has_add_permission(self, request: HttpRequest, obj: FlexRequest | None = None) -> bool:
        return super().has_add_permission(request, obj) and self._parent_editable(obj)

    def has_change_permission(self, request: HttpRequest, obj: FlexRequest | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._parent_editable(obj)

    def has_delete_permission(self, request: HttpRequest, obj: FlexRequest | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._parent_editable(obj)


@admin.register(FlexRequest)
class FlexRequestAdmin(FlexMessageAdmin):
    """A DSO's request; drafted here if need be (opening it is market.services.flex_request_open)."""

    editable_statuses = frozenset({FlexRequest.Status.DRAFT})
    list_display = (
        "congestion_point",
        "period",
        "revision",
        "status",
        "dso",
        "service_type",
        "expires_at",
        "created_at",
    )
    list_filter = ("status", ("dso", admin.RelatedOnlyFieldListFilter))
    search_fields = ("=id", "=message_id", "=conversation_id", "congestion_point__name", "congestion_point__ean")
    list_select_related = ("congestion_point", "dso")
    autocomplete_fields = ("congestion_point", "dso")
    readonly_fields = (*FlexMessageAdmin.readonly_fields, "revision", "created_by")
    inlines = (FlexRequestIspInline,)
    actions = ("open_requests", "cancel_requests")

    def save_model(self, request: HttpRequest, obj: FlexRequest, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    def _run_service(
        self, request: HttpRequest, queryset: QuerySet[FlexRequest], service: Callable[..., FlexRequest], done: str
    ) -> None:
        """Apply one state-transition service per request; a refusal is reported and the rest go on."""
        count = 0
        for flex_request in queryset.select_related("congestion_point"):
            try:
                service(flex_request=flex_request, actor=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"{flex_request}: {exc.message}", level=messages.ERROR)
            else:
                count += 1
        if count:
            self.message_user(request, f"{done} {count} flex request(s).", level=messages.SUCCESS)

    @admin.action(description="Open selected draft requests", permissions=["change"])
    def open_requests(self, request: HttpRequest, queryset: QuerySet[FlexRequest]) -> None:
        self._run_service(request, queryset, services.flex_request_open, "Opened")

    @admin.action(description="Cancel selected requests", permissions=["change"])
    def cancel_requests(self, request: HttpRequest, queryset: QuerySet[FlexRequest]) -> None:
        self._run_service(request, queryset, services.flex_request_cancel, "Cancelled")


class DPrognosisIspInline(ReadOnlyTabularInline):
    model = DPrognosisIsp
    fields = ("isp", "power_w")


@admin.register(DPrognosis)
class DPrognosisAdmin(ReadOnlyAdminMixin, FlexMessageAdmin):
    """The aggregator's baseline for settlement: submitted through the API/UFTP only, never edited."""

    list_display = ("congestion_point", "period", "revision", "status", "aggregator", "created_at")
    list_filter = ("status", ("aggregator", admin.RelatedOnlyFieldListFilter))
    search_fields = ("=id", "=message_id", "congestion_point__name", "congestion_point__ean", "aggregator__name")
    list_select_related = ("congestion_point", "aggregator")
    readonly_fields = (*FlexMessageAdmin.readonly_fields, "revision")
    inlines = (DPrognosisIspInline,)


class FlexOfferOptionInline(ReadOnlyTabularInline):
    model = FlexOfferOption
    fields = ("option_reference", "price_eur", "min_activation_factor", "isp_summary")
    readonly_fields = ("isp_summary",)
    show_change_link = True

    @admin.display(description="ISPs (W)")
    def isp_summary(self, option: FlexOfferOption) -> str:
        return ", ".join(f"{row.isp}: {row.power_w}" for row in option.isps.all())


@admin.register(FlexOffer)
class FlexOfferAdmin(ReadOnlyAdminMixin, FlexMessageAdmin):
    """A binding offer: read-only; it moves only through flex_offer_accept/reject/revoke/expire."""

    list_display = (
        "congestion_point",
        "period",
        "aggregator",
        "status",
        "is_unsolicited",
        "expires_at",
        "created_at",
    )
    list_filter = ("status", ("aggregator", admin.RelatedOnlyFieldListFilter))
    search_fields = (
        "=id",
        "=message_id",
        "=conversation_id",
        "congestion_point__name",
        "congestion_point__ean",
        "aggregator__name",
    )
    list_select_related = ("congestion_point", "aggregator")
    inlines = (FlexOfferOptionInline,)

    @admin.display(description="Unsolicited", boolean=True)
    def is_unsolicited(self, offer: FlexOffer) -> bool:
        return offer.unsolicited


class FlexOrderIspInline(ReadOnlyTabularInline):
    model = FlexOrderIsp
    fields = ("isp", "power_w")


@admin.register(FlexOrder)
class FlexOrderAdmin(ReadOnlyAdminMixin, FlexMessageAdmin):
    """A binding order: read-only; dispatch and settlement move it through market.services."""

    list_display = (
        "order_reference",
        "congestion_point",
        "period",
        "dso",
        "aggregator",
        "price_eur",
        "activation_factor",
        "status",
        "created_at",
    )
    list_filter = (
        "status",
        ("dso", admin.RelatedOnlyFieldListFilter),
        ("aggregator", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = (
        "order_reference",
        "=id",
        "=message_id",
        "=conversation_id",
        "congestion_point__name",
        "congestion_point__ean",
        "aggregator__name",
    )
    list_select_related = ("congestion_point", "dso", "aggregator")
    inlines = (FlexOrderIspInline,)


# --- ISP rows on their own (normally seen as inlines of their message) -------------------------------


class IspRowAdmin(admin.ModelAdmin):
    """ISP rows listed across messages; large tables, so no full count."""

    show_full_result_count = False
    list_per_page = 200
    parent_field = ""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Model]:
        return super().get_queryset(request).order_by(f"-{self.parent_field}__created_at", self.parent_field, "isp")


@admin.register(FlexRequestIsp)
class FlexRequestIspAdmin(IspRowAdmin):
    parent_field = "flex_request"
    list_display = ("flex_request", "isp", "disposition", "min_power_w", "max_power_w")
    list_filter = ("disposition",)
    search_fields = ("=flex_request__id", "=flex_request__message_id")
    list_select_related = ("flex_request__congestion_point",)
    raw_id_fields = ("flex_request",)

    def _parent_editable(self, row: FlexRequestIsp | None) -> bool:
        return row is None or row.flex_request.status == FlexRequest.Status.DRAFT

    def has_change_permission(self, request: HttpRequest, obj: FlexRequestIsp | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._parent_editable(obj)

    def has_delete_permission(self, request: HttpRequest, obj: FlexRequestIsp | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._parent_editable(obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # add ISPs on the draft request's own page


@admin.register(DPrognosisIsp)
class DPrognosisIspAdmin(ReadOnlyAdminMixin, IspRowAdmin):
    parent_field = "d_prognosis"
    list_display = ("d_prognosis", "isp", "power_w")
    search_fields = ("=d_prognosis__id", "=d_prognosis__message_id")
    list_select_related = ("d_prognosis__congestion_point",)


class FlexOfferOptionIspInline(ReadOnlyTabularInline):
    model = FlexOfferOptionIsp
    fields = ("isp", "power_w")


@admin.register(FlexOfferOption)
class FlexOfferOptionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("flex_offer", "option_reference", "price_eur", "min_activation_factor")
    search_fields = ("=flex_offer__id", "option_reference")
    list_select_related = ("flex_offer__congestion_point", "flex_offer__aggregator")
    inlines = (FlexOfferOptionIspInline,)


@admin.register(FlexOfferOptionIsp)
class FlexOfferOptionIspAdmin(ReadOnlyAdminMixin, IspRowAdmin):
    parent_field = "option"
    list_display = ("option", "isp", "power_w")
    search_fields = ("=option__flex_offer__id",)
    list_select_related = ("option__flex_offer",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Model]:
        return admin.ModelAdmin.get_queryset(self, request).order_by("-option__created_at", "option", "isp")


@admin.register(Market)
class MarketAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "time_zone", "isp_minutes", "currency", "gate_closure_minutes")
    search_fields = ("code", "name")
    readonly_fields = ("id", *STAMPS)


@admin.register(FlexContract)
class FlexContractAdmin(AuditTrailAdminMixin, admin.ModelAdmin):
    list_display = ("contract_id", "dso", "aggregator", "congestion_point", "valid_from", "valid_until",
                    "reserved_power_w", "allows_direct_orders", "is_active")
    list_filter = ("is_active", "allows_direct_orders", ("dso", admin.RelatedOnlyFieldListFilter))
    search_fields = ("contract_id", "aggregator__name", "congestion_point__name", "congestion_point__ean")
    list_select_related = ("dso", "aggregator", "congestion_point")
    autocomplete_fields = ("congestion_point",)
    readonly_fields = ("id", *STAMPS, "audit_trail_table")


class FlexReservationUpdateIspInline(ReadOnlyTabularInline):
    model = FlexReservationUpdateIsp
    fields = ("isp", "power_w")


@admin.register(FlexReservationUpdate)
class FlexReservationUpdateAdmin(ReadOnlyAdminMixin, FlexMessageAdmin):
    list_display = ("contract", "period", "reference", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("=id", "=message_id", "contract__contract_id", "reference")
    list_select_related = ("contract", "congestion_point")
    inlines = (FlexReservationUpdateIspInline,)


@admin.register(FlexReservationUpdateIsp)
class FlexReservationUpdateIspAdmin(ReadOnlyAdminMixin, IspRowAdmin):
    parent_field = "reservation_update"
    list_display = ("reservation_update", "isp", "power_w")
    search_fields = ("=reservation_update__id",)
    list_select_related = ("reservation_update__contract",)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are issued through the API (shown once); here they are listed and revoked, never edited."""

    list_display = ("name", "participant", "prefix", "scopes", "last_used_at", "revoked_at", "created_at")
    list_filter = (("participant", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("name", "prefix", "participant__name")
    list_select_related = ("participant",)
    readonly_fields = ("id", "participant", "name", "prefix", "scopes", "created_by", "last_used_at", "revoked_at",
                       *STAMPS)
    exclude = ("key_hash",)
    actions = ("revoke_keys",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        from market.apikeys import api_key_revoke

        for key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=key, actor=request.user)  # type: ignore[arg-type]
        self.message_user(request, "Revoked.", level=messages.SUCCESS)


@admin.register(FlexOrderIsp)
class FlexOrderIspAdmin(ReadOnlyAdminMixin, IspRowAdmin):
    parent_field = "flex_order"
    list_display = ("flex_order", "isp", "power_w")
    search_fields = ("flex_order__order_reference", "=flex_order__id")
    list_select_related = ("flex_order",)
