"""EV drivers of an aggregator: preferences set once and applied to every session, and the tokens that link a
charging session (OCPI token uid / contract id) to its driver."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from common.models import PublicIdModel
from market.models import Participant


class Driver(PublicIdModel):
    """A person who charges through one of the aggregator's CPOs (an eMSP customer, a fleet driver).

    Preferences (DOMAIN.md, pilot lesson 2: set once, not a decision per session):
    - `usual_departure_time`: local (Europe/Amsterdam) clock time the car usually leaves; used when a session
      arrives without a departure time.
    - `min_energy_kwh` by `min_energy_by_time`: the energy the car must have received by that local time of the
      session (e.g. 10 kWh by 07:00 for the commute), however flexibility is traded.
    - `flex_opt_out`: every session of this driver charges uncontrolled (no flexibility is sold from it).
    - `v2g_allowed`: the driver consents to discharging a V2G-capable car within its limits.
    """

    aggregator = models.ForeignKey(
        Participant, on_delete=models.PROTECT, related_name="drivers", limit_choices_to={"role": Participant.Role.AGR}
    )
    reference = models.CharField(max_length=100, help_text="The aggregator's own id for the driver (e.g. eMSP "
                                 "customer number); no personal data needed.")
    usual_departure_time = models.TimeField(null=True, blank=True, help_text="Local time (Europe/Amsterdam).")
    min_energy_kwh = models.DecimalField(
        max_digits=6, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(Decimal("0"))]
    )
    min_energy_by_time = models.TimeField(null=True, blank=True, help_text="Local time (Europe/Amsterdam).")
    flex_opt_out = models.BooleanField(default=False)
    v2g_allowed = models.BooleanField(default=False)
    battery_capacity_kwh = models.DecimalField(
        max_digits=6, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(Decimal("1")), MaxValueValidator(Decimal("1000"))],
        help_text="The driver's car, when known: turns a target state of charge into kWh.",
    )

    class Meta:
        ordering = ["reference"]
        constraints = [
            models.UniqueConstraint(fields=["aggregator", "reference"], name="driver_reference_unique_per_aggregator"),
            models.CheckConstraint(
                condition=(Q(min_energy_kwh__isnull=True) & Q(min_energy_by_time__isnull=True))
                | (Q(min_energy_kwh__isnull=False) & Q(min_energy_by_time__isnull=False)),
                name="driver_min_energy_with_time",
            ),
        ]

    def __str__(self) -> str:
        return f"driver {self.reference}"

    def clean(self) -> None:
        if (self.min_energy_kwh is None) != (self.min_energy_by_time is None):
            raise ValidationError({"min_energy_by_time": "Give the minimum energy and the time it is needed by "
                                                         "together."})


class DriverToken(PublicIdModel):
    """An OCPI token (RFID card, app user) or contract id that identifies the driver of a session."""

    aggregator = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="+")
    driver = models.ForeignKey(Driver, on_delete=models.CASCADE, related_name="tokens")
    uid = models.CharField("token uid", max_length=36, help_text="OCPI Token.uid or contract id (CiString).")

    class Meta:
        ordering = ["uid"]
        constraints = [
            models.UniqueConstraint(fields=["aggregator", "uid"], name="driver_token_unique_per_aggregator"),
        ]

    def __str__(self) -> str:
        return self.uid

    def save(self, *args: object, **kwargs: object) -> None:
        # OCPI uids are case-insensitive (CiString): store one spelling so lookups are exact.
        self.uid = self.uid.upper()
        super().save(*args, **kwargs)  # type: ignore[arg-type]
