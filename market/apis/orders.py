"""Flex orders: DSOs buy offers (optionally partially) or order directly under a contract; both read orders."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from common.exceptions import ApplicationError
from common.idempotency import idempotent
from market import selectors, services
from market.apis._shared import (
    ERROR_RESPONSES,
    IDEMPOTENCY_PARAMETER,
    IspPowerInputSerializer,
    IspPowerSerializer,
    MessageInputSerializer,
    ObjectEventsView,
    ScopedDetailView,
    ScopedListView,
    congestion_point_by_ean,
    expand_powers,
    input_positions,
    message_kwargs,
    run_origins,
)
from market.apis.offers import DsoOrderWrite
from market.filters import FlexOrderFilter
from market.models import FlexContract, FlexOrder, Participant
from market.permissions import request_actor


class FlexOrderOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    message_id = serializers.UUIDField()
    order_reference = serializers.CharField()
    dso = serializers.CharField(source="dso.domain")
    aggregator = serializers.CharField(source="aggregator.domain")
    congestion_point = serializers.CharField(source="congestion_point.ean")
    period = serializers.DateField()
    flex_offer = serializers.UUIDField(source="flex_offer_id", allow_null=True)
    option_reference = serializers.CharField(source="option.option_reference", allow_null=True, default=None)
    unsolicited = serializers.BooleanField()
    contract = serializers.CharField(source="contract.contract_id", allow_null=True, default=None)
    service_type = serializers.CharField()
    d_prognosis = serializers.UUIDField(source="d_prognosis_id", allow_null=True)
    price_eur = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()
    activation_factor = serializers.DecimalField(max_digits=3, decimal_places=2)
    status = serializers.CharField()
    isps = IspPowerSerializer(many=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


def visible_orders(participant: Participant) -> QuerySet[FlexOrder]:
    if participant.role == Participant.Role.DSO:
        queryset = selectors.flex_orders_for_dso(dso=participant)
    else:
        queryset = selectors.flex_orders_for_aggregator(aggregator=participant)
    return queryset.select_related("dso", "aggregator", "option", "contract")


@extend_schema(tags=["market"], summary="Flex orders (received, or placed for a DSO)")
class FlexOrderListApi(ScopedListView):
    queryset = FlexOrder.objects.none()  # the model, for the schema; get_queryset scopes the rows
    serializer_class = FlexOrderOutputSerializer
    filterset_class = FlexOrderFilter

    def get_queryset(self) -> QuerySet[FlexOrder]:
        return visible_orders(self.participant)


@extend_schema(tags=["market"], summary="One flex order")
class FlexOrderDetailApi(ScopedDetailView):
    serializer_class = FlexOrderOutputSerializer

    def get_queryset(self) -> QuerySet[FlexOrder]:
        return visible_orders(self.participant)


@extend_schema(tags=["audit"], summary="Audit trail of a flex order")
class FlexOrderEventsApi(ObjectEventsView):
    def visible_objects(self) -> QuerySet[FlexOrder]:
        return visible_orders(self.participant)


class OfferAcceptInputSerializer(serializers.Serializer):
    option_reference = serializers.CharField(required=False, help_text="Required when the offer has several options.")
    activation_factor = serializers.DecimalField(max_digits=3, decimal_places=2, required=False,
                                                 default=Decimal("1.00"),
                                                 help_text="Partial activation, within the option's minimum.")

    class Meta:
        ref_name = "FlexOfferAccept"


@extend_schema(
    tags=["market"], summary="Order an offer (DSO): places a binding FlexOrder", request=OfferAcceptInputSerializer,
    responses={201: FlexOrderOutputSerializer, 409: ERROR_RESPONSES[400], **ERROR_RESPONSES},
    parameters=[IDEMPOTENCY_PARAMETER],
    examples=[OpenApiExample("80 % of option 1", request_only=True,
                             value={"option_reference": "1", "activation_factor": "0.80"})],
)
class FlexOfferAcceptApi(DsoOrderWrite):
    @idempotent
    def post(self, request: Request, pk: str) -> Response:
        serializer = OfferAcceptInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        offer = get_object_or_404(selectors.flex_offers_for_dso(dso=self.participant), pk=pk)
        actor, label = request_actor(request)
        order = services.flex_offer_accept(
            flex_offer=offer, dso=self.participant, actor=actor, actor_label=label,
            option_reference=serializer.validated_data.get("option_reference"),
            activation_factor=serializer.validated_data["activation_factor"],
        )
        return Response(FlexOrderOutputSerializer(order).data, status=status.HTTP_201_CREATED)


class DirectOrderInputSerializer(MessageInputSerializer):
    aggregator = serializers.CharField(help_text="The aggregator's USEF domain.")
    congestion_point = serializers.CharField(max_length=18)
    period = serializers.DateField()
    contract = serializers.CharField(help_text="ContractID of the agreement that allows direct orders.")
    isps = IspPowerInputSerializer(many=True)
    price_eur = serializers.DecimalField(max_digits=12, decimal_places=4, min_value=Decimal("0"))
    currency = serializers.CharField(required=False, default="EUR")
    service_type = serializers.CharField(required=False, allow_blank=True, default="")

    class Meta:
        ref_name = "FlexOrderDirectCreate"


@extend_schema(tags=["market"], summary="Order directly, without an offer (DSO, under a contract; UFTP 3.1)",
               request=DirectOrderInputSerializer,
               responses={201: FlexOrderOutputSerializer, 409: ERROR_RESPONSES[400], **ERROR_RESPONSES},
               parameters=[IDEMPOTENCY_PARAMETER])
class FlexOrderDirectCreateApi(DsoOrderWrite):
    @idempotent
    def post(self, request: Request) -> Response:
        serializer = DirectOrderInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        point = congestion_point_by_ean(data["congestion_point"])
        contract = FlexContract.objects.select_related("aggregator").filter(
            dso=self.participant, contract_id=data["contract"]).first()
        if contract is None or contract.aggregator.domain != data["aggregator"]:
            raise ApplicationError("Unknown contract reference.", code="unknown_contract", field="contract")
        actor, label = request_actor(request)
        with input_positions({"isps": run_origins(data["isps"])}):
            order = services.flex_order_direct_create(
                dso=self.participant, aggregator=contract.aggregator, congestion_point=point,
                period=data["period"], isps=expand_powers(data["isps"]), price_eur=data["price_eur"],
                contract=contract, service_type=data["service_type"], currency=data["currency"], actor=actor,
                actor_label=label, **message_kwargs(data),
            )
        return Response(FlexOrderOutputSerializer(order).data, status=status.HTTP_201_CREATED)


