"""What CPOs tell us over OCPI 2.2.1: their locations and EVSEs (power, capabilities) and their sessions.

These are the CPO's objects as received (`data` holds the last full object); the portfolio's ChargePoint and
ChargingSession rows are derived from them (aggregator.ocpi.receivers): an EVSE becomes a ChargePoint once the
operator links its Location to a grid connection, and a session at a known EVSE becomes a ChargingSession.
"""

from __future__ import annotations

from django.db import models

from aggregator.models.operators import ChargePointOperator
from aggregator.models.portfolio import ChargePoint, ChargingSession
from common.models import BaseModel
from market.models import Connection


class OcpiLocation(BaseModel):
    id = models.BigAutoField(primary_key=True)
    cpo = models.ForeignKey(ChargePointOperator, on_delete=models.CASCADE, related_name="ocpi_locations")
    location_id = models.CharField(max_length=36, help_text="OCPI Location.id (CiString: compared case-insensitively).")
    connection = models.ForeignKey(
        Connection, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The grid connection this location hangs off; set by the operator, then its EVSEs join the portfolio.")
    name = models.CharField(max_length=255, blank=True)
    data = models.JSONField(default=dict)
    last_updated = models.DateTimeField()

    class Meta:
        ordering = ["cpo", "location_id"]
        verbose_name = "OCPI location"
        constraints = [models.UniqueConstraint(fields=["cpo", "location_id"], name="ocpi_location_unique_per_cpo")]

    def __str__(self) -> str:
        return f"{self.location_id} ({self.name})" if self.name else self.location_id


class OcpiEvse(BaseModel):
    id = models.BigAutoField(primary_key=True)
    cpo = models.ForeignKey(ChargePointOperator, on_delete=models.CASCADE, related_name="ocpi_evses")
    location = models.ForeignKey(OcpiLocation, null=True, blank=True, on_delete=models.CASCADE, related_name="evses")
    evse_uid = models.CharField("EVSE uid", max_length=36)
    status = models.CharField(max_length=12, default="UNKNOWN")
    capabilities = models.JSONField(default=list)
    max_power_w = models.PositiveIntegerField(null=True, blank=True, help_text="Highest connector power, W.")
    phases = models.PositiveSmallIntegerField(null=True, blank=True)
    charge_point = models.OneToOneField(
        ChargePoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="ocpi_evse")
    profiles_supported = models.BooleanField(
        default=True, help_text="False once the CPO answered NOT_SUPPORTED for a profile on this EVSE.")
    data = models.JSONField(default=dict)
    last_updated = models.DateTimeField()

    class Meta:
        ordering = ["cpo", "evse_uid"]
        verbose_name = "OCPI EVSE"
        constraints = [models.UniqueConstraint(fields=["cpo", "evse_uid"], name="ocpi_evse_unique_per_cpo")]

    def __str__(self) -> str:
        return self.evse_uid

    @property
    def charging_profile_capable(self) -> bool:
        return self.profiles_supported and "CHARGING_PROFILE_CAPABLE" in (self.capabilities or [])


class OcpiSession(BaseModel):
    id = models.BigAutoField(primary_key=True)
    cpo = models.ForeignKey(ChargePointOperator, on_delete=models.CASCADE, related_name="ocpi_sessions")
    session_id = models.CharField(max_length=36, help_text="OCPI Session.id (CiString).")
    country_code = models.CharField(max_length=2)
    party_id = models.CharField(max_length=3)
    status = models.CharField(max_length=12)
    location_id = models.CharField(max_length=36)
    evse_uid = models.CharField(max_length=36)
    kwh = models.DecimalField(max_digits=10, decimal_places=4, default=0)
    start_date_time = models.DateTimeField()
    end_date_time = models.DateTimeField(null=True, blank=True)
    charging_session = models.OneToOneField(
        ChargingSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="ocpi_session")
    data = models.JSONField(default=dict)
    last_updated = models.DateTimeField(db_index=True)
    active_charging_profile = models.JSONField(
        null=True, blank=True, help_text="The CPO's latest ActiveChargingProfile for this session (what the charger "
                                         "computed), to verify dispatch against.")
    active_profile_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_updated"]
        verbose_name = "OCPI session"
        constraints = [models.UniqueConstraint(fields=["cpo", "session_id"], name="ocpi_session_unique_per_cpo")]

    def __str__(self) -> str:
        return f"{self.session_id} [{self.status}]"
