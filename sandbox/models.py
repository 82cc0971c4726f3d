"""What the simulated CPO holds: its credentials for each aggregator and the profiles it received."""

from __future__ import annotations

from django.db import models


class SandboxCpoClient(models.Model):
    """An aggregator (SCSP) registered at the simulated CPO, with the tokens both sides use."""

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=200)
    token_from_client = models.CharField(max_length=64, unique=True, help_text="Token the aggregator presents to us.")
    token_for_client = models.CharField(max_length=64, help_text="Token we present when we call the aggregator.")
    reject_all = models.BooleanField(default=False, help_text="Answer REJECTED to every profile (fault testing).")

    def __str__(self) -> str:
        return self.name


class SandboxChargingProfile(models.Model):
    """A SetChargingProfile the simulated CPO received and what it answered."""

    id = models.BigAutoField(primary_key=True)
    client = models.ForeignKey(SandboxCpoClient, on_delete=models.CASCADE, related_name="profiles")
    session_id = models.CharField(max_length=36, db_index=True)
    charging_profile = models.JSONField()
    response_url = models.URLField(max_length=500)
    sync_result = models.CharField(max_length=20)
    async_result = models.CharField(max_length=20, blank=True)
    result_posted_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    is_active = models.BooleanField(default=True, help_text="The newest profile per session is the one the EVSE applies.")

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"profile for {self.session_id} ({self.sync_result})"
