"""Admin for meter data and settlement documents.

Statements, order settlements and their lines are issued documents (corrections are new versions), so
they are view-only. Meter readings run to millions of rows: no full counts, no joins, no costly filters.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from common.admin import EstimatedCountPaginator, ReadOnlyAdminMixin, ReadOnlyTabularInline
from settlement.models import MeterReading, OrderSettlement, SettlementLine, Statement
from settlement.models.meter import ConnectionCapacity, MeterImportBatch, MeterImportRejection, MeterReadingVersion


@admin.register(MeterReading)
class MeterReadingAdmin(admin.ModelAdmin):
    # Note: the connection column shows connection_id (the EAN) so the list needs no join; search is an
    # exact EAN so it uses the (connection, isp_start) unique index; date_hierarchy is left out because it
    # scans the table for its date ranges; the quality filter is a fixed choice list (no query to render).
    list_display = ("connection_ean", "isp_start", "kwh_import", "kwh_export", "quality", "received_at")
    list_filter = ("quality",)
    search_fields = ("=connection__ean",)
    raw_id_fields = ("connection",)
    readonly_fields = ("id", "received_at")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_select_related = False

    @admin.display(description="Connection", ordering="connection_id")
    def connection_ean(self, reading: MeterReading) -> str:
        return reading.connection_id


@admin.register(MeterReadingVersion)
class MeterReadingVersionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Superseded readings: kept, never edited (a correction is a new delivery)."""

    list_display = ("connection_id", "isp_start", "version", "kwh_import", "kwh_export", "quality", "superseded_at")
    search_fields = ("=connection__ean",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator


@admin.register(MeterImportBatch)
class MeterImportBatchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Deliveries and their counts; the rejected rows are in Meter import rejections (filter by batch id)."""

    list_display = ("created_at", "source_format", "source_name", "submitted_by", "engine", "received", "accepted",
                    "corrected", "unchanged", "rejected", "gaps", "duration_ms")
    list_filter = ("source_format", "engine")
    search_fields = ("=id", "source_name", "=content_hash")
    list_select_related = ("submitted_by",)


@admin.register(MeterImportRejection)
class MeterImportRejectionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("batch_id", "row_number", "reason", "connection_ean", "isp_start", "detail")
    list_filter = ("reason",)
    search_fields = ("=batch__id", "=connection_ean")
    show_full_result_count = False
    paginator = EstimatedCountPaginator


@admin.register(ConnectionCapacity)
class ConnectionCapacityAdmin(admin.ModelAdmin):
    """Physical limits where a connection is larger than 3 x 80 A: readings above limit x 0.25 h are refused."""

    list_display = ("connection", "max_power_kw")
    search_fields = ("=connection__ean",)
    raw_id_fields = ("connection",)


class SettlementLineInline(ReadOnlyTabularInline):
    model = SettlementLine
    fields = ("isp", "isp_start", "baseline_w", "measured_w", "ordered_w", "realised_w", "delivered_w", "deficiency_w",
              "payment_eur", "penalty_eur", "paid_eur")


class OrderSettlementInline(ReadOnlyTabularInline):
    model = OrderSettlement
    fields = ("flex_order", "baseline_method", "ordered_kwh", "delivered_kwh", "deficiency_kwh", "unit_price_eur_per_kwh",
              "payment_eur", "penalty_eur", "total_eur")
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[OrderSettlement]:
        return super().get_queryset(request).select_related("flex_order")


@admin.register(Statement)
class StatementAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "dso",
        "aggregator",
        "period_start",
        "period_end",
        "version",
        "total_eur",
        "currency",
        "status",
        "issued_at",
    )
    list_filter = (
        "status",
        ("dso", admin.RelatedOnlyFieldListFilter),
        ("aggregator", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = ("=id", "dso__name", "aggregator__name")
    date_hierarchy = "period_start"
    list_select_related = ("dso", "aggregator")
    inlines = (OrderSettlementInline,)


@admin.register(OrderSettlement)
class OrderSettlementAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "flex_order",
        "statement",
        "baseline_method",
        "ordered_kwh",
        "delivered_kwh",
        "total_eur",
        "created_at",
    )
    list_filter = ("baseline_method",)
    search_fields = ("flex_order__order_reference", "=statement__id")
    date_hierarchy = "created_at"
    list_select_related = ("flex_order", "statement__dso", "statement__aggregator")
    inlines = (SettlementLineInline,)


@admin.register(SettlementLine)
class SettlementLineAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "order_settlement",
        "isp",
        "isp_start",
        "baseline_w",
        "measured_w",
        "ordered_w",
        "delivered_w",
        "paid_eur",
    )
    search_fields = ("=order_settlement__flex_order__order_reference",)
    list_select_related = ("order_settlement__flex_order",)
    show_full_result_count = False
    list_per_page = 200


# --- settlement engine: baselines, runs, ledger, disputes, rewards (all issued records: view-only) ----------------

from settlement.models import BaselineRecord, Dispute, LedgerEntry, SessionReward, SettlementRun  # noqa: E402


@admin.register(BaselineRecord)
class BaselineRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Which method, with which parameters, gave which baseline (FlexSettlement BaselineReference)."""

    list_display = ("id", "period", "aggregator", "congestion_point", "method", "created_at")
    list_filter = ("method",)
    search_fields = ("=id", "=congestion_point__ean", "aggregator__name")
    date_hierarchy = "period"
    list_select_related = ("aggregator", "congestion_point")


@admin.register(SettlementRun)
class SettlementRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("period", "trigger", "started_at", "finished_at", "orders_settled", "orders_unchanged",
                    "orders_waiting", "statements_issued")
    list_filter = ("trigger",)
    date_hierarchy = "period"


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The hash chain; `manage.py verify_ledger` checks it."""

    list_display = ("sequence", "statement", "entry_hash", "previous_hash", "appended_at")
    search_fields = ("=entry_hash", "=statement__id")
    list_select_related = ("statement__dso", "statement__aggregator")


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Disputes are opened by aggregators (API) and resolved by DSOs (portal, API): a resolution issues a new
    statement version, so nothing is edited here."""

    list_display = ("flex_order", "isp", "status", "statement", "claimed_amount_eur", "corrected_amount_eur",
                    "created_at", "resolved_at")
    list_filter = ("status",)
    search_fields = ("=id", "flex_order__order_reference")
    list_select_related = ("flex_order", "statement__dso", "statement__aggregator")


@admin.register(SessionReward)
class SessionRewardAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("session", "order_settlement", "shifted_kwh", "reward_eur")
    search_fields = ("=session__id", "=order_settlement__flex_order__order_reference")
    list_select_related = ("session", "order_settlement__flex_order")
    show_full_result_count = False
