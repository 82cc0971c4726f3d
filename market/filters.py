"""django-filter FilterSets for the API lists: status, market day (range), congestion point, updated_since."""

from __future__ import annotations

from typing import Any

import django_filters
from django.forms import ValidationError
from django_filters.fields import IsoDateTimeField

from common.api import has_utc_offset
from common.models import AuditEvent
from market.models import (
    ApiKey,
    CongestionPoint,
    DPrognosis,
    FlexContract,
    FlexOffer,
    FlexOrder,
    FlexRequest,
    FlexReservationUpdate,
)


class AwareIsoDateTimeField(IsoDateTimeField):
    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and value and not has_utc_offset(value):
            raise ValidationError("Give the time with a UTC offset, e.g. 2026-11-26T17:00:00+01:00.", code="naive")
        return super().to_python(value)


class AwareIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """ISO-8601 with a UTC offset only: a naive time is ambiguous around DST and is refused."""

    field_class = AwareIsoDateTimeField


class MessageFilter(django_filters.FilterSet):
    status = django_filters.CharFilter(help_text="Only objects in this status.")
    period = django_filters.DateFilter(help_text="Only this market day (YYYY-MM-DD).")
    period_after = django_filters.DateFilter(field_name="period", lookup_expr="gte", help_text="Market day from.")
    period_before = django_filters.DateFilter(field_name="period", lookup_expr="lte", help_text="Market day until.")
    congestion_point = django_filters.CharFilter(field_name="congestion_point__ean",
                                                 help_text="Only this congestion point (EAN-18).")
    updated_since = AwareIsoDateTimeFilter(field_name="updated_at", lookup_expr="gte",
                                           help_text="Changed at or after this time (poll with ordering=updated_at).")


class FlexRequestFilter(MessageFilter):
    conversation_id = django_filters.UUIDFilter(help_text="All revisions of one request.")

    class Meta:
        model = FlexRequest
        fields: list[str] = []


class DPrognosisFilter(MessageFilter):
    class Meta:
        model = DPrognosis
        fields: list[str] = []


class FlexOfferFilter(MessageFilter):
    flex_request = django_filters.UUIDFilter(field_name="flex_request_id", help_text="Offers answering this request.")
    aggregator = django_filters.CharFilter(field_name="aggregator__domain", help_text="Aggregator's domain (DSO view).")

    class Meta:
        model = FlexOffer
        fields: list[str] = []


class FlexOrderFilter(MessageFilter):
    aggregator = django_filters.CharFilter(field_name="aggregator__domain", help_text="Aggregator's domain (DSO view).")
    order_reference = django_filters.CharFilter()

    class Meta:
        model = FlexOrder
        fields: list[str] = []


class ReservationUpdateFilter(MessageFilter):
    contract = django_filters.CharFilter(field_name="contract__contract_id")

    class Meta:
        model = FlexReservationUpdate
        fields: list[str] = []


class CongestionPointFilter(django_filters.FilterSet):
    ean = django_filters.CharFilter()
    name = django_filters.CharFilter(lookup_expr="icontains")
    updated_since = AwareIsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")

    class Meta:
        model = CongestionPoint
        fields: list[str] = []


class FlexContractFilter(django_filters.FilterSet):
    contract_id = django_filters.CharFilter()
    congestion_point = django_filters.CharFilter(field_name="congestion_point__ean")
    is_active = django_filters.BooleanFilter()
    updated_since = AwareIsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")

    class Meta:
        model = FlexContract
        fields: list[str] = []


class ApiKeyFilter(django_filters.FilterSet):
    revoked = django_filters.BooleanFilter(field_name="revoked_at", lookup_expr="isnull", exclude=True,
                                           help_text="true: only revoked keys; false: only live ones.")
    name = django_filters.CharFilter()

    class Meta:
        model = ApiKey
        fields: list[str] = []


class AuditEventFilter(django_filters.FilterSet):
    since = AwareIsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    action = django_filters.CharFilter()

    class Meta:
        model = AuditEvent
        fields: list[str] = []
