"""Settlement API routes under /api/v1/settlement/."""

from __future__ import annotations

from django.urls import path

from settlement import apis

urlpatterns = [
    path("statements/", apis.StatementListApi.as_view(), name="statement-list"),
    path("statements/<uuid:pk>/", apis.StatementDetailApi.as_view(), name="statement-detail"),
]
