"""Flex offers: aggregators submit and revoke; DSOs read the offers on their points, accept or reject them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import SharedFieldsInput
from common.exceptions import ApplicationError
from common.idempotency import idempotent
from market import selectors, services
from market.apis._shared import (
    ERROR_RESPONSES,
    IDEMPOTENCY_PARAMETER,
    AwareDateTimeField,
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
    visible_or_unknown,
)
from market.filters import FlexOfferFilter
from market.models import FlexContract, FlexOffer, Participant
from market.permissions import HasScope, IsAggregator, IsDso, request_actor


class OfferOptionOutputSerializer(serializers.Serializer):
    option_reference = serializers.CharField()
    price_eur = serializers.DecimalField(max_digits=12, decimal_places=2)
    min_activation_factor = serializers.DecimalField(max_digits=3, decimal_places=2)
    isps = IspPowerSerializer(many=True)


class FlexOfferOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    message_id = serializers.UUIDField()
    conversation_id = serializers.UUIDField()
    aggregator = serializers.CharField(source="aggregator.domain")
    congestion_point = serializers.CharField(source="congestion_point.ean")
    period = serializers.DateField()
    flex_request = serializers.UUIDField(source="flex_request_id", allow_null=True)
    d_prognosis = serializers.UUIDField(source="d_prognosis_id", allow_null=True)
    contract = serializers.CharField(source="contract.contract_id", allow_null=True, default=None)
    unsolicited = serializers.BooleanField()
    currency = serializers.CharField()
    expires_at = serializers.DateTimeField()
    status = serializers.CharField()
    options = OfferOptionOutputSerializer(many=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def to_representation(self, instance: FlexOffer) -> dict[str, Any]:
        """The declared fields, built directly (same keys, same formats: a test compares this with DRF's generic
        walk). Every offer submission answers with this; DRF's per-field walk over the nested options and ISPs
        cost about a tenth of the whole request."""
        offer = instance
        return {
            "id": str(offer.pk),
            "message_id": str(offer.message_id),
            "conversation_id": str(offer.conversation_id),
            "aggregator": offer.aggregator.domain,
            "congestion_point": offer.congestion_point.ean,
            "period": offer.period.isoformat(),
            "flex_request": str(offer.flex_request_id) if offer.flex_request_id else None,
            "d_prognosis": str(offer.d_prognosis_id) if offer.d_prognosis_id else None,
            "contract": offer.contract.contract_id if offer.contract_id else None,  # type: ignore[union-attr]
            "unsolicited": offer.unsolicited,
            "currency": offer.currency,
            "expires_at": _DATETIME.to_representation(offer.expires_at),
            "status": offer.status,
            "options": [
                {
                    "option_reference": option.option_reference,
                    "price_eur": _PRICE.to_representation(option.price_eur),
                    "min_activation_factor": _FACTOR.to_representation(option.min_activation_factor),
                    "isps": [{"isp": row.isp, "power_w": row.power_w} for row in option.isps.all()],
                }
                for option in offer.options.all()
            ],
            "created_at": _DATETIME.to_representation(offer.created_at),
            "updated_at": _DATETIME.to_representation(offer.updated_at),
        }


# Unbound fields that format values exactly as the declared fields above do (settings-aware: time zone, decimals).
_DATETIME = serializers.DateTimeField()
_PRICE = serializers.DecimalField(max_digits=12, decimal_places=2)
_FACTOR = serializers.DecimalField(max_digits=3, decimal_places=2)


class OfferOptionInputSerializer(SharedFieldsInput, serializers.Serializer):
    option_reference = serializers.CharField(max_length=64, required=False,
                                             help_text="Your reference; defaults to 1, 2, ... in order.")
    price_eur = serializers.DecimalField(max_digits=12, decimal_places=4, min_value=Decimal("0"),
                                         help_text="Price for the whole option at activation 1.00, EUR (2 decimals).")
    min_activation_factor = serializers.DecimalField(max_digits=3, decimal_places=2, required=False,
                                                     default=Decimal("1.00"),
                                                     help_text="Lowest partial activation you accept; 1.00 = all or "
                                                               "nothing.")
    isps = IspPowerRunsField()


class FlexOfferInputSerializer(SharedFieldsInput, MessageInputSerializer):
    flex_request = serializers.UUIDField(required=False, allow_null=True,
                                         help_text="The request answered; omit for an unsolicited offer.")
    congestion_point = serializers.CharField(max_length=18, required=False,
                                             help_text="EAN-18; taken from the request when omitted.")
    period = serializers.DateField(required=False, help_text="Market day; taken from the request when omitted.")
    d_prognosis = serializers.UUIDField(required=False, allow_null=True,
                                        help_text="Baseline; defaults to your current D-prognosis.")
    contract = serializers.CharField(required=False, allow_blank=False, help_text="ContractID, if under a contract.")
    currency = serializers.CharField(required=False, default="EUR")
    expires_at = AwareDateTimeField()
    options = OfferOptionInputSerializer(many=True, min_length=1,  # type: ignore[call-arg]
                                         help_text="One option, or several mutually exclusive ones where the point "
                                                   "supports it.")

    class Meta:
        ref_name = "FlexOfferCreate"

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("flex_request") and not (attrs.get("congestion_point") and attrs.get("period")):
            raise serializers.ValidationError(
                {"congestion_point": "An unsolicited offer names its congestion_point and period."})
        return attrs


def visible_offers(participant: Participant) -> QuerySet[FlexOffer]:
    if participant.role == Participant.Role.DSO:
        return selectors.flex_offers_for_dso(dso=participant)
    return selectors.flex_offers_for_aggregator(aggregator=participant)


class AggregatorWrite(ScopedView):
    permission_classes = [IsAggregator, HasScope]
    required_scope = "offers:write"


@extend_schema(
    tags=["market"], summary="Submit a flex offer", request=FlexOfferInputSerializer,
    responses={201: FlexOfferOutputSerializer, 409: ERROR_RESPONSES[400], **ERROR_RESPONSES},
    parameters=[IDEMPOTENCY_PARAMETER],
    examples=[OpenApiExample("Answer a request: 30 kW less 17:00-17:30, partial activation down to 50 %",
                             request_only=True, value={
                                 "flex_request": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
                                 "expires_at": "2026-11-26T16:00:00+01:00",
                                 "options": [{"price_eur": "4.50", "min_activation_factor": "0.50",
                                              "isps": [{"isp": 69, "duration": 2, "power_w": -30000}]}]})],
)
class FlexOfferCreateApi(AggregatorWrite):
    @idempotent
    def post(self, request: Request) -> Response:
        serializer = FlexOfferInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        aggregator = self.participant
        flex_request = None
        if data.get("flex_request"):
            flex_request = selectors.flex_request_for_aggregator(aggregator=aggregator, pk=data["flex_request"])
            if flex_request is None:
                raise ApplicationError("Unknown flex_request reference.", code="unknown_reference",
                                       field="flex_request")
        point = congestion_point_by_ean(data["congestion_point"]) if data.get("congestion_point") else (
            flex_request.congestion_point  # type: ignore[union-attr]
        )
        d_prognosis = None
        if data.get("d_prognosis"):
            d_prognosis = visible_or_unknown(selectors.d_prognoses_for_aggregator(aggregator=aggregator),
                                             data["d_prognosis"], field="d_prognosis")
        contract = None
        if data.get("contract"):
            contract = FlexContract.objects.filter(aggregator=aggregator, contract_id=data["contract"],
                                                   congestion_point=point).first()
            if contract is None:
                raise ApplicationError("Unknown contract reference.", code="unknown_contract", field="contract")
        options = [
            services.OfferOptionInput(
                option_reference=row.get("option_reference") or str(index + 1), price_eur=row["price_eur"],
                min_activation_factor=row["min_activation_factor"], isps=expand_powers(row["isps"]),
            )
            for index, row in enumerate(data["options"])
        ]
        actor, label = request_actor(request)
        origins = {f"options[{i}].isps": run_origins(row["isps"]) for i, row in enumerate(data["options"])}
        with input_positions(origins):
            offer = services.flex_offer_submit(
                aggregator=aggregator, congestion_point=point,
                period=data.get("period") or flex_request.period,  # type: ignore[union-attr]
                options=options, expires_at=data["expires_at"], flex_request=flex_request, d_prognosis=d_prognosis,
                contract=contract, currency=data["currency"], actor=actor, actor_label=label,
                **message_kwargs(data),
            )
        return Response(FlexOfferOutputSerializer(offer).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["market"], summary="Flex offers (mine, or on my points for a DSO)")
class FlexOfferListApi(ScopedListView):
    queryset = FlexOffer.objects.none()  # the model, for the schema; get_queryset scopes the rows
    serializer_class = FlexOfferOutputSerializer
    filterset_class = FlexOfferFilter

    def get_queryset(self) -> QuerySet[FlexOffer]:
        return visible_offers(self.participant)


@extend_schema(tags=["market"], summary="One flex offer")
class FlexOfferDetailApi(ScopedDetailView):
    serializer_class = FlexOfferOutputSerializer

    def get_queryset(self) -> QuerySet[FlexOffer]:
        return visible_offers(self.participant)


@extend_schema(tags=["audit"], summary="Audit trail of a flex offer")
class FlexOfferEventsApi(ObjectEventsView):
    def visible_objects(self) -> QuerySet[FlexOffer]:
        return visible_offers(self.participant)


@extend_schema(tags=["market"], summary="Revoke an offer that is not ordered yet (FlexOfferRevocation)",
               request=None, responses={200: FlexOfferOutputSerializer, 409: ERROR_RESPONSES[400], **ERROR_RESPONSES},
               parameters=[IDEMPOTENCY_PARAMETER])
class FlexOfferRevokeApi(AggregatorWrite):
    @idempotent
    def post(self, request: Request, pk: str) -> Response:
        aggregator = self.participant
        offer = get_object_or_404(selectors.flex_offers_for_aggregator(aggregator=aggregator), pk=pk)
        actor, label = request_actor(request)
        offer = services.flex_offer_revoke(flex_offer=offer, aggregator=aggregator, actor=actor, actor_label=label)
        return Response(FlexOfferOutputSerializer(offer).data)


class DsoOrderWrite(ScopedView):
    permission_classes = [IsDso, HasScope]
    required_scope = "orders:write"


class FlexOfferRejectApi(DsoOrderWrite):
    @extend_schema(tags=["market"], summary="Reject an offer (DSO)", request=None,
                   responses={200: FlexOfferOutputSerializer, 409: ERROR_RESPONSES[400], **ERROR_RESPONSES},
                   parameters=[IDEMPOTENCY_PARAMETER])
    @idempotent
    def post(self, request: Request, pk: str) -> Response:
        offer = get_object_or_404(selectors.flex_offers_for_dso(dso=self.participant), pk=pk)
        actor, label = request_actor(request)
        services.flex_offer_reject(flex_offer=offer, dso=self.participant, actor=actor, actor_label=label)
        offer.refresh_from_db()
        return Response(FlexOfferOutputSerializer(offer).data)
