"""Settlement API (/api/v1/settlement/): statements for the DSO that pays or the aggregator that is paid."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers

from market.apis._shared import ScopedDetailView, ScopedListView, ScopedView
from market.filters import AwareIsoDateTimeFilter
from settlement import selectors
from settlement.models import Statement


class SettlementLineOutputSerializer(serializers.Serializer):
    isp = serializers.IntegerField()
    isp_start = serializers.DateTimeField()
    baseline_w = serializers.IntegerField()
    measured_w = serializers.IntegerField()
    ordered_w = serializers.IntegerField()
    delivered_w = serializers.IntegerField(help_text="Flex realised in the ordered direction (baseline - measured "
                                                     "for a reduction); may be negative.")
    paid_eur = serializers.DecimalField(max_digits=14, decimal_places=2)


class OrderSettlementOutputSerializer(serializers.Serializer):
    order_reference = serializers.CharField(source="flex_order.order_reference")
    flex_order = serializers.UUIDField(source="flex_order_id")
    congestion_point = serializers.CharField(source="flex_order.congestion_point.ean")
    period = serializers.DateField(source="flex_order.period")
    baseline_method = serializers.CharField()
    d_prognosis = serializers.UUIDField(source="d_prognosis_id", allow_null=True)
    ordered_kwh = serializers.DecimalField(max_digits=12, decimal_places=3)
    delivered_kwh = serializers.DecimalField(max_digits=12, decimal_places=3)
    unit_price_eur_per_kwh = serializers.DecimalField(max_digits=14, decimal_places=6)
    total_eur = serializers.DecimalField(max_digits=14, decimal_places=2)
    lines = SettlementLineOutputSerializer(many=True)


class StatementOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    dso = serializers.CharField(source="dso.domain")
    aggregator = serializers.CharField(source="aggregator.domain")
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    version = serializers.IntegerField()
    status = serializers.CharField()
    currency = serializers.CharField()
    total_eur = serializers.DecimalField(max_digits=14, decimal_places=2)
    issued_at = serializers.DateTimeField()
    order_settlements = OrderSettlementOutputSerializer(many=True)
    created_at = serializers.DateTimeField()


class StatementFilter(django_filters.FilterSet):
    status = django_filters.CharFilter()
    period = django_filters.DateFilter(method="filter_period", help_text="Statements covering this market day.")
    congestion_point = django_filters.CharFilter(
        method="filter_congestion_point", help_text="Statements settling an order on this point (EAN-18).")
    period_after = django_filters.DateFilter(field_name="period_end", lookup_expr="gte",
                                             help_text="Statements ending on or after this day.")
    period_before = django_filters.DateFilter(field_name="period_start", lookup_expr="lte",
                                              help_text="Statements starting on or before this day.")
    updated_since = AwareIsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")

    class Meta:
        model = Statement
        fields: list[str] = []

    def filter_period(self, queryset: QuerySet[Statement], name: str, value: Any) -> QuerySet[Statement]:
        return queryset.filter(period_start__lte=value, period_end__gte=value)

    def filter_congestion_point(self, queryset: QuerySet[Statement], name: str, value: str) -> QuerySet[Statement]:
        return queryset.filter(order_settlements__flex_order__congestion_point__ean=value).distinct()


def _statements(view: ScopedView) -> QuerySet[Statement]:
    return selectors.statements_for_participant(participant=view.participant)


@extend_schema(tags=["settlement"], summary="My settlement statements")
class StatementListApi(ScopedListView):
    required_scope = "settlement:read"
    queryset = Statement.objects.none()  # the model, for the schema; get_queryset scopes the rows
    serializer_class = StatementOutputSerializer
    filterset_class = StatementFilter

    def get_queryset(self) -> QuerySet[Statement]:
        return _statements(self)


@extend_schema(tags=["settlement"], summary="One settlement statement with its lines")
class StatementDetailApi(ScopedDetailView):
    required_scope = "settlement:read"
    serializer_class = StatementOutputSerializer

    def get_queryset(self) -> QuerySet[Statement]:
        return _statements(self)
