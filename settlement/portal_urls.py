"""Settlement's DSO portal pages; config/urls.py mounts them in the `portal` namespace beside market's."""

from __future__ import annotations

from django.urls import URLPattern, path

from settlement import views

urlpatterns: list[URLPattern] = [
    path("statements/", views.statement_list, name="statement-list"),
    path("statements/<uuid:pk>/", views.statement_detail, name="statement-detail"),
]
