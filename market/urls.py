"""Bidding API routes under /api/v1/market/ (one URL per action)."""

from __future__ import annotations

from django.urls import path

from market import apis

urlpatterns = [
    path("congestion-points/", apis.CongestionPointListApi.as_view(), name="congestion-point-list"),
    path("flex-requests/", apis.FlexRequestListApi.as_view(), name="flex-request-list"),
    path("flex-requests/<uuid:flex_request_id>/", apis.FlexRequestDetailApi.as_view(), name="flex-request-detail"),
    path("d-prognoses/", apis.DPrognosisListApi.as_view(), name="d-prognosis-list"),
    path("d-prognoses/create/", apis.DPrognosisCreateApi.as_view(), name="d-prognosis-create"),
    path("flex-offers/", apis.FlexOfferListApi.as_view(), name="flex-offer-list"),
    path("flex-offers/create/", apis.FlexOfferCreateApi.as_view(), name="flex-offer-create"),
    path("flex-offers/<uuid:flex_offer_id>/", apis.FlexOfferDetailApi.as_view(), name="flex-offer-detail"),
    path("flex-offers/<uuid:flex_offer_id>/revoke/", apis.FlexOfferRevokeApi.as_view(), name="flex-offer-revoke"),
    path("flex-orders/", apis.FlexOrderListApi.as_view(), name="flex-order-list"),
    path("flex-orders/<uuid:flex_order_id>/", apis.FlexOrderDetailApi.as_view(), name="flex-order-detail"),
]
