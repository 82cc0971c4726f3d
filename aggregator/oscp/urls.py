"""OSCP 2.0 routes (mounted at /oscp/): our Capacity Provider endpoints under cp/2.0/."""

from __future__ import annotations

from django.urls import path

from aggregator.oscp import views

app_name = "oscp"
urlpatterns = [
    path("cp/2.0/register", views.register, name="register"),
    path("cp/2.0/handshake", views.handshake, name="handshake"),
    path("cp/2.0/handshake_acknowledge", views.handshake_acknowledge, name="handshake-acknowledge"),
    # pyoscp spells it handshake_acknowledgment (brief 2: serve both on input).
    path("cp/2.0/handshake_acknowledgment", views.handshake_acknowledge, name="handshake-acknowledgment"),
    path("cp/2.0/heartbeat", views.heartbeat, name="heartbeat"),
    path("cp/2.0/update_group_measurements", views.update_group_measurements, name="update-group-measurements"),
    path("cp/2.0/group_capacity_compliance_error", views.group_capacity_compliance_error,
         name="group-capacity-compliance-error"),
    path("cp/2.0/adjust_group_capacity_forecast", views.adjust_group_capacity_forecast,
         name="adjust-group-capacity-forecast"),
]
