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


class SettlementLineInline(ReadOnlyTabularInline):
    model = SettlementLine
    fields = ("isp", "isp_start", "baseline_w", "measured_w", "ordered_w", "delivered_w", "paid_eur")


class OrderSettlementInline(ReadOnlyTabularInline):
    model = OrderSettlement
    fields = ("flex_order", "baseline_method", "ordered_kwh", "delivered_kwh", "unit_price_eur_per_kwh", "total_eur")
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
