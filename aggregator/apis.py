"""The aggregator API (/api/v1/aggregator/): our drivers' standing preferences, our charging sessions and the
driver's boost button. Aggregators only, each seeing its own drivers and sessions (another aggregator gets 404)."""

from __future__ import annotations

from typing import Any, ClassVar

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from aggregator import selectors, services
from aggregator.models import ChargingSession, Driver, SessionSchedule
from common.api import ERROR_RESPONSES, AwareDateTimeField
from common.idempotency import idempotent
from market.apis._shared import IDEMPOTENCY_PARAMETER
from market.filters import AwareIsoDateTimeFilter
from market.models import Participant
from market.permissions import HasScope, IsAggregator, request_actor, request_participant

READ_SCOPE = "portfolio:read"
WRITE_SCOPE = "drivers:write"


# --- serializers --------------------------------------------------------------------------------------


class DriverOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    reference = serializers.CharField()
    usual_departure_time = serializers.TimeField(allow_null=True, format="%H:%M",
                                                 help_text="Local time (Europe/Amsterdam).")
    min_energy_kwh = serializers.DecimalField(max_digits=6, decimal_places=2, allow_null=True)
    min_energy_by_time = serializers.TimeField(allow_null=True, format="%H:%M",
                                               help_text="Local time (Europe/Amsterdam).")
    flex_opt_out = serializers.BooleanField()
    v2g_allowed = serializers.BooleanField()
    battery_capacity_kwh = serializers.DecimalField(max_digits=6, decimal_places=2, allow_null=True)
    token_uids = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_token_uids(self, driver: Driver) -> list[str]:
        return sorted(token.uid for token in driver.tokens.all())


class DriverPreferencesInputSerializer(serializers.Serializer):
    usual_departure_time = serializers.TimeField(required=False, allow_null=True, help_text=(
        "Local time (Europe/Amsterdam) the car usually leaves, HH:MM; used when a session arrives without one."))
    min_energy_kwh = serializers.DecimalField(max_digits=6, decimal_places=2, min_value=0, required=False,  # type: ignore[arg-type]
                                              allow_null=True, help_text="Energy needed by min_energy_by_time.")
    min_energy_by_time = serializers.TimeField(required=False, allow_null=True,
                                               help_text="Local time (Europe/Amsterdam), HH:MM.")
    flex_opt_out = serializers.BooleanField(required=False, help_text="Every session charges uncontrolled.")
    v2g_allowed = serializers.BooleanField(required=False, help_text="Consent to discharge a V2G-capable car.")
    battery_capacity_kwh = serializers.DecimalField(max_digits=6, decimal_places=2, min_value=1, required=False,  # type: ignore[arg-type]
                                                    allow_null=True)
    token_uids = serializers.ListField(child=serializers.CharField(max_length=36), required=False,
                                       help_text="OCPI token uids / contract ids to add (case-insensitive).")

    class Meta:
        ref_name = "DriverPreferences"


class DriverCreateInputSerializer(DriverPreferencesInputSerializer):
    reference = serializers.CharField(max_length=100, help_text="Your own id for the driver (no personal data).")

    class Meta:
        ref_name = "DriverCreate"


class ScheduleOutputSerializer(serializers.Serializer):
    start = serializers.DateTimeField(help_text="Start of the first 15-minute slot.")
    slot_power_w = serializers.ListField(child=serializers.IntegerField(), help_text="Average W per slot.")
    planned_energy_kwh = serializers.DecimalField(max_digits=7, decimal_places=3)
    shortfall_kwh = serializers.DecimalField(max_digits=7, decimal_places=3)
    created_at = serializers.DateTimeField()


class SessionOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    cpo_session_id = serializers.CharField()
    evse_uid = serializers.CharField(source="charge_point.evse_uid")
    congestion_point = serializers.CharField(source="charge_point.connection.congestion_point.ean")
    driver = serializers.UUIDField(source="driver_id", allow_null=True)
    status = serializers.CharField()
    arrival_at = serializers.DateTimeField()
    expected_departure_at = serializers.DateTimeField()
    departure_source = serializers.CharField(help_text="MEASURED, DRIVER, HISTORY or POPULATION (the last two are "
                                             "estimates).")
    energy_requested_kwh = serializers.DecimalField(max_digits=7, decimal_places=3)
    energy_source = serializers.CharField()
    estimated = serializers.ListField(source="estimated_values", child=serializers.CharField(),
                                      help_text="Which planning values are estimates.")
    battery_capacity_kwh = serializers.DecimalField(max_digits=6, decimal_places=2, allow_null=True)
    arrival_soc_pct = serializers.DecimalField(max_digits=5, decimal_places=2, allow_null=True)
    target_soc_pct = serializers.DecimalField(max_digits=5, decimal_places=2, allow_null=True)
    max_power_w = serializers.IntegerField()
    min_power_w = serializers.IntegerField(help_text="0 or at least this while charging (IEC 61851 min current).")
    phases = serializers.IntegerField(source="charging_phases")
    min_current_a = serializers.DecimalField(max_digits=4, decimal_places=1)
    v2g_capable = serializers.BooleanField()
    max_discharge_power_w = serializers.IntegerField()
    v2g_min_soc_pct = serializers.DecimalField(max_digits=5, decimal_places=2, allow_null=True)
    min_energy_kwh = serializers.DecimalField(max_digits=7, decimal_places=3, allow_null=True)
    min_energy_by = serializers.DateTimeField(allow_null=True)
    flexible = serializers.BooleanField(source="is_flexible")
    flex_opt_out = serializers.BooleanField()
    boosted_at = serializers.DateTimeField(allow_null=True)
    energy_delivered_kwh = serializers.DecimalField(max_digits=7, decimal_places=3, allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class SessionDetailOutputSerializer(SessionOutputSerializer):
    schedule = serializers.SerializerMethodField(help_text="The current plan, if one was made.")

    @extend_schema_field(ScheduleOutputSerializer(allow_null=True))
    def get_schedule(self, session: ChargingSession) -> dict[str, Any] | None:
        schedule = SessionSchedule.objects.filter(session=session, is_current=True).first()
        return dict(ScheduleOutputSerializer(schedule).data) if schedule is not None else None


# --- filters ------------------------------------------------------------------------------------------


class DriverFilter(django_filters.FilterSet):
    reference = django_filters.CharFilter(help_text="Exactly this reference.")
    flex_opt_out = django_filters.BooleanFilter(help_text="Only drivers who opted out (true) or not (false).")
    token_uid = django_filters.CharFilter(method="filter_token", help_text="The driver holding this token uid.")
    updated_since = AwareIsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")

    class Meta:
        model = Driver
        fields: list[str] = []

    def filter_token(self, queryset: QuerySet[Driver], name: str, value: str) -> QuerySet[Driver]:
        return queryset.filter(tokens__uid=value.strip().upper())


class SessionFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=ChargingSession.Status.choices)
    driver = django_filters.UUIDFilter(field_name="driver_id")
    congestion_point = django_filters.CharFilter(field_name="charge_point__connection__congestion_point__ean",
                                                 help_text="EAN-18 of the congestion point.")
    cpo_session_id = django_filters.CharFilter(lookup_expr="iexact")
    arrival_after = AwareIsoDateTimeFilter(field_name="arrival_at", lookup_expr="gte")
    arrival_before = AwareIsoDateTimeFilter(field_name="arrival_at", lookup_expr="lt")
    boosted = django_filters.BooleanFilter(field_name="boosted_at", lookup_expr="isnull", exclude=True,
                                           help_text="Only boosted sessions (true) or not (false).")
    updated_since = AwareIsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")

    class Meta:
        model = ChargingSession
        fields: list[str] = []


# --- views --------------------------------------------------------------------------------------------


class AggregatorView(generics.GenericAPIView):
    """Caller must be an active aggregator holding `required_scope`; rows are its own only."""

    permission_classes = [IsAggregator, HasScope]
    required_scope = READ_SCOPE

    @property
    def participant(self) -> Participant:
        return request_participant(self.request)

    def drivers(self) -> QuerySet[Driver]:
        return selectors.drivers_of(aggregator=self.participant)

    def sessions(self) -> QuerySet[ChargingSession]:
        return selectors.sessions_of(aggregator=self.participant)


