"""Market's DSO portal pages; config/urls.py mounts them at /portal/ in the `portal` namespace (with settlement's)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import URLPattern, path

from market import views

urlpatterns: list[URLPattern] = [
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="registration/login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.dashboard, name="dashboard"),
    path("congestion-points/<uuid:pk>/", views.congestion_point_detail, name="congestion-point"),
    path("congestion-points/<uuid:pk>/requests/new/", views.flex_request_create, name="flex-request-create"),
    path("requests/<uuid:pk>/", views.flex_request_detail, name="flex-request-detail"),
    path("requests/<uuid:pk>/cancel/", views.flex_request_cancel, name="flex-request-cancel"),
    path("requests/<uuid:pk>/revise/", views.flex_request_revise, name="flex-request-revise"),
    path(
        "requests/<uuid:pk>/order-recommendation/",
        views.flex_request_order_recommendation,
        name="flex-request-order-recommendation",
    ),
    path("offers/<uuid:pk>/accept/", views.flex_offer_accept, name="flex-offer-accept"),
    path("offers/<uuid:pk>/reject/", views.flex_offer_reject, name="flex-offer-reject"),
    path("orders/", views.order_list, name="order-list"),
    path("orders/<uuid:pk>/", views.order_detail, name="order-detail"),
]
