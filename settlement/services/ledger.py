"""The hash-chained ledger of issued statement versions, and its verification.

Canonical JSON: keys sorted, no insignificant whitespace, UTF-8, Decimals as fixed-point strings with the
field's decimal places, datetimes as ISO-8601 UTC. An order settlement is hashed on its own (its lines
included) and the statement document lists those hashes (a two-level hash tree), so a new version that
carries most settlements over unchanged costs little to document, and verification still recomputes every
line from the database.

    entry_hash = SHA-256(canonical JSON {"previous_hash", "sequence", "statement": <statement document>})
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Max, Prefetch

from common import time as clock
from settlement.models import LedgerEntry, OrderSettlement, SettlementLine, Statement
from settlement.models.ledger import GENESIS_HASH

LINE_FIELDS = ("isp", "baseline_w", "measured_w", "ordered_w", "realised_w", "delivered_w", "deficiency_w",
               "payment_eur", "penalty_eur", "paid_eur")


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value) if not isinstance(value, (int, str, bool, type(None), list, dict)) else value


def canonical_json(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _places(value: Any, places: int) -> str:
    return format(Decimal(value).quantize(Decimal(1).scaleb(-places)), "f")


def order_settlement_document(settlement: OrderSettlement, lines: Iterable[SettlementLine]) -> dict[str, Any]:
    """Everything both sides must agree on about one order's settlement (no database ids of its own)."""
    order = settlement.flex_order
    baseline = settlement.baseline
    return {
        "order_reference": order.order_reference,
        "flex_order": str(order.pk),
        "period": order.period.isoformat(),
        "baseline_method": settlement.baseline_method,
        "baseline_parameters": baseline.parameters if baseline is not None else {},
        "d_prognosis": str(settlement.d_prognosis_id) if settlement.d_prognosis_id else None,
        "ordered_kwh": _places(settlement.ordered_kwh, 3),
        "delivered_kwh": _places(settlement.delivered_kwh, 3),
        "deficiency_kwh": _places(settlement.deficiency_kwh, 3),
        "unit_price_eur_per_kwh": _places(settlement.unit_price_eur_per_kwh, 6),
        "penalty_eur_per_kwh": _places(settlement.penalty_eur_per_kwh, 4),
        "payment_eur": _places(settlement.payment_eur, 2),
        "penalty_eur": _places(settlement.penalty_eur, 2),
        "total_eur": _places(settlement.total_eur, 2),
        "lines": [
            [line.isp, line.baseline_w, line.measured_w, line.ordered_w, line.realised_w, line.delivered_w,
             line.deficiency_w, _places(line.payment_eur, 2), _places(line.penalty_eur, 2), _places(line.paid_eur, 2)]
            for line in sorted(lines, key=lambda item: item.isp)
        ],
    }


def order_settlement_hash(settlement: OrderSettlement, lines: Iterable[SettlementLine]) -> str:
    return sha256_hex(canonical_json(order_settlement_document(settlement, lines)))


