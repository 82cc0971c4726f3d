"""URL configuration: admin console, DSO portal, bidding API (+ OpenAPI docs), OCPI endpoints, sandbox."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from common.views import healthz
from market.portal_urls import urlpatterns as market_portal_urls
from settlement.portal_urls import urlpatterns as settlement_portal_urls

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="portal:dashboard", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    # One `portal` namespace over both apps' pages: market must not import settlement, the URL config knows all.
    path("portal/", include((market_portal_urls + settlement_portal_urls, "portal"))),
    path("api/v1/market/", include("market.urls")),
    path("api/v1/settlement/", include("settlement.urls")),
    path("api/v1/aggregator/", include("aggregator.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("ocpi/", include("aggregator.ocpi_urls")),
    path("oscp/", include("aggregator.oscp.urls")),
]

if settings.SANDBOX_ENABLED:
    urlpatterns.append(path("sandbox/", include("sandbox.urls")))
