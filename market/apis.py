"""Bidding API (/api/v1/market/): one APIView per action, each validating input and calling one service.

Aggregators read open flex requests on their congestion points, submit D-prognoses and offers, revoke
offers and follow their orders. DSOs may read their own requests, offers received and orders.
Every object outside the caller's walls is answered with 404, never with its data.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import ERROR_RESPONSES, AwareDateTimeField, paginated, paginated_response
from market import selectors, services
from market.models import CongestionPoint, FlexOffer, FlexOrder, FlexRequest, Participant
from market.permissions import IsAggregator, IsMarketParticipant, request_participant

_participant = request_participant


# --- shared output shapes ---------------------------------------------------------------------------


class IspPowerSerializer(serializers.Serializer):
    isp = serializers.IntegerField(min_value=1, help_text="1-based ISP index of the market day (92/96/100 per day).")
    power_w = serializers.IntegerField(help_text="Average power over the ISP in W; negative = less consumption.")


class IspBandOutputSerializer(serializers.Serializer):
    isp = serializers.IntegerField()
    disposition = serializers.CharField()
    min_power_w = serializers.IntegerField()
    max_power_w = serializers.IntegerField()


class CongestionPointOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    ean = serializers.CharField()
    entity_address = serializers.CharField()
    name = serializers.CharField()
    dso = serializers.CharField(source="dso.domain")


class FlexRequestOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    message_id = serializers.UUIDField()
    conversation_id = serializers.UUIDField()
    congestion_point = serializers.CharField(source="congestion_point.ean")
    period = serializers.DateField()
    revision = serializers.IntegerField()
    expires_at = serializers.DateTimeField()
    service_type = serializers.CharField()
    status = serializers.CharField()
    isps = IspBandOutputSerializer(many=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class DPrognosisOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    message_id = serializers.UUIDField()
    congestion_point = serializers.CharField(source="congestion_point.ean")
    period = serializers.DateField()
    revision = serializers.IntegerField()
    status = serializers.CharField()
    isps = IspPowerSerializer(many=True)
    created_at = serializers.DateTimeField()


class FlexOfferOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    message_id = serializers.UUIDField()
    congestion_point = serializers.CharField(source="congestion_point.ean")
    period = serializers.DateField()
    flex_request = serializers.UUIDField(source="flex_request_id", allow_null=True)
    d_prognosis = serializers.UUIDField(source="d_prognosis_id", allow_null=True)
    unsolicited = serializers.BooleanField()
    price_eur = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()
    expires_at = serializers.DateTimeField()
    status = serializers.CharField()
    isps = IspPowerSerializer(many=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class FlexOrderOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    message_id = serializers.UUIDField()
    order_reference = serializers.CharField()
    congestion_point = serializers.CharField(source="congestion_point.ean")
    period = serializers.DateField()
    flex_offer = serializers.UUIDField(source="flex_offer_id", allow_null=True)
    d_prognosis = serializers.UUIDField(source="d_prognosis_id", allow_null=True)
    price_eur = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()
    activation_factor = serializers.DecimalField(max_digits=3, decimal_places=2)
    status = serializers.CharField()
    isps = IspPowerSerializer(many=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


def _scoped(queryset: QuerySet[Any], request: Request, *filters: str) -> QuerySet[Any]:
    """Apply simple equality filters from the query string (status, period, congestion_point EAN)."""
    params = request.query_params
    if "status" in filters and params.get("status"):
        queryset = queryset.filter(status=params["status"])
    if "period" in filters and params.get("period"):
        period = serializers.DateField().to_internal_value(params["period"])
        queryset = queryset.filter(period=period)
    if "congestion_point" in filters and params.get("congestion_point"):
        queryset = queryset.filter(congestion_point__ean=params["congestion_point"])
    return queryset


LIST_FILTERS = [
    OpenApiParameter("status", OpenApiTypes.STR, description="Only objects in this status."),
    OpenApiParameter("period", OpenApiTypes.DATE, description="Only this market day (YYYY-MM-DD)."),
    OpenApiParameter("congestion_point", OpenApiTypes.STR, description="Only this congestion point (EAN-18)."),
    OpenApiParameter("cursor", OpenApiTypes.STR, description="Pagination cursor from `next`/`previous`."),
    OpenApiParameter("page_size", OpenApiTypes.INT, description="Items per page (max 500)."),
]


# --- congestion points ------------------------------------------------------------------------------


class CongestionPointListApi(APIView):
    permission_classes = [IsMarketParticipant]

    @extend_schema(
        operation_id="congestion_points_list",
        summary="My congestion points",
        description="DSO: the points it owns. Aggregator: the points where it represents connections today or later.",
        responses={200: CongestionPointOutputSerializer(many=True), **ERROR_RESPONSES},
        tags=["market"],
    )
    def get(self, request: Request) -> Response:
        participant = _participant(request)
        if participant.role == Participant.Role.DSO:
            points: QuerySet[CongestionPoint] = selectors.congestion_points_for_dso(dso=participant)
        else:
            from common.isp import market_day_of
            from common.time import now

            points = selectors.congestion_points_for_aggregator(aggregator=participant, day=market_day_of(now()))
        return Response(CongestionPointOutputSerializer(points.select_related("dso"), many=True).data)


# --- flex requests ----------------------------------------------------------------------------------


def _visible_requests(participant: Participant) -> QuerySet[FlexRequest]:
    if participant.role == Participant.Role.DSO:
        return selectors.flex_requests_for_dso(dso=participant)
    return selectors.flex_requests_visible_to_aggregator(aggregator=participant)


class FlexRequestListApi(APIView):
    permission_classes = [IsMarketParticipant]

    @extend_schema(
        operation_id="flex_requests_list",
        summary="Flex requests",
        description=(
            "Aggregator: requests on congestion points where you represent connections on the request's day; "
            "by default only open, unexpired ones (pass status=... for others). DSO: your own requests."
        ),
        parameters=LIST_FILTERS,
        responses={200: paginated(FlexRequestOutputSerializer, "PaginatedFlexRequestList"), **ERROR_RESPONSES},
        tags=["market"],
    )
    def get(self, request: Request) -> Response:
        participant = _participant(request)
        if participant.role == Participant.Role.AGR and not request.query_params.get("status"):
            queryset = selectors.flex_requests_open_for_aggregator(aggregator=participant)
        else:
            queryset = _visible_requests(participant)
        queryset = _scoped(queryset, request, "status", "period", "congestion_point")
        return paginated_response(queryset=queryset, serializer_class=FlexRequestOutputSerializer, request=request,
                                  view=self)


class FlexRequestDetailApi(APIView):
    permission_classes = [IsMarketParticipant]

    @extend_schema(operation_id="flex_requests_retrieve", summary="One flex request",
                   responses={200: FlexRequestOutputSerializer, **ERROR_RESPONSES}, tags=["market"])
    def get(self, request: Request, flex_request_id: str) -> Response:
        flex_request = get_object_or_404(_visible_requests(_participant(request)), pk=flex_request_id)
        return Response(FlexRequestOutputSerializer(flex_request).data)


# --- D-prognoses ------------------------------------------------------------------------------------


class DPrognosisCreateApi(APIView):
    permission_classes = [IsAggregator]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "DPrognosisCreate"

        congestion_point = serializers.CharField(max_length=18, help_text="EAN-18 of the congestion point.")
        period = serializers.DateField(help_text="Market day (Europe/Amsterdam).")
        isps = IspPowerSerializer(many=True, help_text="Every ISP of the day, forecast load in W.")

    @extend_schema(
        operation_id="d_prognoses_create",
        summary="Submit a D-prognosis (the settlement baseline)",
        request=InputSerializer,
        responses={201: DPrognosisOutputSerializer, **ERROR_RESPONSES},
        tags=["market"],
        examples=[
            OpenApiExample(
                "Flat 40 kW forecast (first ISPs shown)",
                value={"congestion_point": "871690000000000018", "period": "2026-11-26",
                       "isps": [{"isp": 1, "power_w": 40000}, {"isp": 2, "power_w": 40000}]},
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        point = _congestion_point_by_ean(data["congestion_point"])
        prognosis = services.d_prognosis_submit(
            aggregator=_participant(request),
            congestion_point=point,
            period=data["period"],
            isps=[services.IspPower(isp=row["isp"], power_w=row["power_w"]) for row in data["isps"]],
            actor=request.user,  # type: ignore[arg-type]
        )
        return Response(DPrognosisOutputSerializer(prognosis).data, status=status.HTTP_201_CREATED)


class DPrognosisListApi(APIView):
    permission_classes = [IsAggregator]

    @extend_schema(operation_id="d_prognoses_list", summary="My D-prognoses", parameters=LIST_FILTERS,
                   responses={200: paginated(DPrognosisOutputSerializer, "PaginatedDPrognosisList"),
                              **ERROR_RESPONSES}, tags=["market"])
    def get(self, request: Request) -> Response:
        queryset = _scoped(selectors.d_prognoses_for_aggregator(aggregator=_participant(request)), request,
                           "status", "period", "congestion_point")
        return paginated_response(queryset=queryset, serializer_class=DPrognosisOutputSerializer, request=request,
                                  view=self)


def _congestion_point_by_ean(ean: str) -> CongestionPoint:
    from common.exceptions import ApplicationError

    point = CongestionPoint.objects.filter(ean=ean).first()
    if point is None:
        raise ApplicationError(f"Unknown congestion point {ean}.", code="unknown_congestion_point",
                               field="congestion_point")
    return point


# --- flex offers ------------------------------------------------------------------------------------


class FlexOfferCreateApi(APIView):
    permission_classes = [IsAggregator]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "FlexOfferCreate"

        flex_request = serializers.UUIDField(required=False, allow_null=True,
                                             help_text="The request answered; omit for an unsolicited offer.")
        congestion_point = serializers.CharField(max_length=18, required=False,
                                                 help_text="EAN-18; taken from the request when omitted.")
        period = serializers.DateField(required=False, help_text="Market day; taken from the request when omitted.")
        d_prognosis = serializers.UUIDField(required=False, allow_null=True,
                                            help_text="Baseline; defaults to your current D-prognosis.")
        isps = IspPowerSerializer(many=True)
        price_eur = serializers.DecimalField(max_digits=12, decimal_places=4, min_value=0,
                                             help_text="Asking price for the whole offer, EUR (2 decimals).")
        expires_at = AwareDateTimeField()

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if not attrs.get("flex_request") and not (attrs.get("congestion_point") and attrs.get("period")):
                raise serializers.ValidationError(
                    {"congestion_point": "An unsolicited offer names its congestion_point and period."})
            return attrs

    @extend_schema(
        operation_id="flex_offers_create",
        summary="Submit a flex offer",
        request=InputSerializer,
        responses={201: FlexOfferOutputSerializer, **ERROR_RESPONSES},
        tags=["market"],
        examples=[
            OpenApiExample(
                "Answer a request: 30 kW less from 17:00 to 17:30",
                value={"flex_request": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
                       "isps": [{"isp": 69, "power_w": -30000}, {"isp": 70, "power_w": -30000}],
                       "price_eur": "4.50", "expires_at": "2026-11-26T16:00:00+01:00"},
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        aggregator = _participant(request)
        flex_request = None
        if data.get("flex_request"):
            flex_request = get_object_or_404(
                selectors.flex_requests_visible_to_aggregator(aggregator=aggregator), pk=data["flex_request"]
            )
        point = _congestion_point_by_ean(data["congestion_point"]) if data.get("congestion_point") else None
        d_prognosis = None
        if data.get("d_prognosis"):
            d_prognosis = get_object_or_404(selectors.d_prognoses_for_aggregator(aggregator=aggregator),
                                            pk=data["d_prognosis"])
        offer = services.flex_offer_submit(
            aggregator=aggregator,
            congestion_point=point or flex_request.congestion_point,  # type: ignore[union-attr]
            period=data.get("period") or flex_request.period,  # type: ignore[union-attr]
            isps=[services.IspPower(isp=row["isp"], power_w=row["power_w"]) for row in data["isps"]],
            price_eur=data["price_eur"],
            expires_at=data["expires_at"],
            flex_request=flex_request,
            d_prognosis=d_prognosis,
            actor=request.user,  # type: ignore[arg-type]
        )
        return Response(FlexOfferOutputSerializer(offer).data, status=status.HTTP_201_CREATED)


def _visible_offers(participant: Participant) -> QuerySet[FlexOffer]:
    if participant.role == Participant.Role.DSO:
        return selectors.flex_offers_for_dso(dso=participant)
    return selectors.flex_offers_for_aggregator(aggregator=participant)


class FlexOfferListApi(APIView):
    permission_classes = [IsMarketParticipant]

    @extend_schema(operation_id="flex_offers_list", summary="Flex offers (mine, or on my points for a DSO)",
                   parameters=LIST_FILTERS,
                   responses={200: paginated(FlexOfferOutputSerializer, "PaginatedFlexOfferList"), **ERROR_RESPONSES},
                   tags=["market"])
    def get(self, request: Request) -> Response:
        queryset = _scoped(_visible_offers(_participant(request)), request, "status", "period", "congestion_point")
        return paginated_response(queryset=queryset, serializer_class=FlexOfferOutputSerializer, request=request,
                                  view=self)


class FlexOfferDetailApi(APIView):
    permission_classes = [IsMarketParticipant]

    @extend_schema(operation_id="flex_offers_retrieve", summary="One flex offer",
                   responses={200: FlexOfferOutputSerializer, **ERROR_RESPONSES}, tags=["market"])
    def get(self, request: Request, flex_offer_id: str) -> Response:
        offer = get_object_or_404(_visible_offers(_participant(request)), pk=flex_offer_id)
        return Response(FlexOfferOutputSerializer(offer).data)


class FlexOfferRevokeApi(APIView):
    permission_classes = [IsAggregator]

    @extend_schema(operation_id="flex_offers_revoke", summary="Revoke an offer that is not ordered yet",
                   request=None, responses={200: FlexOfferOutputSerializer, 409: ERROR_RESPONSES[400],
                                            **ERROR_RESPONSES}, tags=["market"])
    def post(self, request: Request, flex_offer_id: str) -> Response:
        aggregator = _participant(request)
        offer = get_object_or_404(selectors.flex_offers_for_aggregator(aggregator=aggregator), pk=flex_offer_id)
        offer = services.flex_offer_revoke(flex_offer=offer, aggregator=aggregator, actor=request.user)  # type: ignore[arg-type]
        return Response(FlexOfferOutputSerializer(offer).data)


# --- flex orders ------------------------------------------------------------------------------------


def _visible_orders(participant: Participant) -> QuerySet[FlexOrder]:
    if participant.role == Participant.Role.DSO:
        return selectors.flex_orders_for_dso(dso=participant)
    return selectors.flex_orders_for_aggregator(aggregator=participant)


class FlexOrderListApi(APIView):
    permission_classes = [IsMarketParticipant]

    @extend_schema(operation_id="flex_orders_list", summary="Flex orders (received, or placed for a DSO)",
                   parameters=LIST_FILTERS,
                   responses={200: paginated(FlexOrderOutputSerializer, "PaginatedFlexOrderList"), **ERROR_RESPONSES},
                   tags=["market"])
    def get(self, request: Request) -> Response:
        queryset = _scoped(_visible_orders(_participant(request)), request, "status", "period", "congestion_point")
        return paginated_response(queryset=queryset, serializer_class=FlexOrderOutputSerializer, request=request,
                                  view=self)


class FlexOrderDetailApi(APIView):
    permission_classes = [IsMarketParticipant]

    @extend_schema(operation_id="flex_orders_retrieve", summary="One flex order",
                   responses={200: FlexOrderOutputSerializer, **ERROR_RESPONSES}, tags=["market"])
    def get(self, request: Request, flex_order_id: str) -> Response:
        order = get_object_or_404(_visible_orders(_participant(request)), pk=flex_order_id)
        return Response(FlexOrderOutputSerializer(order).data)



