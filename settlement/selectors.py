"""Reads of settlement data, scoped to the participant asking."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from market.models import Participant
from settlement.models import OrderSettlement, SettlementLine, Statement


def _with_lines(queryset: QuerySet[Statement]) -> QuerySet[Statement]:
    return queryset.select_related("dso", "aggregator").prefetch_related(
        Prefetch(
            "order_settlements",
            queryset=OrderSettlement.objects.select_related("flex_order", "flex_order__congestion_point").prefetch_related(
                Prefetch("lines", queryset=SettlementLine.objects.order_by("isp"))
            ),
        )
    )


def statements_for_participant(*, participant: Participant) -> QuerySet[Statement]:
    """Statements a participant may read: as the paying DSO or as the paid aggregator."""
    if participant.role == Participant.Role.DSO:
        queryset = Statement.objects.filter(dso=participant)
    elif participant.role == Participant.Role.AGR:
        queryset = Statement.objects.filter(aggregator=participant)
    else:
        queryset = Statement.objects.none()
    return _with_lines(queryset).order_by("-period_start", "-version")