class AggregatorListView(AggregatorView, generics.ListAPIView):
    ordering_fields: ClassVar[list[str]] = ["created_at", "updated_at"]
    ordering = "-created_at"


DRIVER_EXAMPLE = {
    "reference": "EMSP-000123", "usual_departure_time": "07:30", "min_energy_kwh": "15.00",
    "min_energy_by_time": "07:00", "flex_opt_out": False, "v2g_allowed": False, "battery_capacity_kwh": "58.00",
    "token_uids": ["NL-FLX-C12345678-X"],
}


@extend_schema(tags=["drivers"], summary="My drivers and their standing preferences")
class DriverListApi(AggregatorListView):
    queryset = Driver.objects.none()  # the model, for the schema; get_queryset scopes the rows
    serializer_class = DriverOutputSerializer
    filterset_class = DriverFilter

    def get_queryset(self) -> QuerySet[Driver]:
        return self.drivers()


@extend_schema(tags=["drivers"], summary="One driver")
class DriverDetailApi(AggregatorView, generics.RetrieveAPIView):
    serializer_class = DriverOutputSerializer

    def get_queryset(self) -> QuerySet[Driver]:
        return self.drivers()


def _preferences(data: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in data.items() if name in services.DRIVER_PREFERENCE_FIELDS}


@extend_schema(
    tags=["drivers"], summary="Register a driver with preferences set once for every session",
    description="The token uids (OCPI Token.uid or contract id) link the driver's sessions to these preferences. "
                "Errors: duplicate_reference, token_in_use, invalid_token, invalid_preferences.",
    request=DriverCreateInputSerializer, responses={201: DriverOutputSerializer, **ERROR_RESPONSES},
    parameters=[IDEMPOTENCY_PARAMETER],
    examples=[OpenApiExample("Commuter: 15 kWh by 07:00, usually leaves 07:30", request_only=True,
                             value=DRIVER_EXAMPLE)],
)
class DriverCreateApi(AggregatorView):
    required_scope = WRITE_SCOPE

    @idempotent
    def post(self, request: Request) -> Response:
        serializer = DriverCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        actor, label = request_actor(request)
        driver = services.driver_create(aggregator=self.participant, reference=data["reference"],
                                        token_uids=data.get("token_uids"), actor=actor, actor_label=label,
                                        **_preferences(data))
        return Response(DriverOutputSerializer(driver).data, status=status.HTTP_201_CREATED)


@extend_schema(
    tags=["drivers"], summary="Change a driver's preferences (only the fields given) or add tokens",
    description="Applies to the driver's open sessions too (opt-out, minimum energy, usual departure replacing "
                "an estimate) and re-optimises each affected congestion point. Send null to clear a value. "
                "Errors: invalid_preferences, token_in_use, invalid_token.",
    request=DriverPreferencesInputSerializer, responses={200: DriverOutputSerializer, **ERROR_RESPONSES},
    parameters=[IDEMPOTENCY_PARAMETER],
    examples=[OpenApiExample("Opt out of smart charging", request_only=True, value={"flex_opt_out": True}),
              OpenApiExample("Need 20 kWh by 06:30", request_only=True,
                             value={"min_energy_kwh": "20.00", "min_energy_by_time": "06:30"})],
)
class DriverPreferencesApi(AggregatorView):
    required_scope = WRITE_SCOPE

    @idempotent
    def post(self, request: Request, pk: str) -> Response:
        driver = get_object_or_404(self.drivers(), pk=pk)
        serializer = DriverPreferencesInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        actor, label = request_actor(request)
        driver = services.driver_preferences_update(driver=driver, changes=_preferences(data),
                                                    token_uids=data.get("token_uids"), actor=actor,
                                                    actor_label=label)
        return Response(DriverOutputSerializer(driver).data)


