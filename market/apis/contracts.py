"""Bilateral contracts (read) and FlexReservationUpdates (DSO writes, both read)."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from common.exceptions import ApplicationError
from common.idempotency import idempotent
from market import services
from market.apis._shared import (
    ERROR_RESPONSES,
    IDEMPOTENCY_PARAMETER,
    IspPowerInputSerializer,
    IspPowerSerializer,
    MessageInputSerializer,
    ScopedListView,
    ScopedView,
    expand_powers,
    input_positions,
    message_kwargs,
    run_origins,
)
from market.filters import FlexContractFilter, ReservationUpdateFilter
from market.models import FlexContract, FlexReservationUpdate, Participant
from market.permissions import HasScope, IsDso, request_actor


class FlexContractOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    contract_id = serializers.CharField()
    dso = serializers.CharField(source="dso.domain")
    aggregator = serializers.CharField(source="aggregator.domain")
    congestion_point = serializers.CharField(source="congestion_point.ean")
    valid_from = serializers.DateField()
    valid_until = serializers.DateField(allow_null=True)
    reserved_power_w = serializers.IntegerField()
    window_start = serializers.TimeField(allow_null=True)
    window_end = serializers.TimeField(allow_null=True)
    reservation_deadline_minutes = serializers.IntegerField()
    allows_direct_orders = serializers.BooleanField()
    is_active = serializers.BooleanField()


class ReservationUpdateOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    message_id = serializers.UUIDField()
    contract = serializers.CharField(source="contract.contract_id")
    congestion_point = serializers.CharField(source="congestion_point.ean")
    period = serializers.DateField()
    reference = serializers.CharField()
    status = serializers.CharField()
    isps = IspPowerSerializer(many=True, help_text="Flex still reserved per ISP after this update (0 = released).")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


def _party(participant: Participant) -> Q:
    return Q(dso=participant) | Q(aggregator=participant)


@extend_schema(tags=["contracts"], summary="My bilateral contracts")
class FlexContractListApi(ScopedListView):
    queryset = FlexContract.objects.none()  # the model, for the schema; get_queryset scopes the rows
    serializer_class = FlexContractOutputSerializer
    filterset_class = FlexContractFilter

    def get_queryset(self) -> QuerySet[FlexContract]:
        return FlexContract.objects.filter(_party(self.participant)).select_related(
            "dso", "aggregator", "congestion_point")


@extend_schema(tags=["contracts"], summary="Reservation updates (sent, or received by an aggregator)")
class ReservationUpdateListApi(ScopedListView):
    queryset = FlexReservationUpdate.objects.none()  # the model, for the schema; get_queryset scopes the rows
    serializer_class = ReservationUpdateOutputSerializer
    filterset_class = ReservationUpdateFilter

    def get_queryset(self) -> QuerySet[FlexReservationUpdate]:
        return FlexReservationUpdate.objects.filter(_party(self.participant)).select_related(
            "contract", "congestion_point").prefetch_related("isps")


class ReservationUpdateInputSerializer(MessageInputSerializer):
    contract = serializers.CharField(help_text="ContractID.")
    period = serializers.DateField()
    reference = serializers.CharField(required=False, allow_blank=True, default="")
    isps = IspPowerInputSerializer(many=True, help_text="Flex still reserved per ISP (0 releases it).")

    class Meta:
        ref_name = "FlexReservationUpdateCreate"


@extend_schema(tags=["contracts"], summary="Confirm, reduce or release reserved flex (DSO, FlexReservationUpdate)",
               request=ReservationUpdateInputSerializer,
               responses={201: ReservationUpdateOutputSerializer, 409: ERROR_RESPONSES[400], **ERROR_RESPONSES},
               parameters=[IDEMPOTENCY_PARAMETER])
class ReservationUpdateCreateApi(ScopedView):
    permission_classes = [IsDso, HasScope]
    required_scope = "contracts:write"

    @idempotent
    def post(self, request: Request) -> Response:
        serializer = ReservationUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        contract = FlexContract.objects.select_related("congestion_point__market", "aggregator").filter(
            dso=self.participant, contract_id=data["contract"]).first()
        if contract is None:
            raise ApplicationError("Unknown contract reference.", code="unknown_contract", field="contract")
        actor, _ = request_actor(request)
        with input_positions({"isps": run_origins(data["isps"])}):
            update = services.flex_reservation_update_submit(
                dso=self.participant, contract=contract, period=data["period"], isps=expand_powers(data["isps"]),
                reference=data["reference"], actor=actor, **message_kwargs(data),
            )
        return Response(ReservationUpdateOutputSerializer(update).data, status=status.HTTP_201_CREATED)
