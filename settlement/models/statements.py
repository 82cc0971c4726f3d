"""Statements and the per-order, per-ISP settlement lines they are built from.

A statement covers one DSO-aggregator pair and one calendar month (the USEF FlexSettlement period). Issued
statements are immutable: a later settlement run (late meter data, another day of the month) or a dispute
resolution issues a new version, and the earlier one becomes superseded. Each issued version is appended to
the hash-chained ledger (settlement.models.ledger).
"""

from __future__ import annotations

import uuid

from django.db import models

from common.models import BaseModel, PublicIdModel
from market.models import DPrognosis, FlexOrder, Participant


class Statement(PublicIdModel):
    """What a DSO owes one aggregator for the orders settled over a period (one version of it)."""

    class Status(models.TextChoices):
        ISSUED = "issued", "Issued"
        SUPERSEDED = "superseded", "Superseded"

    dso = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="statements_issued")
    aggregator = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="statements")
    period_start = models.DateField()
    period_end = models.DateField(help_text="Last market day included.")
    version = models.PositiveIntegerField(default=1)
    previous_version = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=200, blank=True, help_text="Why this version was issued.")
    currency = models.CharField(max_length=3, default="EUR")
    payment_eur = models.DecimalField(max_digits=14, decimal_places=2, default=0,
                                      help_text="Sum of payments for delivered flex.")
    penalty_eur = models.DecimalField(max_digits=14, decimal_places=2, default=0,
                                      help_text="Sum of deficiency penalties.")
    total_eur = models.DecimalField(max_digits=14, decimal_places=2, help_text="Net: payment - penalty.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ISSUED, db_index=True)
    issued_at = models.DateTimeField()
    # UFTP FlexSettlement identity of this version (MessageID), so an export is stable across downloads.
    message_id = models.UUIDField(default=uuid.uuid4, editable=False)

    class Meta:
        ordering = ["-period_start", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["dso", "aggregator", "period_start", "period_end", "version"], name="statement_version_unique"
            )
        ]

    def __str__(self) -> str:
        return f"Statement {self.dso.name} -> {self.aggregator.name} {self.period_start}..{self.period_end} v{self.version}"


class OrderSettlement(BaseModel):
    """The settlement of one flex order in one statement version: per ISP baseline, measured, ordered,
    delivered and deficiency, and the resulting payment and penalty (UFTP FlexOrderSettlement)."""

    id = models.BigAutoField(primary_key=True)
    statement = models.ForeignKey(Statement, on_delete=models.CASCADE, related_name="order_settlements")
    flex_order = models.ForeignKey(FlexOrder, on_delete=models.PROTECT, related_name="settlements")
    d_prognosis = models.ForeignKey(DPrognosis, null=True, on_delete=models.PROTECT, related_name="+")
    baseline = models.ForeignKey("settlement.BaselineRecord", null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="order_settlements")
    baseline_method = models.CharField(max_length=200, default="usef_d_prognosis")
    ordered_kwh = models.DecimalField(max_digits=12, decimal_places=3)
    delivered_kwh = models.DecimalField(max_digits=12, decimal_places=3)
    deficiency_kwh = models.DecimalField(max_digits=12, decimal_places=3, default=0)
    unit_price_eur_per_kwh = models.DecimalField(max_digits=14, decimal_places=6)
    penalty_eur_per_kwh = models.DecimalField(max_digits=10, decimal_places=4, default=0)
    payment_eur = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    penalty_eur = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    total_eur = models.DecimalField(max_digits=14, decimal_places=2, help_text="Net: payment - penalty.")
    # Newest meter reading (received_at) this settlement used: a newer reading means late data.
    meter_data_as_of = models.DateTimeField(null=True, blank=True)
    # SHA-256 of the canonical JSON of this settlement with its lines (settlement.services.ledger).
    content_sha256 = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["flex_order__period", "flex_order__order_reference"]
        constraints = [
            models.UniqueConstraint(fields=["statement", "flex_order"], name="order_settled_once_per_statement")
        ]

    def __str__(self) -> str:
        return f"settlement of {self.flex_order.order_reference}: EUR {self.total_eur}"


class SettlementLine(models.Model):
    """One ISP of an order settlement (UFTP-BRIEF 9.3). Powers are ISP averages in W.

    realised_w = flex realised in the ordered direction (s x (measured - baseline)), may be negative;
    delivered_w = min(|ordered|, max(0, realised)) (USEF DeliveredFlexPower, as a magnitude);
    deficiency_w = max(0, -s x (measured - (baseline + ordered))) (USEF PowerDeficiency);
    paid_eur = payment_eur - penalty_eur (the line's net amount, may be negative).
    """

    id = models.BigAutoField(primary_key=True)
    order_settlement = models.ForeignKey(OrderSettlement, on_delete=models.CASCADE, related_name="lines")
    isp = models.PositiveSmallIntegerField()
    isp_start = models.DateTimeField()
    baseline_w = models.BigIntegerField()
    measured_w = models.BigIntegerField()
    ordered_w = models.BigIntegerField(help_text="Ordered change, negative for a reduction.")
    realised_w = models.BigIntegerField(default=0, help_text="Flex realised in the ordered direction; may be negative.")
    delivered_w = models.BigIntegerField(help_text="Delivered flex: min(|ordered|, max(0, realised)).")
    deficiency_w = models.BigIntegerField(default=0, help_text="Power deficiency (sold but not delivered), >= 0.")
    payment_eur = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    penalty_eur = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    paid_eur = models.DecimalField(max_digits=14, decimal_places=2, help_text="Net: payment - penalty.")

    class Meta:
        ordering = ["isp"]
        constraints = [models.UniqueConstraint(fields=["order_settlement", "isp"], name="settlement_line_isp_unique")]

    def __str__(self) -> str:
        return f"ISP {self.isp}: delivered {self.delivered_w} W, EUR {self.paid_eur}"


class SettlementRun(BaseModel):
    """One settlement of one market day (nightly or by hand): when it ran and how far the meter data reached.
    A reading received after the last run of its day is late data: the day is settled again."""

    id = models.BigAutoField(primary_key=True)
    period = models.DateField(db_index=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    trigger = models.CharField(max_length=20, default="nightly")
    orders_settled = models.PositiveIntegerField(default=0)
    orders_unchanged = models.PositiveIntegerField(default=0)
    orders_waiting = models.PositiveIntegerField(default=0)
    statements_issued = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"settlement run {self.period} at {self.started_at:%Y-%m-%d %H:%M}Z"