def statement_document(statement: Statement, settlements: Iterable[OrderSettlement],
                       disputes: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """The statement version as issued: header, totals, each order settlement's hash, resolved disputes."""
    return {
        "statement": str(statement.pk),
        "dso": statement.dso.domain,
        "aggregator": statement.aggregator.domain,
        "period_start": statement.period_start.isoformat(),
        "period_end": statement.period_end.isoformat(),
        "version": statement.version,
        "previous_version": str(statement.previous_version_id) if statement.previous_version_id else None,
        "reason": statement.reason,
        "currency": statement.currency,
        "payment_eur": _places(statement.payment_eur, 2),
        "penalty_eur": _places(statement.penalty_eur, 2),
        "total_eur": _places(statement.total_eur, 2),
        "issued_at": statement.issued_at.astimezone(UTC).isoformat(),
        "order_settlements": sorted(
            ({"order_reference": s.flex_order.order_reference, "total_eur": _places(s.total_eur, 2),
              "sha256": s.content_sha256} for s in settlements),
            key=lambda item: item["order_reference"],
        ),
        "resolved_disputes": sorted(disputes, key=lambda item: item["dispute"]),
    }


def _disputes_of(statement: Statement) -> list[dict[str, Any]]:
    return [
        {"dispute": str(d.pk), "order_reference": d.flex_order.order_reference, "isp": d.isp, "outcome": d.status,
         "corrected_amount_eur": _places(d.corrected_amount_eur, 2) if d.corrected_amount_eur is not None else None,
         "resolution_reason": d.resolution_reason}
        for d in statement.resolved_disputes.select_related("flex_order")
    ]


def statement_document_from_db(statement: Statement, *, recompute_settlements: bool) -> dict[str, Any]:
    """The document as the database holds it now. With `recompute_settlements`, each settlement's hash is
    recomputed from its lines (verification); otherwise the stored hash is used (issuing)."""
    queryset = OrderSettlement.objects.filter(statement=statement)
    if recompute_settlements:
        queryset = queryset.select_related("flex_order", "baseline").prefetch_related(
            Prefetch("lines", queryset=SettlementLine.objects.order_by("isp")))
    else:  # the stored hashes suffice: no lines (a monthly statement can have hundreds of thousands)
        queryset = queryset.select_related("flex_order").only("total_eur", "content_sha256",
                                                              "flex_order__order_reference")
    settlements = list(queryset)
    if recompute_settlements:
        for settlement in settlements:
            settlement.content_sha256 = order_settlement_hash(settlement, settlement.lines.all())
    return statement_document(statement, settlements, _disputes_of(statement))


def _entry_hash(*, previous_hash: str, sequence: int, document: str) -> str:
    # The document is embedded as parsed JSON so the entry hash is over one canonical JSON object.
    return sha256_hex(canonical_json({"previous_hash": previous_hash, "sequence": sequence,
                                      "statement": json.loads(document)}))


@transaction.atomic
def ledger_append(*, statement: Statement) -> LedgerEntry:
    """Append an issued statement version to the chain (serialised: one appender at a time)."""
    if connection.vendor == "postgresql":  # also when the chain is still empty and there is no row to lock
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('settlement.ledger'))")
    last = LedgerEntry.objects.select_for_update().order_by("-sequence").first()
    sequence = (last.sequence + 1) if last else 1
    previous_hash = last.entry_hash if last else GENESIS_HASH
    document = canonical_json(statement_document_from_db(statement, recompute_settlements=False))
    return LedgerEntry.objects.create(
        sequence=sequence, statement=statement, document=document, document_sha256=sha256_hex(document),
        previous_hash=previous_hash, entry_hash=_entry_hash(previous_hash=previous_hash, sequence=sequence,
                                                            document=document),
        appended_at=clock.now(),
    )


@dataclass(frozen=True)
class LedgerProblem:
    sequence: int
    entry_id: int
    statement_id: str
    reason: str


def _entries() -> Iterator[LedgerEntry]:
    return LedgerEntry.objects.select_related("statement__dso", "statement__aggregator").order_by("sequence").iterator(
        chunk_size=200)


def _entry_problem(entry: LedgerEntry, *, previous_hash: str, expected_sequence: int) -> str | None:
    if entry.sequence != expected_sequence:
        return f"sequence {entry.sequence} where {expected_sequence} was expected (an entry is missing)"
    if entry.previous_hash != previous_hash:
        return "previous_hash does not match the entry before it"
    if sha256_hex(entry.document) != entry.document_sha256:
        return "the stored document does not match its SHA-256"
    if _entry_hash(previous_hash=previous_hash, sequence=entry.sequence, document=entry.document) != entry.entry_hash:
        return "entry_hash does not match the document and the previous hash"
    current = canonical_json(statement_document_from_db(entry.statement, recompute_settlements=True))
    if current != entry.document:
        return "the statement in the database differs from the document in the ledger"
    return None


def ledger_verify() -> tuple[int, LedgerProblem | None]:
    """Recompute the chain; (entries that verified, the first broken entry or None)."""
    previous_hash = GENESIS_HASH
    checked = 0
    for entry in _entries():
        reason = _entry_problem(entry, previous_hash=previous_hash, expected_sequence=checked + 1)
        if reason is not None:
            return checked, LedgerProblem(sequence=entry.sequence, entry_id=entry.pk,
                                          statement_id=str(entry.statement_id), reason=reason)
        previous_hash = entry.entry_hash
        checked += 1
    return checked, None


def ledger_head() -> dict[str, Any]:
    last = LedgerEntry.objects.order_by("-sequence").first()
    return {"entries": LedgerEntry.objects.aggregate(n=Max("sequence"))["n"] or 0,
            "head": last.entry_hash if last else GENESIS_HASH}
