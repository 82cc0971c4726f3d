"""Baselines as computed for settlement: which method, with which parameters, gave which W per ISP."""

from __future__ import annotations

from django.db import models

from market.models import CongestionPoint, DPrognosis, Participant


class BaselineRecord(models.Model):
    """The baseline of one aggregator's portfolio at one congestion point for one market day, as one method
    computed it (UFTP FlexOrderSettlement BaselineReference points here)."""

    id = models.BigAutoField(primary_key=True)
    aggregator = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="+")
    congestion_point = models.ForeignKey(CongestionPoint, on_delete=models.PROTECT, related_name="+")
    period = models.DateField()
    method = models.CharField(max_length=200, help_text="Dotted path of the method class.")
    parameters = models.JSONField(default=dict, help_text="Parameters as used, including defaults.")
    inputs = models.JSONField(default=dict, help_text="What the method drew on (days used, sessions, prognosis).")
    values_w = models.JSONField(help_text="Baseline W per ISP index (as a string key).")
    d_prognosis = models.ForeignKey(DPrognosis, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["aggregator", "congestion_point", "period"])]

    def __str__(self) -> str:
        return f"baseline {self.method.rsplit('.', 1)[-1]} {self.period} ({self.pk})"

    @property
    def reference(self) -> str:
        """The UFTP BaselineReference text: method and record id."""
        return f"{self.method.rsplit('.', 1)[-1]}:{self.pk}"
