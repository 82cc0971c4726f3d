"""Settlement API routes under /api/v1/settlement/."""

from __future__ import annotations

from django.urls import path

from settlement import apis, meter_apis

urlpatterns = [
    path("statements/", apis.StatementListApi.as_view(), name="statement-list"),
    path("statements/<uuid:pk>/", apis.StatementDetailApi.as_view(), name="statement-detail"),
    path("statements/<uuid:pk>/flex-settlement/", apis.StatementFlexSettlementApi.as_view(),
         name="statement-flex-settlement"),
    path("statements/<uuid:pk>/csv/", apis.StatementCsvApi.as_view(), name="statement-csv"),
    path("statements/<uuid:pk>/print/", apis.StatementPrintApi.as_view(), name="statement-print"),
    path("statements/<uuid:pk>/ledger/", apis.StatementLedgerApi.as_view(), name="statement-ledger"),
    path("disputes/", apis.DisputeListApi.as_view(), name="dispute-list"),
    path("disputes/create/", apis.DisputeCreateApi.as_view(), name="dispute-create"),
    path("disputes/<uuid:pk>/", apis.DisputeDetailApi.as_view(), name="dispute-detail"),
    path("disputes/<uuid:pk>/resolve/", apis.DisputeResolveApi.as_view(), name="dispute-resolve"),
    path("driver-report/sessions/", apis.DriverSessionReportApi.as_view(), name="driver-report-sessions"),
    path("driver-report/drivers/", apis.DriverMonthReportApi.as_view(), name="driver-report-drivers"),
    path("meter-readings/", meter_apis.MeterReadingsCreateApi.as_view(), name="meter-readings-create"),
    path("meter-imports/", meter_apis.MeterImportListApi.as_view(), name="meter-import-list"),
    path("meter-imports/<uuid:pk>/", meter_apis.MeterImportDetailApi.as_view(), name="meter-import-detail"),
]
