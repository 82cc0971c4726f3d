"""Bidding API routes under /api/v1/market/ (one URL per action)."""

from __future__ import annotations

from django.urls import path

from market.apis import contracts, keys, offers, orders, prognoses, requests

urlpatterns = [
    path("congestion-points/", requests.CongestionPointListApi.as_view(), name="congestion-point-list"),
    # flex requests
    path("flex-requests/", requests.FlexRequestListApi.as_view(), name="flex-request-list"),
    path("flex-requests/create/", requests.FlexRequestCreateApi.as_view(), name="flex-request-create"),
    path("flex-requests/<uuid:pk>/", requests.FlexRequestDetailApi.as_view(), name="flex-request-detail"),
    path("flex-requests/<uuid:pk>/revise/", requests.FlexRequestReviseApi.as_view(), name="flex-request-revise"),
    path("flex-requests/<uuid:pk>/cancel/", requests.FlexRequestCancelApi.as_view(), name="flex-request-cancel"),
    path("flex-requests/<uuid:pk>/events/", requests.FlexRequestEventsApi.as_view(), name="flex-request-events"),
    # D-prognoses
    path("d-prognoses/", prognoses.DPrognosisListApi.as_view(), name="d-prognosis-list"),
    path("d-prognoses/create/", prognoses.DPrognosisCreateApi.as_view(), name="d-prognosis-create"),
    path("d-prognoses/<uuid:pk>/", prognoses.DPrognosisDetailApi.as_view(), name="d-prognosis-detail"),
    path("d-prognoses/<uuid:pk>/events/", prognoses.DPrognosisEventsApi.as_view(), name="d-prognosis-events"),
    # flex offers
    path("flex-offers/", offers.FlexOfferListApi.as_view(), name="flex-offer-list"),
    path("flex-offers/create/", offers.FlexOfferCreateApi.as_view(), name="flex-offer-create"),
    path("flex-offers/<uuid:pk>/", offers.FlexOfferDetailApi.as_view(), name="flex-offer-detail"),
    path("flex-offers/<uuid:pk>/revoke/", offers.FlexOfferRevokeApi.as_view(), name="flex-offer-revoke"),
    path("flex-offers/<uuid:pk>/reject/", offers.FlexOfferRejectApi.as_view(), name="flex-offer-reject"),
    path("flex-offers/<uuid:pk>/accept/", orders.FlexOfferAcceptApi.as_view(), name="flex-offer-accept"),
    path("flex-offers/<uuid:pk>/events/", offers.FlexOfferEventsApi.as_view(), name="flex-offer-events"),
    # flex orders
    path("flex-orders/", orders.FlexOrderListApi.as_view(), name="flex-order-list"),
    path("flex-orders/create/", orders.FlexOrderDirectCreateApi.as_view(), name="flex-order-direct-create"),
    path("flex-orders/<uuid:pk>/", orders.FlexOrderDetailApi.as_view(), name="flex-order-detail"),
    path("flex-orders/<uuid:pk>/events/", orders.FlexOrderEventsApi.as_view(), name="flex-order-events"),
    # contracts and reservation updates
    path("contracts/", contracts.FlexContractListApi.as_view(), name="contract-list"),
    path("reservation-updates/", contracts.ReservationUpdateListApi.as_view(), name="reservation-update-list"),
    path("reservation-updates/create/", contracts.ReservationUpdateCreateApi.as_view(),
         name="reservation-update-create"),
    # my organisation's API keys
    path("api-keys/", keys.ApiKeyListApi.as_view(), name="api-key-list"),
    path("api-keys/create/", keys.ApiKeyCreateApi.as_view(), name="api-key-create"),
    path("api-keys/<uuid:pk>/revoke/", keys.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
]
