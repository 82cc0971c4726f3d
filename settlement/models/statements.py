"""Statements and the per-order, per-ISP settlement lines they are built from."""

from __future__ import annotations

from django.db import models

from common.models import BaseModel, PublicIdModel
from market.models import DPrognosis, FlexOrder, Participant


class Statement(PublicIdModel):
    """What a DSO owes one aggregator for the orders settled over a period."""

    class Status(models.TextChoices):
        ISSUED = "issued", "Issued"
        SUPERSEDED = "superseded", "Superseded"

    dso = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="statements_issued")
    aggregator = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="statements")
    period_start = models.DateField()
    period_end = models.DateField(help_text="Last market day included.")
    version = models.PositiveIntegerField(default=1)
    currency = models.CharField(max_length=3, default="EUR")
    total_eur = models.DecimalField(max_digits=14, decimal_places=2)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ISSUED, db_index=True)
    issued_at = models.DateTimeField()

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
    """The settlement of one flex order: baseline vs metered load per ISP, delivered flex and its payment."""

    id = models.BigAutoField(primary_key=True)
    statement = models.ForeignKey(Statement, on_delete=models.CASCADE, related_name="order_settlements")
    flex_order = models.ForeignKey(FlexOrder, on_delete=models.PROTECT, related_name="settlements")
    d_prognosis = models.ForeignKey(DPrognosis, null=True, on_delete=models.PROTECT, related_name="+")
    baseline_method = models.CharField(max_length=100, default="usef_d_prognosis")
    ordered_kwh = models.DecimalField(max_digits=12, decimal_places=3)
    delivered_kwh = models.DecimalField(max_digits=12, decimal_places=3)
    unit_price_eur_per_kwh = models.DecimalField(max_digits=14, decimal_places=6)
    total_eur = models.DecimalField(max_digits=14, decimal_places=2)

    class Meta:
        ordering = ["flex_order__period", "flex_order__order_reference"]
        constraints = [
            models.UniqueConstraint(fields=["statement", "flex_order"], name="order_settled_once_per_statement")
        ]

    def __str__(self) -> str:
        return f"settlement of {self.flex_order.order_reference}: EUR {self.total_eur}"


class SettlementLine(models.Model):
    """One ISP of an order settlement. Powers are ISP averages in W; delivered = baseline - measured."""

    id = models.BigAutoField(primary_key=True)
    order_settlement = models.ForeignKey(OrderSettlement, on_delete=models.CASCADE, related_name="lines")
    isp = models.PositiveSmallIntegerField()
    isp_start = models.DateTimeField()
    baseline_w = models.BigIntegerField()
    measured_w = models.BigIntegerField()
    ordered_w = models.BigIntegerField(help_text="Ordered change, negative for a reduction.")
    delivered_w = models.BigIntegerField(help_text="Realised reduction: baseline - measured (may be negative).")
    paid_eur = models.DecimalField(max_digits=14, decimal_places=2)

    class Meta:
        ordering = ["isp"]
        constraints = [models.UniqueConstraint(fields=["order_settlement", "isp"], name="settlement_line_isp_unique")]

    def __str__(self) -> str:
        return f"ISP {self.isp}: delivered {self.delivered_w} W, EUR {self.paid_eur}"
