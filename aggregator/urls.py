"""Aggregator API routes under /api/v1/aggregator/ (one URL per action)."""

from __future__ import annotations

from django.urls import path

from aggregator import apis

urlpatterns = [
    path("drivers/", apis.DriverListApi.as_view(), name="driver-list"),
    path("drivers/create/", apis.DriverCreateApi.as_view(), name="driver-create"),
    path("drivers/<uuid:pk>/", apis.DriverDetailApi.as_view(), name="driver-detail"),
    path("drivers/<uuid:pk>/preferences/", apis.DriverPreferencesApi.as_view(), name="driver-preferences"),
    path("sessions/", apis.SessionListApi.as_view(), name="session-list"),
    path("sessions/<uuid:pk>/", apis.SessionDetailApi.as_view(), name="session-detail"),
    path("sessions/<uuid:pk>/targets/", apis.SessionTargetsApi.as_view(), name="session-targets"),
    path("sessions/<uuid:pk>/boost/", apis.SessionBoostApi.as_view(), name="session-boost"),
]
