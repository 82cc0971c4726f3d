"""Meter data API (/api/v1/settlement/): the DSO, as the party that reads the meters on its grid, delivers
15-minute readings for the connections behind its own congestion points and reads back its import reports.

Why the DSO only: in USEF the DSO (or its metering company) is the meter data responsible party on its grid;
settlement pays aggregators against these readings, so an aggregator delivering its own would grade its own work.
A reading for a connection that is not the DSO's is refused per row as unknown_connection, exactly like an EAN
that does not exist, and the report then names only the row (never echoing whose connection it is).
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import F, QuerySet
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from common.idempotency import idempotent
from market.apis._shared import (
    ERROR_RESPONSES,
    IDEMPOTENCY_PARAMETER,
    ScopedDetailView,
    ScopedListView,
    ScopedView,
)
from market.filters import AwareIsoDateTimeFilter
from market.permissions import HasScope, IsDso, request_actor
from settlement.ingest import RawRow
from settlement.models import MeterImportBatch, MeterImportRejection
from settlement.services import meter_rows_import

MAX_READINGS_PER_REQUEST = 20_000  # a day of 200 connections; larger deliveries go as files (import_meter_data)


class MeterReadingInputSerializer(serializers.Serializer):
    connection_ean = serializers.CharField(max_length=64, allow_blank=True, trim_whitespace=False,
                                           help_text="EAN-18 of a connection behind one of your congestion points.")
    isp_start = serializers.CharField(max_length=64, allow_blank=True, trim_whitespace=False,
                                      help_text="ISO-8601 start of the 15-minute ISP with offset, e.g. "
                                                "2026-11-26T17:00:00+01:00.")
    kwh_import = serializers.CharField(max_length=32, allow_blank=True, trim_whitespace=False,
                                       help_text="kWh taken from the grid in the ISP (decimal, at most 3 decimals).")
    kwh_export = serializers.CharField(max_length=32, default="0", allow_blank=True, trim_whitespace=False,
                                       help_text="kWh fed into the grid in the ISP.")
    quality = serializers.CharField(max_length=8, default="0", help_text="0 measured, 1 estimated.")


class MeterReadingsInputSerializer(serializers.Serializer):
    readings = MeterReadingInputSerializer(many=True, allow_empty=False,  # type: ignore[call-arg]
                                           max_length=MAX_READINGS_PER_REQUEST,
                                           help_text="Values are checked per reading: a bad one is listed in "
                                                     "`rejections` with its row (1-based position here).")
    source_name = serializers.CharField(max_length=255, required=False, allow_blank=True,
                                   help_text="Your name for this delivery (e.g. a file or job id).")

    class Meta:
        ref_name = "MeterReadingsCreate"


class MeterRejectionOutputSerializer(serializers.Serializer):
    row_number = serializers.IntegerField(allow_null=True, help_text="1-based row of the delivery; empty for a gap.")
    reason = serializers.CharField(help_text="malformed, naive_datetime, unknown_connection, duplicate_in_file, "
                                             "isp_not_aligned, negative_energy, implausible_energy or gap.")
    connection_ean = serializers.SerializerMethodField()
    isp_start = serializers.CharField(help_text="As delivered; for a gap, the first missing ISP (UTC).")
    detail = serializers.CharField()

    def get_connection_ean(self, rejection: MeterImportRejection) -> str:
        """Not echoed for unknown connections: the answer must not tell whose connection an EAN is."""
        return "" if rejection.reason == MeterImportRejection.Reason.UNKNOWN_CONNECTION else rejection.connection_ean


class MeterImportOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    source_format = serializers.CharField()
    source_name = serializers.CharField()
    received = serializers.IntegerField()
    accepted = serializers.IntegerField(help_text="Readings for ISPs not stored before.")
    corrected = serializers.IntegerField(help_text="New versions of stored readings (the latest version counts).")
    unchanged = serializers.IntegerField(help_text="Readings equal to the stored ones.")
    rejected = serializers.IntegerField()
    gaps = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class MeterImportDetailSerializer(MeterImportOutputSerializer):
    rejections = serializers.SerializerMethodField()

    @extend_schema_field(MeterRejectionOutputSerializer(many=True))
    def get_rejections(self, batch: MeterImportBatch) -> list[dict[str, Any]]:
        """Refused rows in row order, then the gaps."""
        rows = batch.rejections.order_by(F("row_number").asc(nulls_last=True), "id")
        return list(MeterRejectionOutputSerializer(rows, many=True).data)


class MeterImportFilter(django_filters.FilterSet):
    source_format = django_filters.CharFilter()
    created_since = AwareIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    with_rejections = django_filters.BooleanFilter(
        method="filter_rejected", help_text="Only deliveries with (true) or without (false) rejected rows.")

    class Meta:
        model = MeterImportBatch
        fields: list[str] = []

    def filter_rejected(self, queryset: QuerySet[MeterImportBatch], name: str, value: bool
                        ) -> QuerySet[MeterImportBatch]:
        return queryset.filter(rejected__gt=0) if value else queryset.filter(rejected=0)


class DsoMeterView(ScopedView):
    permission_classes = [IsDso, HasScope]


def _my_imports(view: ScopedView) -> QuerySet[MeterImportBatch]:
    return MeterImportBatch.objects.filter(submitted_by=view.participant)


@extend_schema(
    tags=["settlement"], summary="Deliver meter readings (DSO)", request=MeterReadingsInputSerializer,
    description="15-minute readings for connections behind your congestion points. Valid readings are stored, "
                "every refused one is listed with its reason; a reading that differs from the stored one becomes "
                "its new version. Sending the same readings again changes nothing and answers 200 with the first "
                "report. Files (CSV, UFTP Metering, DSMR) go through `manage.py import_meter_data`.",
    responses={201: MeterImportDetailSerializer, 200: MeterImportDetailSerializer, **ERROR_RESPONSES},
    parameters=[IDEMPOTENCY_PARAMETER],
    examples=[OpenApiExample("Two ISPs of one connection", request_only=True, value={
        "source_name": "gridco-mdm-2026-11-26T02:00", "readings": [
            {"connection_ean": "871690000000000018", "isp_start": "2026-11-26T17:00:00+01:00",
             "kwh_import": "1.250", "kwh_export": "0.000", "quality": "0"},
            {"connection_ean": "871690000000000018", "isp_start": "2026-11-26T17:15:00+01:00",
             "kwh_import": "1.310", "kwh_export": "0.000", "quality": "0"}]})],
)
class MeterReadingsCreateApi(DsoMeterView):
    required_scope = "meter-data:write"

    @idempotent
    def post(self, request: Request) -> Response:
        serializer = MeterReadingsInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        rows = [RawRow(number, item["connection_ean"], item["isp_start"], item["kwh_import"], item["kwh_export"],
                       item["quality"]) for number, item in enumerate(data["readings"], start=1)]
        actor, label = request_actor(request)
        result = meter_rows_import(rows=rows, source_format=MeterImportBatch.Format.JSON,
                                   source_name=data.get("source_name", ""), submitted_by=self.participant, actor=actor,
                                   actor_label=label)
        return Response(MeterImportDetailSerializer(result.batch).data,
                        status=status.HTTP_200_OK if result.replayed else status.HTTP_201_CREATED)


@extend_schema(tags=["settlement"], summary="My meter data deliveries (DSO)")
class MeterImportListApi(DsoMeterView, ScopedListView):
    required_scope = "settlement:read"
    queryset = MeterImportBatch.objects.none()  # the model, for the schema; get_queryset scopes the rows
    serializer_class = MeterImportOutputSerializer
    filterset_class = MeterImportFilter

    def get_queryset(self) -> QuerySet[MeterImportBatch]:
        return _my_imports(self)


@extend_schema(tags=["settlement"], summary="One meter data delivery with its rejection report (DSO)")
class MeterImportDetailApi(DsoMeterView, ScopedDetailView):
    required_scope = "settlement:read"
    serializer_class = MeterImportDetailSerializer

    def get_queryset(self) -> QuerySet[MeterImportBatch]:
        return _my_imports(self)
