"""Settlement's DSO portal pages; config/urls.py mounts them in the `portal` namespace beside market's."""

from __future__ import annotations

from django.urls import URLPattern, path

from settlement import views

urlpatterns: list[URLPattern] = [
    path("statements/", views.statement_list, name="statement-list"),
    path("statements/<uuid:pk>/", views.statement_detail, name="statement-detail"),
    path("statements/<uuid:pk>/print/", views.statement_print, name="statement-print"),
    path("statements/<uuid:pk>/flex-settlement.xml", views.statement_export_xml, name="statement-export-xml"),
    path("statements/<uuid:pk>/statement.csv", views.statement_export_csv, name="statement-export-csv"),
    path("disputes/<uuid:pk>/resolve/", views.dispute_resolve_view, name="dispute-resolve"),
]
