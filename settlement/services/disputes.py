"""Disputes: an aggregator contests one ISP line of an order settlement in its current statement; the DSO
accepts it with a corrected amount or rejects it with a reason. Either resolution issues a new statement
version (which carries the resolution in its ledger document); an accepted one also changes that line's net
amount to the corrected amount. Every step is one transaction with an audit event."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction

from common import time as clock
from common.audit import audit_record
from common.exceptions import ApplicationError
from market.models import Participant
from settlement.models import Dispute, SettlementLine, Statement
from settlement.services.settle import serialise_on, statement_version_issue

MAX_AMOUNT = Decimal("1000000000")


def _lock(statement: Statement) -> None:
    serialise_on(f"settlement.statement:{statement.dso_id}:{statement.aggregator_id}:{statement.period_start}:"
                 f"{statement.period_end}")


def _current(statement: Statement) -> Statement:
    _lock(statement)
    latest = (Statement.objects.select_for_update()
              .filter(dso=statement.dso_id, aggregator=statement.aggregator_id, period_start=statement.period_start,
                      period_end=statement.period_end).order_by("-version").first())
    if latest is None or latest.pk != statement.pk or latest.status != Statement.Status.ISSUED:
        raise ApplicationError("Only the current version of a statement can be disputed; a newer version exists.",
                               code="statement_superseded", field="statement")
    return latest


@transaction.atomic
def dispute_open(*, statement: Statement, aggregator: Participant, order_reference: str, isp: int, reason: str,
                 claimed_amount_eur: Decimal | None = None, actor: Any = None, actor_label: str = "") -> Dispute:
    """The aggregator disputes the line of `order_reference`, ISP `isp`, in the current version of `statement`."""
    if statement.aggregator_id != aggregator.pk:
        raise ApplicationError("Not found.", code="not_found", status_code=404)
    statement = _current(statement)
    if not reason.strip():
        raise ApplicationError("Say why the line is disputed.", code="reason_required", field="reason")
    if claimed_amount_eur is not None and abs(claimed_amount_eur) >= MAX_AMOUNT:
        raise ApplicationError("The claimed amount is implausible.", code="invalid_amount", field="claimed_amount_eur")
    line = (SettlementLine.objects.select_related("order_settlement__flex_order")
            .filter(order_settlement__statement=statement, order_settlement__flex_order__order_reference=order_reference,
                    isp=isp).first())
    if line is None:
        raise ApplicationError(f"The statement has no line for order {order_reference}, ISP {isp}.",
                               code="unknown_line", field="isp")
    order = line.order_settlement.flex_order
    if Dispute.objects.filter(flex_order=order, isp=isp, status=Dispute.Status.OPEN).exists():
        raise ApplicationError("This line is already disputed and not yet resolved.", code="dispute_open",
                               field="isp")
    try:
        with transaction.atomic():
            dispute = Dispute.objects.create(
                statement=statement, order_settlement=line.order_settlement, line=line, flex_order=order, isp=isp,
                reason=reason.strip(), claimed_amount_eur=claimed_amount_eur,
                raised_by=actor if getattr(actor, "is_authenticated", False) else None)
    except IntegrityError as exc:  # a concurrent dispute of the same line won the race
        raise ApplicationError("This line is already disputed and not yet resolved.", code="dispute_open",
                               field="isp") from exc
    audit_record(obj=dispute, action="dispute.opened", actor=actor, actor_label=actor_label, after={
        "statement": str(statement.pk), "version": statement.version, "order_reference": order_reference, "isp": isp,
        "line_paid_eur": str(line.paid_eur), "claimed_amount_eur": str(claimed_amount_eur) if claimed_amount_eur
        is not None else None, "reason": dispute.reason})
    return dispute


@transaction.atomic
def dispute_resolve(*, dispute: Dispute, dso: Participant, accept: bool, reason: str = "",
                    corrected_amount_eur: Decimal | None = None, actor: Any = None,
                    actor_label: str = "") -> Dispute:
    """The DSO accepts (with the corrected net amount of the line) or rejects (with a reason) an open dispute;
    a new version of the statement is issued either way."""
    dispute = Dispute.objects.select_for_update().select_related("statement", "flex_order").get(pk=dispute.pk)
    if dispute.statement.dso_id != dso.pk:
        raise ApplicationError("Not found.", code="not_found", status_code=404)
    if dispute.status != Dispute.Status.OPEN:
        raise ApplicationError(f"The dispute is already {dispute.status}.", code="invalid_state", field="status")
    if accept and corrected_amount_eur is None:
        raise ApplicationError("Accepting a dispute needs the corrected amount of the line.",
                               code="corrected_amount_required", field="corrected_amount_eur")
    if accept and corrected_amount_eur is not None and abs(corrected_amount_eur) >= MAX_AMOUNT:
        raise ApplicationError("The corrected amount is implausible.", code="invalid_amount",
                               field="corrected_amount_eur")
    if not accept and not reason.strip():
        raise ApplicationError("Rejecting a dispute needs a reason.", code="reason_required", field="reason")
    _lock(dispute.statement)
    latest = (Statement.objects.select_for_update()
              .filter(dso=dispute.statement.dso_id, aggregator=dispute.statement.aggregator_id,
                      period_start=dispute.statement.period_start, period_end=dispute.statement.period_end)
              .order_by("-version").first())
    assert latest is not None  # the disputed version exists
    before = {"status": dispute.status}
    dispute.status = Dispute.Status.ACCEPTED if accept else Dispute.Status.REJECTED
    dispute.corrected_amount_eur = corrected_amount_eur.quantize(Decimal("0.01")) if accept and \
        corrected_amount_eur is not None else None
    dispute.resolution_reason = reason.strip()
    dispute.resolved_by = actor if getattr(actor, "is_authenticated", False) else None
    dispute.resolved_at = clock.now()

    def record(statement: Statement) -> None:
        dispute.resolution_statement = statement
        dispute.save()

    overrides = {(dispute.flex_order_id, dispute.isp): dispute.corrected_amount_eur} if accept and \
        dispute.corrected_amount_eur is not None else {}
    statement = statement_version_issue(
        dso=latest.dso, aggregator=latest.aggregator, period_start=latest.period_start, period_end=latest.period_end,
        replacements={}, previous=latest, line_overrides=overrides, before_ledger=record,
        reason=f"dispute {dispute.pk} {dispute.status}: {dispute.flex_order.order_reference} ISP {dispute.isp}")
    audit_record(obj=dispute, action=f"dispute.{dispute.status}", actor=actor, actor_label=actor_label,
                 before=before, after={
        "status": dispute.status, "corrected_amount_eur": str(dispute.corrected_amount_eur)
        if dispute.corrected_amount_eur is not None else None, "reason": dispute.resolution_reason,
        "statement": str(statement.pk), "version": statement.version})
    return dispute
