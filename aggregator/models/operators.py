"""Charge point operators the aggregator has a smart-charging contract with, and how we reach them."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

from common.models import PublicIdModel
from market.models import Participant


class DispatchMode(models.TextChoices):
    """Per CPO, the channel(s) dispatch uses (issue 5): OCPI SetChargingProfile per session, OSCP group capacity."""

    OCPI = "OCPI", "OCPI per-session charging profiles"
    OSCP = "OSCP", "OSCP group capacity forecasts"
    OCPI_OSCP = "OCPI_OSCP", "Both OCPI profiles and OSCP capacity"


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
    dispatch_mode = models.CharField(
        max_length=9,
        choices=DispatchMode.choices,
        default=DispatchMode.OCPI,
        help_text="How orders reach this CPO: OCPI per-session profiles, OSCP group capacity forecasts, or both.",
    )

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
