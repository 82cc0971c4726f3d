"""OCPI 2.2.1 routes (mounted at /ocpi/): our versions and version details, credentials, the sessions and locations
receivers, and the chargingprofiles sender interface (async results on the command's response_url, and
ActiveChargingProfile updates at {chargingprofiles url}{session_id}, with or without the separating '/')."""

from __future__ import annotations

from django.urls import path, re_path

from aggregator.ocpi import views

_PARTY = r"(?P<country_code>[^/]+)/(?P<party_id>[^/]+)"

app_name = "ocpi"
urlpatterns = [
    path("versions", views.versions, name="versions"),
    path("2.2.1", views.version_details, name="version-details"),
    path("2.2.1/credentials", views.credentials, name="credentials"),
    # Published with a trailing '/', matched with one or more: peers that join "{url}/{country_code}" (the spec)
    # and peers that append "{country_code}" to the URL as published both arrive here.
    re_path(rf"^2\.2\.1/sessions/+{_PARTY}/(?P<session_id>[^/]+)$", views.session, name="session"),
    re_path(rf"^2\.2\.1/locations/+{_PARTY}/(?P<location_id>[^/]+)$", views.location, name="location"),
    re_path(rf"^2\.2\.1/locations/+{_PARTY}/(?P<location_id>[^/]+)/(?P<evse_uid>[^/]+)$", views.location,
            name="location-evse"),
    re_path(rf"^2\.2\.1/locations/+{_PARTY}/(?P<location_id>[^/]+)/(?P<evse_uid>[^/]+)/(?P<connector_id>[^/]+)$",
            views.location, name="location-connector"),
    path("2.2.1/chargingprofiles/results/<uuid:command_id>", views.charging_profile_result,
         name="chargingprofile-result"),
    re_path(r"^2\.2\.1/chargingprofiles/?(?P<session_id>[^/]+)$", views.active_charging_profile,
            name="active-chargingprofile"),
]
