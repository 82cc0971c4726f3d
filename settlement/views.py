"""DSO portal pages for settlement statements (mounted with the market portal pages under /portal/): the list,
one version with its lines, disputes and their resolution, exports (FlexSettlement XML, CSV) and a printable
page (the API serves the same printable page to the aggregator)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from common.exceptions import ApplicationError
from market.views import dso_required, isp_label, portal_dso, w_to_kw
from settlement.models import Dispute, OrderSettlement, Statement
from settlement.selectors import disputes_for_participant, statements_for_participant
from settlement.services.disputes import dispute_resolve
from settlement.services.exports import flex_settlement_xml, statement_csv


@dso_required
def statement_list(request: HttpRequest) -> HttpResponse:
    statements = statements_for_participant(participant=portal_dso(request)).prefetch_related(None)
    return render(request, "portal/statement_list.html", {"statements": statements})


@dataclass(frozen=True)
class SettlementLineView:
    label: str
    isp: int
    baseline_kw: Decimal
    measured_kw: Decimal
    ordered_kw: Decimal
    delivered_kw: Decimal
    deficiency_kw: Decimal
    payment_eur: Decimal
    penalty_eur: Decimal
    paid_eur: Decimal


@dataclass(frozen=True)
class OrderSettlementView:
    settlement: OrderSettlement
    lines: list[SettlementLineView]


def _settlement_views(statement: Statement) -> list[OrderSettlementView]:
    return [
        OrderSettlementView(
            settlement=item,
            lines=[
                SettlementLineView(
                    label=isp_label(item.flex_order.period, line.isp), isp=line.isp,
                    baseline_kw=w_to_kw(line.baseline_w), measured_kw=w_to_kw(line.measured_w),
                    ordered_kw=w_to_kw(line.ordered_w), delivered_kw=w_to_kw(line.delivered_w),
                    deficiency_kw=w_to_kw(line.deficiency_w), payment_eur=line.payment_eur,
                    penalty_eur=line.penalty_eur, paid_eur=line.paid_eur,
                )
                for line in item.lines.all()
            ],
        )
        for item in statement.order_settlements.all()
    ]


def statement_print_context(statement: Statement) -> dict[str, Any]:
    """What the printable statement shows (portal and API alike)."""
    return {"statement": statement, "settlements": _settlement_views(statement),
            "ledger": getattr(statement, "ledger_entry", None)}


def _versions(statement: Statement) -> list[Statement]:
    return list(Statement.objects.filter(dso=statement.dso_id, aggregator=statement.aggregator_id,
                                         period_start=statement.period_start, period_end=statement.period_end)
                .order_by("-version"))


@dso_required
def statement_detail(request: HttpRequest, pk: UUID) -> HttpResponse:
    """A statement version: each settled order with its per-ISP lines, the disputes, versions and exports."""
    dso = portal_dso(request)
    statement = get_object_or_404(statements_for_participant(participant=dso), pk=pk)
    disputes = list(disputes_for_participant(participant=dso).filter(
        statement__period_start=statement.period_start, statement__period_end=statement.period_end,
        statement__aggregator=statement.aggregator_id))
    return render(request, "portal/statement_detail.html", {
        **statement_print_context(statement), "disputes": disputes, "versions": _versions(statement),
        "is_current": statement.status == Statement.Status.ISSUED,
    })


@dso_required
def statement_print(request: HttpRequest, pk: UUID) -> HttpResponse:
    statement = get_object_or_404(statements_for_participant(participant=portal_dso(request)), pk=pk)
    return render(request, "settlement/statement_print.html", statement_print_context(statement))


def _download(content: bytes | str, content_type: str, statement: Statement, extension: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = (
        f'attachment; filename="statement-{statement.aggregator.domain}-{statement.period_start:%Y-%m}'
        f'-v{statement.version}.{extension}"')
    return response


@dso_required
def statement_export_xml(request: HttpRequest, pk: UUID) -> HttpResponse:
    statement = get_object_or_404(statements_for_participant(participant=portal_dso(request)).prefetch_related(None),
                                  pk=pk)
    return _download(flex_settlement_xml(statement), "application/xml; charset=utf-8", statement, "xml")


@dso_required
def statement_export_csv(request: HttpRequest, pk: UUID) -> HttpResponse:
    statement = get_object_or_404(statements_for_participant(participant=portal_dso(request)).prefetch_related(None),
                                  pk=pk)
    return _download(statement_csv(statement), "text/csv; charset=utf-8", statement, "csv")


@dso_required
@require_POST
def dispute_resolve_view(request: HttpRequest, pk: UUID) -> HttpResponse:
    """Accept (with the corrected amount of the line) or reject (with a reason) an open dispute."""
    dso = portal_dso(request)
    dispute: Dispute = get_object_or_404(disputes_for_participant(participant=dso), pk=pk)
    decision = request.POST.get("decision", "")
    amount_text = request.POST.get("corrected_amount_eur", "").strip()
    try:
        if decision not in ("accept", "reject"):
            raise ApplicationError("Choose accept or reject.", code="invalid", field="decision")
        try:
            amount = Decimal(amount_text) if amount_text else None
        except InvalidOperation as exc:
            raise ApplicationError("The corrected amount is not a number.", code="invalid",
                                   field="corrected_amount_eur") from exc
        user = request.user if request.user.is_authenticated else None
        dispute = dispute_resolve(dispute=dispute, dso=dso, accept=decision == "accept",
                                  reason=request.POST.get("reason", ""), corrected_amount_eur=amount, actor=user)
    except ApplicationError as error:
        messages.error(request, f"The dispute was not resolved: {error.message}")
        return redirect("portal:statement-detail", pk=dispute.statement_id)
    messages.success(request, f"Dispute {dispute.status}; version {dispute.resolution_statement.version} of the "
                              f"statement was issued." if dispute.resolution_statement else "Dispute resolved.")
    return redirect("portal:statement-detail", pk=dispute.resolution_statement_id or dispute.statement_id)
