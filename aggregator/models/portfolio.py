"""The EV portfolio: charge points, charging sessions and the schedules dispatched to them."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from aggregator.models.operators import ChargePointOperator
from common.models import BaseModel, PublicIdModel
from market.models import Connection, FlexOrder


class ChargePoint(PublicIdModel):
    """One controllable EVSE behind a grid connection."""

    cpo = models.ForeignKey(ChargePointOperator, on_delete=models.PROTECT, related_name="charge_points")
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="charge_points")
    evse_uid = models.CharField("EVSE uid", max_length=36)
    max_power_w = models.PositiveIntegerField(validators=[MinValueValidator(1000), MaxValueValidator(350_000)])
    phases = models.PositiveSmallIntegerField(default=3, validators=[MinValueValidator(1), MaxValueValidator(3)])

    class Meta:
        ordering = ["evse_uid"]
        verbose_name = "charge point (EVSE)"
        constraints = [models.UniqueConstraint(fields=["cpo", "evse_uid"], name="charge_point_evse_unique")]

    def __str__(self) -> str:
        return self.evse_uid


class ChargingSession(PublicIdModel):
    """One car plugged in (or announced) at a charge point.

    Status follows OCPI's SessionStatus: PENDING = known to the CPO but not yet charging (the demo's
    day-ahead sessions), ACTIVE = plugged in, COMPLETED = ended.
    """

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        ACTIVE = "ACTIVE", "Active"
        COMPLETED = "COMPLETED", "Completed"
        INVALID = "INVALID", "Invalid"

    charge_point = models.ForeignKey(ChargePoint, on_delete=models.PROTECT, related_name="sessions")
    cpo_session_id = models.CharField("CPO session id", max_length=36)
    arrival_at = models.DateTimeField()
    expected_departure_at = models.DateTimeField()
    energy_requested_kwh = models.DecimalField(
        max_digits=7, decimal_places=3, validators=[MinValueValidator(Decimal("0"))]
    )
    max_power_w = models.PositiveIntegerField(help_text="Lower of what the EVSE and the car accept.")
    energy_delivered_kwh = models.DecimalField(max_digits=7, decimal_places=3, null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)

    class Meta:
        ordering = ["arrival_at"]
        constraints = [
            models.UniqueConstraint(fields=["charge_point", "cpo_session_id"], name="session_id_unique_per_evse"),
            models.CheckConstraint(
                condition=Q(expected_departure_at__gt=models.F("arrival_at")), name="session_departure_after_arrival"
            ),
        ]
        indexes = [models.Index(fields=["status", "arrival_at"])]

    def __str__(self) -> str:
        return f"session {self.cpo_session_id}"

    def clean(self) -> None:
        if self.arrival_at and self.expected_departure_at and self.expected_departure_at <= self.arrival_at:
            raise ValidationError({"expected_departure_at": "Departure must come after arrival."})


class SessionSchedule(BaseModel):
    """The power plan for one session from one optimisation: average W per 15-minute slot from `start`."""

    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(ChargingSession, on_delete=models.CASCADE, related_name="schedules")
    flex_order = models.ForeignKey(FlexOrder, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    start = models.DateTimeField(help_text="UTC start of the first slot (ISP-aligned).")
    slot_power_w = models.JSONField(help_text="Average power per 15-minute slot, W.")
    planned_energy_kwh = models.DecimalField(max_digits=7, decimal_places=3)
    shortfall_kwh = models.DecimalField(max_digits=7, decimal_places=3, default=Decimal("0"))
    is_current = models.BooleanField(default=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["session"], condition=Q(is_current=True), name="one_current_schedule_per_session"
            )
        ]

    def __str__(self) -> str:
        return f"schedule {self.pk} for {self.session}"
