"""OCPI 2.2.1 routes (mounted at /ocpi/)."""

from __future__ import annotations

from django.urls import path

from aggregator import ocpi_views

app_name = "ocpi"
urlpatterns = [
    path("versions", ocpi_views.versions, name="versions"),
    path("2.2.1", ocpi_views.version_details, name="version-details"),
    path(
        "2.2.1/chargingprofiles/results/<uuid:command_id>",
        ocpi_views.charging_profile_result,
        name="chargingprofile-result",
    ),
]
