"""D-prognoses: aggregators submit their baseline per congestion point and day."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from common.idempotency import idempotent
from market import selectors, services
from market.apis._shared import (
    ERROR_RESPONSES,
    IDEMPOTENCY_PARAMETER,
    IspPowerRunsField,
    IspPowerSerializer,
    MessageInputSerializer,
    ObjectEventsView,
    ScopedDetailView,
    ScopedListView,
    ScopedView,
    congestion_point_by_ean,
    expand_powers,
    input_positions,
    message_kwargs,
    run_origins,
)
from market.filters import DPrognosisFilter
from market.models import DPrognosis
from market.permissions import HasScope, IsAggregator, request_actor


class DPrognosisOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    message_id = serializers.UUIDField()
    congestion_point = serializers.CharField(source="congestion_point.ean")
    period = serializers.DateField()
    revision = serializers.IntegerField()
    status = serializers.CharField()
    isps = IspPowerSerializer(many=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class DPrognosisInputSerializer(MessageInputSerializer):
    congestion_point = serializers.CharField(max_length=18, help_text="EAN-18 of the congestion point.")
    period = serializers.DateField(help_text="Market day (Europe/Amsterdam).")
    revision = serializers.IntegerField(required=False, min_value=1,
                                        help_text="Your revision number; must exceed every earlier one.")
    isps = IspPowerRunsField(help_text="Every ISP of the day, forecast load in W.")

    class Meta:
        ref_name = "DPrognosisCreate"


class AggregatorOnly(ScopedView):
    permission_classes = [IsAggregator, HasScope]


@extend_schema(
    tags=["market"], summary="Submit a D-prognosis (the settlement baseline)", request=DPrognosisInputSerializer,
    responses={201: DPrognosisOutputSerializer, 409: ERROR_RESPONSES[400], **ERROR_RESPONSES},
    parameters=[IDEMPOTENCY_PARAMETER],
    examples=[OpenApiExample("Flat 40 kW all day (96 ISPs as one run)", request_only=True, value={
        "congestion_point": "871690000000000018", "period": "2026-11-26",
        "isps": [{"isp": 1, "duration": 96, "power_w": 40000}]})],
)
class DPrognosisCreateApi(AggregatorOnly):
    required_scope = "prognoses:write"

    @idempotent
    def post(self, request: Request) -> Response:
        serializer = DPrognosisInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        actor, label = request_actor(request)
        with input_positions({"isps": run_origins(data["isps"])}):
            prognosis = services.d_prognosis_submit(
                aggregator=self.participant, congestion_point=congestion_point_by_ean(data["congestion_point"]),
                period=data["period"], isps=expand_powers(data["isps"]), revision=data.get("revision"),
                actor=actor, actor_label=label, **message_kwargs(data),
            )
        return Response(DPrognosisOutputSerializer(prognosis).data, status=status.HTTP_201_CREATED)


def _mine(view: ScopedView) -> QuerySet[DPrognosis]:
    return selectors.d_prognoses_for_aggregator(aggregator=view.participant)


@extend_schema(tags=["market"], summary="My D-prognoses")
class DPrognosisListApi(AggregatorOnly, ScopedListView):
    queryset = DPrognosis.objects.none()  # the model, for the schema; get_queryset scopes the rows
    serializer_class = DPrognosisOutputSerializer
    filterset_class = DPrognosisFilter

    def get_queryset(self) -> QuerySet[DPrognosis]:
        return _mine(self)


@extend_schema(tags=["market"], summary="One D-prognosis")
class DPrognosisDetailApi(AggregatorOnly, ScopedDetailView):
    serializer_class = DPrognosisOutputSerializer

    def get_queryset(self) -> QuerySet[DPrognosis]:
        return _mine(self)


@extend_schema(tags=["audit"], summary="Audit trail of a D-prognosis")
class DPrognosisEventsApi(AggregatorOnly, ObjectEventsView):
    def visible_objects(self) -> QuerySet[DPrognosis]:
        return _mine(self)
