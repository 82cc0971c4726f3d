"""OCPI 2.2.1 routes (mounted at /ocpi/): our versions and version details, credentials, the sessions and locations
receivers, and the chargingprofiles sender interface (async results on the command's response_url, and
ActiveChargingProfile updates at {chargingprofiles url}{session_id}, with or without the separating '/')."""

from __future__ import annotations

from django.urls import path, re_path

from aggregator.ocpi import views

app_name = "ocpi"
urlpatterns = [
    path("versions", views.versions, name="versions"),
    path("2.2.1", views.version_details, name="version-details"),
    path("2.2.1/credentials", views.credentials, name="credentials"),
    path("2.2.1/sessions/<str:country_code>/<str:party_id>/<str:session_id>", views.session, name="session"),
    path("2.2.1/locations/<str:country_code>/<str:party_id>/<str:location_id>", views.location, name="location"),
    path("2.2.1/locations/<str:country_code>/<str:party_id>/<str:location_id>/<str:evse_uid>", views.location,
         name="location-evse"),
    path("2.2.1/locations/<str:country_code>/<str:party_id>/<str:location_id>/<str:evse_uid>/<str:connector_id>",
         views.location, name="location-connector"),
    path("2.2.1/chargingprofiles/results/<uuid:command_id>", views.charging_profile_result,
         name="chargingprofile-result"),
    re_path(r"^2\.2\.1/chargingprofiles/?(?P<session_id>[^/]+)$", views.active_charging_profile,
            name="active-chargingprofile"),
]
