"""Settlement API (/api/v1/settlement/): statements for the DSO that pays or the aggregator that is paid."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import ERROR_RESPONSES, paginated, paginated_response
from market.permissions import IsMarketParticipant, request_participant
from settlement import selectors


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


class StatementListApi(APIView):
    permission_classes = [IsMarketParticipant]

    @extend_schema(operation_id="statements_list", summary="My settlement statements",
                   responses={200: paginated(StatementOutputSerializer, "PaginatedStatementList"), **ERROR_RESPONSES},
                   tags=["settlement"])
    def get(self, request: Request) -> Response:
        queryset = selectors.statements_for_participant(participant=request_participant(request))
        return paginated_response(queryset=queryset, serializer_class=StatementOutputSerializer, request=request,
                                  view=self)


class StatementDetailApi(APIView):
    permission_classes = [IsMarketParticipant]

    @extend_schema(operation_id="statements_retrieve", summary="One settlement statement with its lines",
                   responses={200: StatementOutputSerializer, **ERROR_RESPONSES}, tags=["settlement"])
    def get(self, request: Request, statement_id: str) -> Response:
        statement = get_object_or_404(
            selectors.statements_for_participant(participant=request_participant(request)),
            pk=statement_id,
        )
        return Response(StatementOutputSerializer(statement).data)
