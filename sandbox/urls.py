"""Sandbox routes (only mounted when SANDBOX_ENABLED): the simulated CPO's OCPI receiver endpoints."""

from __future__ import annotations

from django.urls import path

from sandbox import cpo, oscp

app_name = "sandbox"
urlpatterns = [
    path("cpo/ocpi/2.2.1/chargingprofiles/<str:session_id>", cpo.charging_profile_put, name="cpo-chargingprofile"),
    # The simulated OSCP 2.0 Flexibility Provider(s), one per name (sandbox/oscp.py).
    path("oscp/<str:name>/fp/2.0/<str:endpoint>", oscp.fp_endpoint, name="oscp-fp"),
]
