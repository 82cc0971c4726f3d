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

NOMINAL_VOLTAGE_V = 230  # phase-to-neutral voltage of the Dutch LV grid (EN 50160): A x V x phases = W
IEC_61851_MIN_CURRENT_A = Decimal("6")  # the lowest PWM current a car must accept while charging (IEC 61851-1)
SINGLE_PHASE_MAX_W = 7_400  # 32 A x 230 V: the most one phase delivers


class ChargePoint(PublicIdModel):
    """One controllable EVSE behind a grid connection."""

    class LocationType(models.TextChoices):
        """Which ElaadNL population curves describe this charger's sessions (estimates.py)."""

        HOME = "home", "Home / private"
        PUBLIC = "public", "Public"
        WORK = "work", "Workplace"

    cpo = models.ForeignKey(ChargePointOperator, on_delete=models.PROTECT, related_name="charge_points")
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="charge_points")
    evse_uid = models.CharField("EVSE uid", max_length=36)
    max_power_w = models.PositiveIntegerField(validators=[MinValueValidator(1000), MaxValueValidator(350_000)])
    phases = models.PositiveSmallIntegerField(default=3, validators=[MinValueValidator(1), MaxValueValidator(3)])
    location_type = models.CharField(max_length=6, choices=LocationType.choices, default=LocationType.PUBLIC)

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

    Energy: `energy_requested_kwh` is always the energy the plan aims for. It is given in kWh, or derived from
    a target state of charge (battery capacity x (target - arrival SoC)), or estimated; `energy_source` says
    which. `departure_source` does the same for `expected_departure_at`.

    Power: `max_power_w` is the lower of EVSE and car. While charging, a car takes at least `min_current_a`
    per phase (IEC 61851: 6 A), so a profile gives either 0 or at least `min_power_w`.

    V2G: a `v2g_capable` car may discharge up to `max_discharge_power_w`, never below `v2g_min_soc_pct`.

    Flexibility: the session is steered only while `is_flexible` (the driver did not opt out and did not boost).
    """

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        ACTIVE = "ACTIVE", "Active"
        COMPLETED = "COMPLETED", "Completed"
        INVALID = "INVALID", "Invalid"

    class Source(models.TextChoices):
        """Where a planning value came from; HISTORY and POPULATION are estimates."""

        MEASURED = "MEASURED", "Measured (CPO / car)"
        DRIVER = "DRIVER", "Given by the driver or eMSP"
        HISTORY = "HISTORY", "Estimated from the driver's history"
        POPULATION = "POPULATION", "Estimated from population statistics"

    ESTIMATED_SOURCES = frozenset({Source.HISTORY, Source.POPULATION})

    charge_point = models.ForeignKey(ChargePoint, on_delete=models.PROTECT, related_name="sessions")
    cpo_session_id = models.CharField("CPO session id", max_length=36)
    driver = models.ForeignKey("aggregator.Driver", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="sessions")
    token_uid = models.CharField("token uid", max_length=36, blank=True,
                                 help_text="OCPI Token.uid / contract id the session was started with.")
    arrival_at = models.DateTimeField()
    expected_departure_at = models.DateTimeField()
    departure_source = models.CharField(max_length=10, choices=Source.choices, default=Source.DRIVER)
    energy_requested_kwh = models.DecimalField(
        max_digits=7, decimal_places=3, validators=[MinValueValidator(Decimal("0"))]
    )
    energy_source = models.CharField(max_length=10, choices=Source.choices, default=Source.DRIVER)
    battery_capacity_kwh = models.DecimalField(
        max_digits=6, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(Decimal("1")), MaxValueValidator(Decimal("1000"))],
    )
    arrival_soc_pct = models.DecimalField(
        "state of charge at arrival (%)", max_digits=5, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
    )
    target_soc_pct = models.DecimalField(
        "target state of charge (%)", max_digits=5, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
    )
    max_power_w = models.PositiveIntegerField(help_text="Lower of what the EVSE and the car accept.")
    phases = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(3)],
        help_text="Phases the car charges on (lower of EVSE and car); unknown: see charging_phases.",
    )
    min_current_a = models.DecimalField(
        max_digits=4, decimal_places=1, default=IEC_61851_MIN_CURRENT_A,
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("80"))],
        help_text="Lowest current per phase the car accepts while charging (IEC 61851: 6 A).",
    )
    v2g_capable = models.BooleanField(default=False)
    max_discharge_power_w = models.PositiveIntegerField(default=0)
    v2g_min_soc_pct = models.DecimalField(
        "V2G floor: lowest state of charge (%)", max_digits=5, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
    )
    min_energy_kwh = models.DecimalField(
        max_digits=7, decimal_places=3, null=True, blank=True, validators=[MinValueValidator(Decimal("0"))],
        help_text="Energy the car must have received by `min_energy_by` (driver preference).",
    )
    min_energy_by = models.DateTimeField(null=True, blank=True)
    flex_opt_out = models.BooleanField(default=False, help_text="The driver opted out: charge uncontrolled.")
    boosted_at = models.DateTimeField(null=True, blank=True, help_text="The driver pressed boost: charge at full "
                                      "power from then on.")
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
            models.CheckConstraint(
                condition=Q(v2g_capable=True) | Q(max_discharge_power_w=0), name="session_discharge_needs_v2g"
            ),
        ]
        indexes = [models.Index(fields=["status", "arrival_at"]), models.Index(fields=["driver", "arrival_at"])]

    def __str__(self) -> str:
        return f"session {self.cpo_session_id}"

    @property
    def charging_phases(self) -> int:
        """Phases the car charges on: as reported; else one phase for a car of at most 7.4 kW (1 x 32 A, the
        3.7 and 7.4 kW cars of the Dutch fleet charge single-phase) and the charge point's phases above that."""
        if self.phases:
            return int(self.phases)
        if self.max_power_w <= SINGLE_PHASE_MAX_W:
            return 1
        return int(self.charge_point.phases) if self.charge_point_id else 3

    @property
    def min_power_w(self) -> int:
        """Lowest power the car draws while charging at all: min current x phases x 230 V."""
        return int(round(float(self.min_current_a) * self.charging_phases * NOMINAL_VOLTAGE_V))

    @property
    def is_flexible(self) -> bool:
        return not self.flex_opt_out and self.boosted_at is None

    @property
    def estimated_values(self) -> list[str]:
        """Names of the planning values that are estimates, not measured or given."""
        estimated = []
        if self.departure_source in self.ESTIMATED_SOURCES:
            estimated.append("expected_departure_at")
        if self.energy_source in self.ESTIMATED_SOURCES:
            estimated.append("energy_requested_kwh")
        return estimated

    @staticmethod
    def energy_for_soc(*, battery_capacity_kwh: Decimal, arrival_soc_pct: Decimal, target_soc_pct: Decimal) -> Decimal:
        """kWh from the arrival to the target state of charge (0 when the car is already there)."""
        energy = battery_capacity_kwh * (target_soc_pct - arrival_soc_pct) / Decimal(100)
        return max(Decimal("0"), energy).quantize(Decimal("0.001"))

    @property
    def v2g_floor_kwh(self) -> float | None:
        """The V2G floor as energy relative to arrival (negative: the car may give back that much), if known."""
        if not self.v2g_capable or self.v2g_min_soc_pct is None:
            return None
        if self.battery_capacity_kwh is None or self.arrival_soc_pct is None:
            return 0.0  # without battery data the only safe floor is the energy the car arrived with
        floor = float(self.battery_capacity_kwh) * float(self.v2g_min_soc_pct - self.arrival_soc_pct) / 100.0
        return min(floor, 0.0)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.arrival_at and self.expected_departure_at and self.expected_departure_at <= self.arrival_at:
            errors["expected_departure_at"] = "Departure must come after arrival."
        if self.max_power_w is not None and self.min_current_a is not None:
            if self.min_power_w > self.max_power_w:
                errors["min_current_a"] = (f"Minimum charging power {self.min_power_w} W (min current x phases x "
                                           f"{NOMINAL_VOLTAGE_V} V) exceeds the maximum power {self.max_power_w} W.")
        if self.target_soc_pct is not None:
            if self.battery_capacity_kwh is None or self.arrival_soc_pct is None:
                errors["target_soc_pct"] = "A target state of charge needs the battery capacity and the arrival SoC."
            elif self.target_soc_pct < self.arrival_soc_pct:
                errors["target_soc_pct"] = "The target state of charge is below the state of charge at arrival."
            elif self.energy_source != self.Source.MEASURED and self.energy_requested_kwh is not None:
                derived = self.energy_for_soc(battery_capacity_kwh=self.battery_capacity_kwh,
                                              arrival_soc_pct=self.arrival_soc_pct, target_soc_pct=self.target_soc_pct)
                if abs(derived - self.energy_requested_kwh) > Decimal("0.01"):
                    errors["energy_requested_kwh"] = f"The target state of charge needs {derived} kWh."
        if self.max_discharge_power_w and not self.v2g_capable:
            errors["max_discharge_power_w"] = "Only a V2G-capable car can discharge."
        if self.v2g_min_soc_pct is not None and self.target_soc_pct is not None \
                and self.v2g_min_soc_pct > self.target_soc_pct:
            errors["v2g_min_soc_pct"] = "The V2G floor lies above the target state of charge."
        if (self.min_energy_kwh is None) != (self.min_energy_by is None):
            errors["min_energy_by"] = "Give the minimum energy and the time it is needed by together."
        elif self.min_energy_kwh is not None and self.min_energy_by is not None:
            if self.energy_requested_kwh is not None and self.min_energy_kwh > self.energy_requested_kwh:
                errors["min_energy_kwh"] = "The minimum energy exceeds the energy requested."
            if self.arrival_at and self.min_energy_by <= self.arrival_at:
                errors["min_energy_by"] = "The minimum energy must be due after arrival."
        if errors:
            raise ValidationError(errors)


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
