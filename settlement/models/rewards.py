"""Driver rewards: the aggregator's revenue for an order, allocated to the sessions that delivered it."""

from __future__ import annotations

from django.db import models

from aggregator.models import ChargingSession
from settlement.models.statements import OrderSettlement


class SessionReward(models.Model):
    """One session's share of one order settlement: pro rata to the kWh it shifted in the ordered ISPs."""

    id = models.BigAutoField(primary_key=True)
    order_settlement = models.ForeignKey(OrderSettlement, on_delete=models.CASCADE, related_name="rewards")
    session = models.ForeignKey(ChargingSession, on_delete=models.PROTECT, related_name="rewards")
    shifted_kwh = models.DecimalField(max_digits=10, decimal_places=3,
                                      help_text="Uncontrolled minus scheduled energy in the order's ISPs (its share).")
    reward_eur = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        ordering = ["order_settlement_id", "session_id"]
        constraints = [
            models.UniqueConstraint(fields=["order_settlement", "session"], name="session_reward_unique")
        ]

    def __str__(self) -> str:
        return f"reward {self.session_id}: EUR {self.reward_eur}"
