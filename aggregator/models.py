"""The EV portfolio (charge points and charging sessions), dispatched schedules and the commands sent to CPOs."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from common.models import BaseModel, PublicIdModel
from market.models import Connection, FlexOrder, Participant


class ChargePointOperator(PublicIdModel):
    """A CPO one aggregator has a smart-charging contract with, reached over OCPI 2.2.1.

    `chargingprofiles_url` is the CPO's chargingprofiles RECEIVER endpoint; `token_for_cpo` is the
    credentials token we send (Authorization: Token base64(token)); `token_from_cpo` is the one the CPO
    presents when it calls us (results, session pushes).
    """

    aggregator = models.ForeignKey(
        Participant,
        on_delete=models.PROTECT,
        related_name="charge_point_operators",
        limit_choices_to={"role": Participant.Role.AGR},
    )
    name = models.CharField(max_length=200)
    country_code = models.CharField(max_length=2, validators=[RegexValidator(r"^[A-Z]{2}$")])
    party_id = models.CharField(max_length=3, validators=[RegexValidator(r"^[A-Z0-9]{3}$")])
    versions_url = models.URLField(blank=True)
    chargingprofiles_url = models.URLField(help_text="The CPO's OCPI 2.2.1 chargingprofiles receiver URL.")
    token_for_cpo = models.CharField(max_length=64)
    token_from_cpo = models.CharField(max_length=64, unique=True)
    auth_base64 = models.BooleanField(default=True, help_text="Send the token Base64-encoded (OCPI 2.2.x rule).")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "charge point operator"
        constraints = [
            models.UniqueConstraint(
                fields=["aggregator", "country_code", "party_id"], name="cpo_party_unique_per_aggregator"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.country_code}*{self.party_id})"


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


class ChargingProfileCommand(BaseModel):
    """An outbox row: one OCPI chargingprofiles call to a CPO, written with the decision that caused it.

    Lifecycle (OCPI-BRIEF 6.5): PENDING -> SENDING -> (sync answer) ACCEPTED | REJECTED | NOT_SUPPORTED |
    TOO_OFTEN | UNKNOWN_SESSION | FAILED, then for ACCEPTED the CPO's async result: RESULT_ACCEPTED |
    RESULT_REJECTED | RESULT_UNKNOWN. The id is in the response_url, so results find their command.
    """

    class Kind(models.TextChoices):
        SET = "SET", "Set charging profile"
        GET = "GET", "Get active profile"
        CLEAR = "CLEAR", "Clear profile"

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        SENDING = "SENDING", "Sending"
        ACCEPTED = "ACCEPTED", "Accepted by CPO"
        REJECTED = "REJECTED", "Rejected by CPO"
        NOT_SUPPORTED = "NOT_SUPPORTED", "Not supported"
        TOO_OFTEN = "TOO_OFTEN", "Too often"
        UNKNOWN_SESSION = "UNKNOWN_SESSION", "Unknown session"
        FAILED = "FAILED", "Failed"
        SUPERSEDED = "SUPERSEDED", "Superseded"
        RESULT_ACCEPTED = "RESULT_ACCEPTED", "Applied by charger"
        RESULT_REJECTED = "RESULT_REJECTED", "Refused by charger"
        RESULT_UNKNOWN = "RESULT_UNKNOWN", "Unknown at charger"

    FINAL_STATUSES = frozenset(
        {
            Status.REJECTED,
            Status.NOT_SUPPORTED,
            Status.TOO_OFTEN,
            Status.UNKNOWN_SESSION,
            Status.FAILED,
            Status.SUPERSEDED,
            Status.RESULT_ACCEPTED,
            Status.RESULT_REJECTED,
            Status.RESULT_UNKNOWN,
        }
    )

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=5, choices=Kind.choices, default=Kind.SET)
    cpo = models.ForeignKey(ChargePointOperator, on_delete=models.PROTECT, related_name="commands")
    session = models.ForeignKey(ChargingSession, on_delete=models.PROTECT, related_name="commands")
    schedule = models.ForeignKey(SessionSchedule, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    flex_order = models.ForeignKey(FlexOrder, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    request_body = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    response_timeout_s = models.PositiveIntegerField(null=True, blank=True)
    result_at = models.DateTimeField(null=True, blank=True)
    result_body = models.JSONField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "charging profile command"
        indexes = [models.Index(fields=["flex_order", "status"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.session.cpo_session_id} [{self.status}]"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES
