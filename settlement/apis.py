"""Settlement API (/api/v1/settlement/): statements and their exports for the DSO that pays or the aggregator
that is paid; disputes (the aggregator opens, the DSO resolves); the driver transparency report (aggregator)."""

from __future__ import annotations

import json
from typing import Any

import django_filters
from django.db.models import QuerySet
from django.http import HttpResponse
from django.template.loader import render_to_string
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.generics import get_object_or_404
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from common.idempotency import idempotent
from market.apis._shared import (
    ERROR_RESPONSES,
    IDEMPOTENCY_PARAMETER,
    ScopedDetailView,
    ScopedListView,
    ScopedView,
    visible_or_unknown,
)
from market.filters import AwareIsoDateTimeFilter
from market.permissions import HasScope, IsAggregator, IsDso, request_actor
from settlement import selectors
from settlement.models import Dispute, Statement
from settlement.services.disputes import dispute_open, dispute_resolve
from settlement.services.exports import flex_settlement_xml, statement_csv

# --- statements -------------------------------------------------------------------------------------------------


class SettlementLineOutputSerializer(serializers.Serializer):
    isp = serializers.IntegerField()
    isp_start = serializers.DateTimeField()
    baseline_w = serializers.IntegerField()
    measured_w = serializers.IntegerField()
    ordered_w = serializers.IntegerField()
    realised_w = serializers.IntegerField(help_text="Flex realised in the ordered direction; may be negative.")
    delivered_w = serializers.IntegerField(help_text="USEF delivered flex: min(|ordered|, max(0, realised)).")
    deficiency_w = serializers.IntegerField(help_text="USEF power deficiency: sold but not delivered (>= 0).")
    payment_eur = serializers.DecimalField(max_digits=14, decimal_places=2)
    penalty_eur = serializers.DecimalField(max_digits=14, decimal_places=2)
    paid_eur = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="Net: payment - penalty.")


class BaselineOutputSerializer(serializers.Serializer):
    reference = serializers.CharField(help_text="UFTP BaselineReference: method and record id.")
    method = serializers.CharField()
    parameters = serializers.JSONField()
    inputs = serializers.JSONField(help_text="What the method drew on (days, sessions, prognosis).")


class OrderSettlementOutputSerializer(serializers.Serializer):
    order_reference = serializers.CharField(source="flex_order.order_reference")
    flex_order = serializers.UUIDField(source="flex_order_id")
    congestion_point = serializers.CharField(source="flex_order.congestion_point.ean")
    period = serializers.DateField(source="flex_order.period")
    baseline_method = serializers.CharField()
    baseline = BaselineOutputSerializer(allow_null=True)
    d_prognosis = serializers.UUIDField(source="d_prognosis_id", allow_null=True)
    ordered_kwh = serializers.DecimalField(max_digits=12, decimal_places=3)
    delivered_kwh = serializers.DecimalField(max_digits=12, decimal_places=3)
    deficiency_kwh = serializers.DecimalField(max_digits=12, decimal_places=3)
    unit_price_eur_per_kwh = serializers.DecimalField(max_digits=14, decimal_places=6)
    penalty_eur_per_kwh = serializers.DecimalField(max_digits=10, decimal_places=4)
    payment_eur = serializers.DecimalField(max_digits=14, decimal_places=2)
    penalty_eur = serializers.DecimalField(max_digits=14, decimal_places=2)
    total_eur = serializers.DecimalField(max_digits=14, decimal_places=2)
    sha256 = serializers.CharField(source="content_sha256", help_text="Hash of this settlement in the ledger.")
    lines = SettlementLineOutputSerializer(many=True)


class LedgerOutputSerializer(serializers.Serializer):
    sequence = serializers.IntegerField()
    entry_hash = serializers.CharField()
    previous_hash = serializers.CharField()
    document_sha256 = serializers.CharField()


class StatementSummaryOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    dso = serializers.CharField(source="dso.domain")
    aggregator = serializers.CharField(source="aggregator.domain")
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    version = serializers.IntegerField()
    previous_version = serializers.UUIDField(source="previous_version_id", allow_null=True)
    reason = serializers.CharField()
    status = serializers.CharField()
    currency = serializers.CharField()
    payment_eur = serializers.DecimalField(max_digits=14, decimal_places=2)
    penalty_eur = serializers.DecimalField(max_digits=14, decimal_places=2)
    total_eur = serializers.DecimalField(max_digits=14, decimal_places=2)
    issued_at = serializers.DateTimeField()
    message_id = serializers.UUIDField(help_text="MessageID of this version's FlexSettlement export.")
    ledger = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    @extend_schema_field(LedgerOutputSerializer(allow_null=True))
    def get_ledger(self, statement: Statement) -> dict[str, Any] | None:
        entry = getattr(statement, "ledger_entry", None)
        return LedgerOutputSerializer(entry).data if entry is not None else None


class StatementOutputSerializer(StatementSummaryOutputSerializer):
    order_settlements = OrderSettlementOutputSerializer(many=True)


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


@extend_schema(tags=["settlement"], summary="My settlement statements (one row per version; lines in the detail)")
class StatementListApi(ScopedListView):
    required_scope = "settlement:read"
    queryset = Statement.objects.none()  # the model, for the schema; get_queryset scopes the rows
    serializer_class = StatementSummaryOutputSerializer
    filterset_class = StatementFilter

    def get_queryset(self) -> QuerySet[Statement]:
        return _statements(self).prefetch_related(None).select_related("ledger_entry")


@extend_schema(tags=["settlement"], summary="One settlement statement version with its order settlements and lines")
class StatementDetailApi(ScopedDetailView):
    required_scope = "settlement:read"
    serializer_class = StatementOutputSerializer

    def get_queryset(self) -> QuerySet[Statement]:
        return _statements(self)


class _FileRenderer(BaseRenderer):
    """Passes a prepared document through; error bodies (dicts) are still JSON."""

    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> Any:
        if isinstance(data, bytes | str):
            return data
        return json.dumps(data).encode()


class XmlRenderer(_FileRenderer):
    media_type = "application/xml"
    format = "xml"


class CsvRenderer(_FileRenderer):
    media_type = "text/csv"
    format = "csv"


class HtmlRenderer(_FileRenderer):
    media_type = "text/html"
    format = "html"


class _StatementFileView(ScopedView):
    required_scope = "settlement:read"
    pagination_class = None
    filter_backends: list[Any] = []

    def statement(self, pk: str) -> Statement:
        return get_object_or_404(_statements(self).prefetch_related(None), pk=pk)


def _filename(statement: Statement, extension: str) -> str:
    return (f"statement-{statement.aggregator.domain}-{statement.period_start:%Y-%m}-v{statement.version}"
            f".{extension}")


@extend_schema(tags=["settlement"], summary="The statement version as a UFTP 3.1.0 FlexSettlement message",
               responses={(200, "application/xml"): OpenApiTypes.STR, **ERROR_RESPONSES})
class StatementFlexSettlementApi(_StatementFileView):
    renderer_classes = [JSONRenderer, XmlRenderer]  # JSON first: errors stay JSON for clients that ask nothing

    def get(self, request: Request, pk: str) -> HttpResponse:
        statement = self.statement(pk)
        response = HttpResponse(flex_settlement_xml(statement), content_type="application/xml; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{_filename(statement, "xml")}"'
        return response


@extend_schema(tags=["settlement"], summary="The statement version as CSV (one row per order and ISP)",
               responses={(200, "text/csv"): OpenApiTypes.STR, **ERROR_RESPONSES})
class StatementCsvApi(_StatementFileView):
    renderer_classes = [JSONRenderer, CsvRenderer]

    def get(self, request: Request, pk: str) -> HttpResponse:
        statement = self.statement(pk)
        response = HttpResponse(statement_csv(statement), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{_filename(statement, "csv")}"'
        return response


@extend_schema(tags=["settlement"], summary="The statement version as a printable HTML page",
               responses={(200, "text/html"): OpenApiTypes.STR, **ERROR_RESPONSES})
class StatementPrintApi(_StatementFileView):
    renderer_classes = [JSONRenderer, HtmlRenderer]

    def get(self, request: Request, pk: str) -> HttpResponse:
        from settlement.views import statement_print_context

        statement = get_object_or_404(_statements(self), pk=pk)
        html = render_to_string("settlement/statement_print.html", statement_print_context(statement))
        return HttpResponse(html, content_type="text/html; charset=utf-8")


class LedgerEntryOutputSerializer(serializers.Serializer):
    sequence = serializers.IntegerField()
    previous_hash = serializers.CharField()
    entry_hash = serializers.CharField(help_text="SHA-256 of the canonical JSON {previous_hash, sequence, statement: "
                                                 "document} (keys sorted, no spaces, UTF-8).")
    document_sha256 = serializers.CharField()
    document = serializers.SerializerMethodField(help_text="The statement version as issued (canonical JSON).")
    appended_at = serializers.DateTimeField()

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_document(self, entry: Any) -> Any:
        return json.loads(entry.document)


@extend_schema(tags=["settlement"], summary="The ledger entry of a statement version, to verify it yourself",
               responses={200: LedgerEntryOutputSerializer, **ERROR_RESPONSES})
class StatementLedgerApi(_StatementFileView):
    def get(self, request: Request, pk: str) -> Response:
        statement = self.statement(pk)
        entry = getattr(statement, "ledger_entry", None)
        if entry is None:
            from common.exceptions import ApplicationError

            raise ApplicationError("This statement version is not in the ledger.", code="not_found", status_code=404)
        return Response(LedgerEntryOutputSerializer(entry).data)


# --- disputes -----------------------------------------------------------------------------------------------------


class DisputeOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    statement = serializers.UUIDField(source="statement_id", help_text="The version the line was disputed on.")
    statement_version = serializers.IntegerField(source="statement.version")
    order_reference = serializers.CharField(source="flex_order.order_reference")
    isp = serializers.IntegerField()
    line_paid_eur = serializers.DecimalField(source="line.paid_eur", max_digits=14, decimal_places=2)
    reason = serializers.CharField()
    claimed_amount_eur = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    status = serializers.CharField()
    corrected_amount_eur = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    resolution_reason = serializers.CharField()
    resolved_at = serializers.DateTimeField(allow_null=True)
    resolution_statement = serializers.UUIDField(source="resolution_statement_id", allow_null=True,
                                                 help_text="The statement version the resolution issued.")
    created_at = serializers.DateTimeField()


class DisputeFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Dispute.Status.choices)
    statement = django_filters.UUIDFilter(field_name="statement_id")
    updated_since = AwareIsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")

    class Meta:
        model = Dispute
        fields: list[str] = []


def _disputes(view: ScopedView) -> QuerySet[Dispute]:
    return selectors.disputes_for_participant(participant=view.participant)


@extend_schema(tags=["settlement"], summary="Disputes on my statements")
class DisputeListApi(ScopedListView):
    required_scope = "settlement:read"
    queryset = Dispute.objects.none()
    serializer_class = DisputeOutputSerializer
    filterset_class = DisputeFilter

    def get_queryset(self) -> QuerySet[Dispute]:
        return _disputes(self)


@extend_schema(tags=["settlement"], summary="One dispute")
class DisputeDetailApi(ScopedDetailView):
    required_scope = "settlement:read"
    serializer_class = DisputeOutputSerializer

    def get_queryset(self) -> QuerySet[Dispute]:
        return _disputes(self)


class DisputeCreateInputSerializer(serializers.Serializer):
    statement = serializers.UUIDField(help_text="The current version of the statement.")
    order_reference = serializers.CharField(max_length=64)
    isp = serializers.IntegerField(min_value=1, help_text="The disputed line's ISP.")
    reason = serializers.CharField(max_length=2000)
    claimed_amount_eur = serializers.DecimalField(max_digits=14, decimal_places=2, required=False, allow_null=True,
                                                  help_text="What you think the line's net amount should be.")


@extend_schema(
    tags=["settlement"], summary="Dispute a statement line (aggregator; UFTP FlexSettlementResponse 'Disputed')",
    request=DisputeCreateInputSerializer, responses={201: DisputeOutputSerializer, **ERROR_RESPONSES},
    parameters=[IDEMPOTENCY_PARAMETER],
    examples=[OpenApiExample("Meter fault", request_only=True, value={
        "statement": "5f0c3a52-5b8e-4a4b-9f2d-2f4f1f1f1f1f", "order_reference": "ORD-20261126-57C3E18C", "isp": 76,
        "reason": "Meter 871685000000000049 reported 5.25 kWh in error; corrected data sent.",
        "claimed_amount_eur": "5.50"})],
)
class DisputeCreateApi(ScopedView):
    permission_classes = [IsAggregator, HasScope]
    required_scope = "disputes:write"

    @idempotent
    def post(self, request: Request) -> Response:
        serializer = DisputeCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        statement = visible_or_unknown(_statements(self).prefetch_related(None), data["statement"], field="statement")
        actor, label = request_actor(request)
        dispute = dispute_open(statement=statement, aggregator=self.participant, order_reference=data["order_reference"],
                               isp=data["isp"], reason=data["reason"], claimed_amount_eur=data.get("claimed_amount_eur"),
                               actor=actor, actor_label=label)
        return Response(DisputeOutputSerializer(dispute).data, status=status.HTTP_201_CREATED)


class DisputeResolveInputSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["accept", "reject"])
    corrected_amount_eur = serializers.DecimalField(max_digits=14, decimal_places=2, required=False, allow_null=True,
                                                    help_text="Accept: the line's corrected net amount.")
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="",
                                   help_text="Reject: why (required); accept: optional note.")


