"""DSO portal pages for settlement statements (mounted with the market portal pages under /portal/)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from market.views import dso_required, isp_label, portal_dso, w_to_kw
from settlement.models import OrderSettlement
from settlement.selectors import statements_for_participant


@dso_required
def statement_list(request: HttpRequest) -> HttpResponse:
    statements = statements_for_participant(participant=portal_dso(request))
    return render(request, "portal/statement_list.html", {"statements": statements})


@dataclass(frozen=True)
class SettlementLineView:
    label: str
    baseline_kw: Decimal
    measured_kw: Decimal
    ordered_kw: Decimal
    delivered_kw: Decimal
    paid_eur: Decimal


@dataclass(frozen=True)
class OrderSettlementView:
    settlement: OrderSettlement
    lines: list[SettlementLineView]


@dso_required
def statement_detail(request: HttpRequest, pk: UUID) -> HttpResponse:
    """A statement: each settled order with its per-ISP lines (baseline, measured, ordered, delivered, paid)."""
    statement = get_object_or_404(statements_for_participant(participant=portal_dso(request)), pk=pk)
    settlements = [
        OrderSettlementView(
            settlement=item,
            lines=[
                SettlementLineView(
                    label=isp_label(item.flex_order.period, line.isp),
                    baseline_kw=w_to_kw(line.baseline_w),
                    measured_kw=w_to_kw(line.measured_w),
                    ordered_kw=w_to_kw(line.ordered_w),
                    delivered_kw=w_to_kw(line.delivered_w),
                    paid_eur=line.paid_eur,
                )
                for line in item.lines.all()
            ],
        )
        for item in statement.order_settlements.all()
    ]
    return render(request, "portal/statement_detail.html", {"statement": statement, "settlements": settlements})