@extend_schema(tags=["sessions"], summary="My charging sessions, with which values are estimates")
class SessionListApi(AggregatorListView):
    queryset = ChargingSession.objects.none()  # the model, for the schema; get_queryset scopes the rows
    serializer_class = SessionOutputSerializer
    filterset_class = SessionFilter
    ordering_fields: ClassVar[list[str]] = ["created_at", "updated_at", "arrival_at"]

    def get_queryset(self) -> QuerySet[ChargingSession]:
        return self.sessions()


@extend_schema(tags=["sessions"], summary="One charging session with its current plan")
class SessionDetailApi(AggregatorView, generics.RetrieveAPIView):
    serializer_class = SessionDetailOutputSerializer

    def get_queryset(self) -> QuerySet[ChargingSession]:
        return self.sessions()


class SessionTargetsInputSerializer(serializers.Serializer):
    expected_departure_at = AwareDateTimeField(required=False, help_text="When the car leaves (with UTC offset).")
    energy_requested_kwh = serializers.DecimalField(max_digits=7, decimal_places=3, min_value=0,  # type: ignore[arg-type]
                                                    required=False, help_text="Energy wanted by departure, kWh.")
    target_soc_pct = serializers.DecimalField(max_digits=5, decimal_places=2, min_value=0, max_value=100,  # type: ignore[arg-type]
                                              required=False, help_text="Or: the state of charge wanted, %.")
    arrival_soc_pct = serializers.DecimalField(max_digits=5, decimal_places=2, min_value=0, max_value=100,  # type: ignore[arg-type]
                                               required=False, help_text="State of charge at arrival, % (for SoC).")
    battery_capacity_kwh = serializers.DecimalField(max_digits=6, decimal_places=2, min_value=1,  # type: ignore[arg-type]
                                                    required=False)

    class Meta:
        ref_name = "SessionTargets"

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError({"expected_departure_at": "Give a departure, an energy or a target."})
        return attrs


@extend_schema(
    tags=["sessions"], summary="The driver sets this session's departure and/or energy (kWh or target SoC)",
    description="Given values replace estimates and the session's congestion point is re-optimised. Errors: "
                "session_not_open (409), departure_in_past, soc_incomplete, energy_twice, invalid_session.",
    request=SessionTargetsInputSerializer,
    responses={200: SessionOutputSerializer, 409: ERROR_RESPONSES[400], **ERROR_RESPONSES},
    parameters=[IDEMPOTENCY_PARAMETER],
    examples=[OpenApiExample("Leaving at 07:15 with 80 %", request_only=True, value={
        "expected_departure_at": "2026-11-27T07:15:00+01:00", "target_soc_pct": "80", "arrival_soc_pct": "35",
        "battery_capacity_kwh": "64"})],
)
class SessionTargetsApi(AggregatorView):
    required_scope = WRITE_SCOPE

    @idempotent
    def post(self, request: Request, pk: str) -> Response:
        session = get_object_or_404(self.sessions(), pk=pk)
        serializer = SessionTargetsInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        actor, label = request_actor(request)
        session = services.charging_session_targets_set(session=session, actor=actor, actor_label=label,
                                                        **serializer.validated_data)
        return Response(SessionOutputSerializer(self.sessions().get(pk=session.pk)).data)


@extend_schema(
    tags=["sessions"], summary="Boost: take the session out of flexibility and charge at full power now",
    description="Re-optimises and re-dispatches the session's congestion point (asynchronously, within seconds). "
                "Pressing it again changes nothing. Errors: session_not_open (409) once the car has left.",
    request=None, responses={200: SessionOutputSerializer, 409: ERROR_RESPONSES[400], **ERROR_RESPONSES},
    parameters=[IDEMPOTENCY_PARAMETER],
)
class SessionBoostApi(AggregatorView):
    required_scope = WRITE_SCOPE

    @idempotent
    def post(self, request: Request, pk: str) -> Response:
        session = get_object_or_404(self.sessions(), pk=pk)
        actor, label = request_actor(request)
        session = services.charging_session_boost(session=session, actor=actor, actor_label=label)
        return Response(SessionOutputSerializer(selectors.sessions_of(aggregator=self.participant).get(
            pk=session.pk)).data)