@extend_schema(
    tags=["settlement"], summary="Resolve a dispute (DSO): accept with a corrected amount or reject with a reason; "
    "issues a new statement version", request=DisputeResolveInputSerializer,
    responses={200: DisputeOutputSerializer, 409: ERROR_RESPONSES[400], **ERROR_RESPONSES},
    parameters=[IDEMPOTENCY_PARAMETER],
    examples=[OpenApiExample("Accept", request_only=True, value={"decision": "accept", "corrected_amount_eur": "5.50",
                                                                  "reason": "Corrected meter data confirmed."}),
              OpenApiExample("Reject", request_only=True, value={"decision": "reject",
                                                                  "reason": "Our meter data is validated."})],
)
class DisputeResolveApi(ScopedView):
    permission_classes = [IsDso, HasScope]
    required_scope = "disputes:write"

    @idempotent
    def post(self, request: Request, pk: str) -> Response:
        serializer = DisputeResolveInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        dispute = get_object_or_404(_disputes(self), pk=pk)
        actor, label = request_actor(request)
        dispute = dispute_resolve(dispute=dispute, dso=self.participant, accept=data["decision"] == "accept",
                                  reason=data["reason"], corrected_amount_eur=data.get("corrected_amount_eur"),
                                  actor=actor, actor_label=label)
        return Response(DisputeOutputSerializer(_disputes(self).get(pk=dispute.pk)).data)


# --- driver transparency report -------------------------------------------------------------------------------------

MONTH_PARAMETER = OpenApiParameter("month", OpenApiTypes.STR, OpenApiParameter.QUERY, required=True,
                                   description="Calendar month, YYYY-MM (market time).")


class SessionReportOutputSerializer(serializers.Serializer):
    session = serializers.UUIDField(source="session.pk")
    cpo_session_id = serializers.CharField(source="session.cpo_session_id")
    driver = serializers.UUIDField(source="session.driver_id", allow_null=True)
    driver_reference = serializers.CharField(source="session.driver.reference", allow_null=True, default=None)
    arrival_at = serializers.DateTimeField(source="session.arrival_at")
    departure_at = serializers.DateTimeField(source="session.expected_departure_at")
    energy_requested_kwh = serializers.DecimalField(source="session.energy_requested_kwh", max_digits=7,
                                                    decimal_places=3)
    energy_delivered_kwh = serializers.DecimalField(max_digits=7, decimal_places=3, allow_null=True,
                                                    help_text="Metered by the CPO when the session ended, else planned.")
    energy_shifted_kwh = serializers.DecimalField(max_digits=10, decimal_places=3,
                                                  help_text="Charging moved out of the congested (ordered) ISPs.")
    requested_energy_met = serializers.BooleanField(allow_null=True)
    shortfall_kwh = serializers.DecimalField(max_digits=7, decimal_places=3, allow_null=True)
    reward_eur = serializers.DecimalField(max_digits=12, decimal_places=2)
    orders = serializers.ListField(child=serializers.CharField(), help_text="Orders the session helped deliver.")


class DriverMonthOutputSerializer(serializers.Serializer):
    driver = serializers.UUIDField(source="driver_id", allow_null=True, help_text="Null: sessions without a driver.")
    driver_reference = serializers.CharField(allow_null=True)
    sessions = serializers.IntegerField()
    energy_delivered_kwh = serializers.DecimalField(max_digits=12, decimal_places=3)
    energy_shifted_kwh = serializers.DecimalField(max_digits=12, decimal_places=3)
    sessions_energy_met = serializers.IntegerField()
    reward_eur = serializers.DecimalField(max_digits=12, decimal_places=2)


class _DriverReportView(ScopedView):
    permission_classes = [IsAggregator, HasScope]
    required_scope = "settlement:read"
    pagination_class = None
    filter_backends: list[Any] = []

    def month(self) -> str:
        from common.exceptions import ApplicationError

        month = self.request.query_params.get("month", "")
        if not month:
            raise ApplicationError("Give the month, e.g. ?month=2026-11.", code="invalid_month", field="month")
        return month


@extend_schema(tags=["settlement"], summary="Driver report per session for a month (aggregator)",
               parameters=[MONTH_PARAMETER], responses={200: SessionReportOutputSerializer(many=True),
                                                        **ERROR_RESPONSES})
class DriverSessionReportApi(_DriverReportView):
    def get(self, request: Request) -> Response:
        rows = selectors.driver_session_report(aggregator=self.participant, month=self.month())
        return Response(SessionReportOutputSerializer(rows, many=True).data)


@extend_schema(tags=["settlement"], summary="Driver report per driver for a month (aggregator)",
               parameters=[MONTH_PARAMETER], responses={200: DriverMonthOutputSerializer(many=True), **ERROR_RESPONSES})
class DriverMonthReportApi(_DriverReportView):
    def get(self, request: Request) -> Response:
        rows = selectors.driver_month_report(aggregator=self.participant, month=self.month())
        return Response(DriverMonthOutputSerializer(rows, many=True).data)

