"""Congestion points and flex requests: aggregators read them; DSOs open, revise and cancel them."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from common import isp as isp_time
from common import time as clock
from common.idempotency import idempotent
from market import selectors, services
from market.apis._shared import (
    ERROR_RESPONSES,
    IDEMPOTENCY_PARAMETER,
    AwareDateTimeField,
    IspBandInputSerializer,
    IspBandOutputSerializer,
    MessageInputSerializer,
    ObjectEventsView,
    ScopedDetailView,
    ScopedListView,
    ScopedView,
    congestion_point_by_ean,
    expand_bands,
    input_positions,
    message_kwargs,
    run_origins,
)
from market.filters import CongestionPointFilter, FlexRequestFilter
from market.models import CongestionPoint, FlexRequest, Participant
from market.permissions import HasScope, IsDso, request_actor


class CongestionPointOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    ean = serializers.CharField()
    entity_address = serializers.CharField()
    name = serializers.CharField()
    dso = serializers.CharField(source="dso.domain")
    market = serializers.CharField(source="market.code")
    gate_closure_minutes = serializers.IntegerField(source="market.gate_closure_minutes")
    mutex_offers_supported = serializers.BooleanField()


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


def visible_requests(participant: Participant) -> QuerySet[FlexRequest]:
    if participant.role == Participant.Role.DSO:
        return selectors.flex_requests_for_dso(dso=participant)
    return selectors.flex_requests_visible_to_aggregator(aggregator=participant)


@extend_schema(tags=["market"], summary="My congestion points",
               description="DSO: the points it owns. Aggregator: where it represents connections today or later.")
class CongestionPointListApi(ScopedListView):
    queryset = CongestionPoint.objects.none()  # the model, for the schema; get_queryset scopes the rows
    serializer_class = CongestionPointOutputSerializer
    filterset_class = CongestionPointFilter

    def get_queryset(self) -> QuerySet[CongestionPoint]:
        participant = self.participant
        if participant.role == Participant.Role.DSO:
            points = selectors.congestion_points_for_dso(dso=participant)
        else:
            points = selectors.congestion_points_for_aggregator(aggregator=participant,
                                                                day=isp_time.market_day_of(clock.now()))
        return points.select_related("dso", "market")


@extend_schema(tags=["market"], summary="Flex requests",
               description="Aggregator: requests on points where you represent connections on the request's day "
                           "(open and unexpired ones unless you filter by status). DSO: your own requests.")
class FlexRequestListApi(ScopedListView):
    queryset = FlexRequest.objects.none()  # the model, for the schema; get_queryset scopes the rows
    serializer_class = FlexRequestOutputSerializer
    filterset_class = FlexRequestFilter

    def get_queryset(self) -> QuerySet[FlexRequest]:
        participant = self.participant
        params = self.request.query_params
        # Open requests by default; a status filter or polling with updated_since shows every change.
        if participant.role == Participant.Role.AGR and not (params.get("status") or params.get("updated_since")):
            return selectors.flex_requests_open_for_aggregator(aggregator=participant)
        return visible_requests(participant)


@extend_schema(tags=["market"], summary="One flex request")
class FlexRequestDetailApi(ScopedDetailView):
    serializer_class = FlexRequestOutputSerializer

    def get_queryset(self) -> QuerySet[FlexRequest]:
        return visible_requests(self.participant)


@extend_schema(tags=["audit"], summary="Audit trail of a flex request")
class FlexRequestEventsApi(ObjectEventsView):
    def visible_objects(self) -> QuerySet[FlexRequest]:
        return visible_requests(self.participant)


class FlexRequestInputSerializer(MessageInputSerializer):
    congestion_point = serializers.CharField(max_length=18, help_text="EAN-18 of your congestion point.")
    period = serializers.DateField(help_text="Market day (Europe/Amsterdam).")
    isps = IspBandInputSerializer(many=True, help_text="Requested ISPs (and optionally the rest as Available).")
    expires_at = AwareDateTimeField()
    service_type = serializers.CharField(required=False, allow_blank=True, default="")

    class Meta:
        ref_name = "FlexRequestCreate"


class FlexRequestReviseInputSerializer(MessageInputSerializer):
    isps = IspBandInputSerializer(many=True)
    expires_at = AwareDateTimeField()
    service_type = serializers.CharField(required=False, allow_blank=True)

    class Meta:
        ref_name = "FlexRequestRevise"


class DsoWriteView(ScopedView):
    permission_classes = [IsDso, HasScope]
    required_scope = "requests:write"


@extend_schema(
    tags=["market"], summary="Open a flex request (DSO)", request=FlexRequestInputSerializer,
    responses={201: FlexRequestOutputSerializer, **ERROR_RESPONSES}, parameters=[IDEMPOTENCY_PARAMETER],
    examples=[OpenApiExample("30-60 kW less, 17:00-18:00", request_only=True, value={
        "congestion_point": "871690000000000018", "period": "2026-11-26",
        "isps": [{"isp": 69, "duration": 4, "disposition": "Requested", "min_power_w": -60000, "max_power_w": -30000}],
        "expires_at": "2026-11-26T15:00:00+01:00"})],
)
class FlexRequestCreateApi(DsoWriteView):
    @idempotent
    def post(self, request: Request) -> Response:
        serializer = FlexRequestInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        actor, label = request_actor(request)
        with input_positions({"isps": run_origins(data["isps"])}):
            flex_request = services.flex_request_create(
                dso=self.participant, congestion_point=congestion_point_by_ean(data["congestion_point"]),
                period=data["period"], isps=expand_bands(data["isps"]), expires_at=data["expires_at"],
                service_type=data["service_type"], actor=actor, actor_label=label, **message_kwargs(data),
            )
        return Response(FlexRequestOutputSerializer(flex_request).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["market"], summary="Revise a flex request (DSO): a new revision supersedes it",
               request=FlexRequestReviseInputSerializer,
               responses={201: FlexRequestOutputSerializer, 409: ERROR_RESPONSES[400], **ERROR_RESPONSES},
               parameters=[IDEMPOTENCY_PARAMETER])
class FlexRequestReviseApi(DsoWriteView):
    @idempotent
    def post(self, request: Request, pk: str) -> Response:
        serializer = FlexRequestReviseInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        original = get_object_or_404(selectors.flex_requests_for_dso(dso=self.participant), pk=pk)
        actor, label = request_actor(request)
        with input_positions({"isps": run_origins(data["isps"])}):
            revision = services.flex_request_revise(
                flex_request=original, dso=self.participant, isps=expand_bands(data["isps"]),
                expires_at=data["expires_at"], service_type=data.get("service_type"), actor=actor,
                actor_label=label, message_id=data.get("message_id"),
            )
        return Response(FlexRequestOutputSerializer(revision).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["market"], summary="Cancel a flex request (DSO)", request=None,
               responses={200: FlexRequestOutputSerializer, 409: ERROR_RESPONSES[400], **ERROR_RESPONSES},
               parameters=[IDEMPOTENCY_PARAMETER])
class FlexRequestCancelApi(DsoWriteView):
    @idempotent
    def post(self, request: Request, pk: str) -> Response:
        flex_request = get_object_or_404(selectors.flex_requests_for_dso(dso=self.participant), pk=pk)
        actor, label = request_actor(request)
        services.flex_request_cancel(flex_request=flex_request, actor=actor, actor_label=label)
        flex_request.refresh_from_db()
        return Response(FlexRequestOutputSerializer(flex_request).data)

