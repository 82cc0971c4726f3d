"""Sandbox routes (only mounted when SANDBOX_ENABLED): the simulated CPO's OCPI endpoints and its fault controls."""

from __future__ import annotations

from django.urls import path

from sandbox import cpo, oscp

app_name = "sandbox"
urlpatterns = [
    path("cpo/ocpi/2.2.1/chargingprofiles/<str:session_id>", cpo.charging_profile, name="cpo-chargingprofile"),
    path("cpo/ocpi/2.2.1/sessions", cpo.sessions, name="cpo-sessions"),
    path("cpo/faults", cpo.faults, name="cpo-faults"),
    path("cpo/stats", cpo.stats, name="cpo-stats"),
    # The simulated OSCP 2.0 Flexibility Provider(s), one per name (sandbox/oscp.py).
    path("oscp/<str:name>/fp/2.0/<str:endpoint>", oscp.fp_endpoint, name="oscp-fp"),
]
