"""What every bidding-API view shares: ISP input shapes, output serializers, base list/detail views."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.fields import empty
from rest_framework.settings import api_settings

from common.api import ERROR_RESPONSES, AwareDateTimeField  # noqa: F401  (re-exported for the views)
from common.audit import audit_trail
from common.exceptions import ApplicationError
from common.models import AuditEvent
from market.models import CongestionPoint, Participant
from market.permissions import HasScope, IsMarketParticipant, request_participant
from market.services import IspBand, IspPower

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="Any unique string (e.g. a UUID). A retry with the same key returns the first result "
                "(header Idempotent-Replayed: true) instead of acting twice; kept 24 h.",
)


# --- input --------------------------------------------------------------------------------------------


class MessageInputSerializer(serializers.Serializer):
    """UFTP message identity and the market constants it repeats (all optional)."""

    message_id = serializers.UUIDField(required=False, help_text="Your UUID for this message; resending it with "
                                       "the same content returns the first result, other content is refused.")
    isp_duration = serializers.CharField(required=False, help_text="If given, must be this market's (PT15M).")
    time_zone = serializers.CharField(required=False, help_text="If given, must be Europe/Amsterdam.")


class IspPowerInputSerializer(serializers.Serializer):
    isp = serializers.IntegerField(min_value=1, help_text="1-based ISP of the market day (92/96/100 per day).")
    duration = serializers.IntegerField(min_value=1, default=1, help_text="ISPs covered from `isp` (UFTP Duration).")
    power_w = serializers.IntegerField(help_text="Average power over each ISP in W; negative = less consumption.")


@extend_schema_field(IspPowerInputSerializer(many=True))
class IspPowerRunsField(serializers.Field):
    """A list of IspPowerInputSerializer rows, validated by the same field objects but without a nested serializer.

    Offers and prognoses carry dozens of rows; DRF's nested ListSerializer deep-copies its fields and builds
    ordered dicts per row, which cost a fifth of an offer submission. The result and the error structure
    (the failing rows by index, {index: {field: [errors]}}) are those of `IspPowerInputSerializer(many=True)`; a test
    compares both on good and bad input.
    """

    _row_fields = (
        ("isp", IspPowerInputSerializer._declared_fields["isp"]),
        ("duration", IspPowerInputSerializer._declared_fields["duration"]),
        ("power_w", IspPowerInputSerializer._declared_fields["power_w"]),
    )
    default_error_messages = {
        "not_a_list": serializers.ListSerializer.default_error_messages["not_a_list"],
        "not_a_dict": serializers.Serializer.default_error_messages["invalid"],
    }

    def to_internal_value(self, data: Any) -> list[dict[str, Any]]:
        non_field = api_settings.NON_FIELD_ERRORS_KEY
        if not isinstance(data, list):
            message = self.error_messages["not_a_list"].format(input_type=type(data).__name__)
            raise serializers.ValidationError({non_field: [ErrorDetail(message, code="not_a_list")]})
        rows: list[dict[str, Any]] = []
        errors: dict[int, Any] = {}
        for index, item in enumerate(data):
            if not isinstance(item, Mapping):
                message = self.error_messages["not_a_dict"].format(datatype=type(item).__name__)
                errors[index] = {non_field: [ErrorDetail(message, code="invalid")]}
                continue
            isp, duration, power_w = item.get("isp"), item.get("duration", 1), item.get("power_w")
            # The usual row: three JSON integers in range, which the fields would return as they are.
            if (type(isp) is int and type(duration) is int and type(power_w) is int  # noqa: E721 - bool is no int here
                    and isp >= 1 and duration >= 1):
                rows.append({"isp": isp, "duration": duration, "power_w": power_w})
                continue
            row: dict[str, Any] = {}
            row_errors: dict[str, Any] = {}
            for name, field in self._row_fields:
                try:
                    row[name] = field.run_validation(item.get(name, empty))
                except serializers.ValidationError as exc:
                    row_errors[name] = exc.detail
            if row_errors:
                errors[index] = row_errors
            rows.append(row)
        if errors:
            if not getattr(api_settings, "LIST_SERIALIZER_ERRORS_AS_DICT", False):
                raise serializers.ValidationError([errors.get(index, {}) for index in range(len(data))])
            raise serializers.ValidationError(errors)  # type: ignore[arg-type]  # DRF's own list errors are keyed by index
        return rows

    def to_representation(self, value: Any) -> Any:
        return value


class IspBandInputSerializer(serializers.Serializer):
    isp = serializers.IntegerField(min_value=1)
    duration = serializers.IntegerField(min_value=1, default=1)
    disposition = serializers.ChoiceField(choices=["Requested", "Available"])
    min_power_w = serializers.IntegerField()
    max_power_w = serializers.IntegerField()


def expand_powers(rows: list[dict[str, Any]]) -> list[IspPower]:
    """UFTP ISP runs (start, duration) -> one row per ISP; overlaps surface as isp_conflict in the services."""
    return [IspPower(isp=row["isp"] + offset, power_w=row["power_w"]) for row in rows
            for offset in range(row.get("duration", 1))]


def expand_bands(rows: list[dict[str, Any]]) -> list[IspBand]:
    return [IspBand(isp=row["isp"] + offset, disposition=row["disposition"], min_power_w=row["min_power_w"],
                    max_power_w=row["max_power_w"]) for row in rows for offset in range(row.get("duration", 1))]


def run_origins(rows: list[dict[str, Any]]) -> list[int]:
    """For each expanded ISP row, the position of the input row (run) it came from."""
    return [position for position, row in enumerate(rows) for _ in range(row.get("duration", 1))]


_ISP_FIELD = re.compile(r"^(?P<list>(?:options\[\d+\]\.)?isps)\[(?P<index>\d+)\](?P<rest>.*)$")


@contextmanager
def input_positions(origins: dict[str, list[int]]) -> Iterator[None]:
    """Services name fields by the expanded one-row-per-ISP list; the client wrote runs. Rewrite the field of
    a refusal (e.g. isps[4].isp -> isps[1].isp) so it points at the row the client sent."""
    try:
        yield
    except ApplicationError as error:
        match = _ISP_FIELD.match(error.field or "")
        if match and match["list"] in origins and int(match["index"]) < len(origins[match["list"]]):
            error.field = f"{match['list']}[{origins[match['list']][int(match['index'])]}]{match['rest']}"
        raise


def message_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    return {"message_id": data.get("message_id"), "isp_duration": data.get("isp_duration"),
            "time_zone": data.get("time_zone")}


def congestion_point_by_ean(ean: str) -> CongestionPoint:
    point = CongestionPoint.objects.select_related("market", "dso").filter(ean=ean).first()
    if point is None:
        raise ApplicationError(f"Unknown congestion point {ean}.", code="unknown_congestion_point",
                               field="congestion_point")
    return point


def visible_or_unknown(queryset: QuerySet[Any], pk: Any, *, field: str) -> Any:
    """A referenced object the caller may see, else the same answer whether it is foreign or absent."""
    obj = queryset.filter(pk=pk).first()
    if obj is None:
        raise ApplicationError(f"Unknown {field} reference.", code="unknown_reference", field=field)
    return obj


# --- output -------------------------------------------------------------------------------------------


class IspPowerSerializer(serializers.Serializer):
    isp = serializers.IntegerField()
    power_w = serializers.IntegerField()


class IspBandOutputSerializer(serializers.Serializer):
    isp = serializers.IntegerField()
    disposition = serializers.CharField()
    min_power_w = serializers.IntegerField()
    max_power_w = serializers.IntegerField()


class AuditEventOutputSerializer(serializers.Serializer):
    occurred_at = serializers.DateTimeField()
    action = serializers.CharField()
    who = serializers.SerializerMethodField(help_text="A person or key of your organisation by name; anyone else "
                                            "by their organisation's domain.")
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)

    def get_who(self, event: AuditEvent) -> str:
        """Names stay inside their organisation: the other side of a trade sees the organisation, not the person."""
        viewer: Participant = self.context["participant"]
        if event.actor_id:
            participant = event.actor.participant if event.actor else None
            if participant is not None and participant.pk == viewer.pk:
                return str(event.actor)
            return participant.domain if participant is not None else "platform operator"
        label = event.actor_label or "system"
        if label.startswith("api-key:"):
            domain = label.split(":")[1]
            return label if domain == viewer.domain else domain
        return label


# --- base views ---------------------------------------------------------------------------------------


class ScopedView(generics.GenericAPIView):
    """Caller must be an active DSO or aggregator holding `required_scope`."""

    permission_classes = [IsMarketParticipant, HasScope]
    required_scope = "market:read"

    @property
    def participant(self) -> Participant:
        return request_participant(self.request)


class ScopedListView(ScopedView, generics.ListAPIView):
    ordering_fields: ClassVar[list[str]] = ["created_at", "updated_at"]
    ordering = "-created_at"


class ScopedDetailView(ScopedView, generics.RetrieveAPIView):
    lookup_field = "pk"


class ObjectEventsView(ScopedView, generics.ListAPIView):
    """The audit trail of one object the caller can see (who, what, when, before, after)."""

    serializer_class = AuditEventOutputSerializer
    filter_backends = []  # type: ignore[assignment]
    pagination_class = None

    def visible_objects(self) -> QuerySet[Any]:
        raise NotImplementedError(".visible_objects() must be overridden")

    def get_queryset(self) -> QuerySet[AuditEvent]:
        obj = generics.get_object_or_404(self.visible_objects(), pk=self.kwargs["pk"])
        return audit_trail(obj).select_related("actor__participant").order_by("occurred_at", "id")

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "participant": self.participant}
