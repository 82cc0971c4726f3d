"""Disputes: an aggregator contests one line (ISP) of an order settlement; the DSO accepts or rejects it."""

from __future__ import annotations

from django.db import models

from common.models import PublicIdModel
from market.models import FlexOrder
from settlement.models.statements import OrderSettlement, SettlementLine, Statement


class Dispute(PublicIdModel):
    """UFTP FlexSettlementResponse disposition `Disputed`, with its manual resolution (outside UFTP)."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACCEPTED = "accepted", "Accepted (corrected)"
        REJECTED = "rejected", "Rejected"

    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="disputes",
                                  help_text="The statement version the line was disputed on.")
    order_settlement = models.ForeignKey(OrderSettlement, on_delete=models.PROTECT, related_name="disputes")
    line = models.ForeignKey(SettlementLine, on_delete=models.PROTECT, related_name="disputes")
    flex_order = models.ForeignKey(FlexOrder, on_delete=models.PROTECT, related_name="+")
    isp = models.PositiveSmallIntegerField()
    reason = models.TextField()
    claimed_amount_eur = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True,
                                             help_text="What the aggregator thinks the line should be (optional).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True)
    corrected_amount_eur = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    resolution_reason = models.TextField(blank=True)
    raised_by = models.ForeignKey("market.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    resolved_by = models.ForeignKey("market.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution_statement = models.ForeignKey(Statement, null=True, blank=True, on_delete=models.PROTECT,
                                             related_name="resolved_disputes",
                                             help_text="The statement version the resolution issued.")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["flex_order", "isp"], condition=models.Q(status="open"),
                                    name="one_open_dispute_per_order_isp")
        ]

    def __str__(self) -> str:
        return f"dispute {self.flex_order.order_reference} ISP {self.isp} [{self.status}]"
