"""Charge point operators the aggregator has a smart-charging contract with, and how we reach them."""

from __future__ import annotations

from typing import Any

from django.core.validators import MaxLengthValidator, RegexValidator
from django.db import models

from aggregator.encryption import EncryptedTokenField, token_digest
from common.models import PublicIdModel
from market.models import Participant

# OCPI credentials tokens: up to 64 printable non-whitespace ASCII characters (OCPI-BRIEF 2.1).
TOKEN_VALIDATORS: list[Any] = [MaxLengthValidator(64),
                               RegexValidator(r"^[\x21-\x7e]+$", "Printable ASCII without spaces.")]


class DispatchMode(models.TextChoices):
    """Per CPO, the channel(s) dispatch uses (issue 5): OCPI SetChargingProfile per session, OSCP group capacity."""

    OCPI = "OCPI", "OCPI per-session charging profiles"
    OSCP = "OSCP", "OSCP group capacity forecasts"
    OCPI_OSCP = "OCPI_OSCP", "Both OCPI profiles and OSCP capacity"


class ChargePointOperator(PublicIdModel):
    """A CPO one aggregator has a smart-charging contract with, reached over OCPI 2.2.1 (we are its SCSP).

    Tokens (encrypted at rest, see aggregator.encryption): `token_for_cpo` is the credentials token we send
    (token B when the CPO registered at us, token C when we registered at it); `token_from_cpo` is the one the
    CPO presents when it calls us; `token_a` is the one-off registration token we handed out of band (dead
    after registration). `ocpi_endpoints` is the CPO's version details: [{identifier, role, url}].
    """

    class Registration(models.TextChoices):
        UNREGISTERED = "UNREGISTERED", "Not registered"
        TOKEN_A_ISSUED = "TOKEN_A_ISSUED", "Token A issued, waiting for the CPO"
        REGISTERED = "REGISTERED", "Registered"

    aggregator = models.ForeignKey(
        Participant,
        on_delete=models.PROTECT,
        related_name="charge_point_operators",
        limit_choices_to={"role": Participant.Role.AGR},
    )
    name = models.CharField(max_length=200)
    country_code = models.CharField(max_length=2, validators=[RegexValidator(r"^[A-Z]{2}$")])
    party_id = models.CharField(max_length=3, validators=[RegexValidator(r"^[A-Z0-9]{3}$")])
    versions_url = models.URLField(blank=True, max_length=255)
    chargingprofiles_url = models.URLField(
        blank=True, max_length=255, help_text="The CPO's OCPI 2.2.1 chargingprofiles receiver URL.")
    token_for_cpo = EncryptedTokenField(blank=True, validators=TOKEN_VALIDATORS)
    token_from_cpo = EncryptedTokenField(blank=True, validators=TOKEN_VALIDATORS)
    token_from_cpo_digest = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    token_a = EncryptedTokenField(blank=True, validators=TOKEN_VALIDATORS,
                                  help_text="Registration token A we gave the CPO out of band.")
    token_a_digest = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    auth_base64 = models.BooleanField(default=True, help_text="Send the token Base64-encoded (OCPI 2.2.x rule).")
    registration = models.CharField(max_length=16, choices=Registration.choices, default=Registration.REGISTERED)
    ocpi_version = models.CharField(max_length=10, blank=True)
    ocpi_endpoints = models.JSONField(default=list, blank=True)
    ocpi_roles = models.JSONField(default=list, blank=True, help_text="The CPO's CredentialsRoles.")
    profiles_supported = models.BooleanField(
        default=True, help_text="False once the CPO answered NOT_SUPPORTED for the whole platform.")
    sessions_synced_until = models.DateTimeField(
        null=True, blank=True, help_text="last_updated of the newest session pulled; the next resync starts here.")
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

    def save(self, *args: Any, **kwargs: Any) -> None:
        # The digests follow the tokens on every save, so lookups by token never see a stale value.
        self.token_from_cpo_digest = token_digest(self.token_from_cpo) if self.token_from_cpo else None
        self.token_a_digest = token_digest(self.token_a) if self.token_a else None
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            extra = {"token_from_cpo_digest"} if "token_from_cpo" in update_fields else set()
            extra |= {"token_a_digest"} if "token_a" in update_fields else set()
            kwargs["update_fields"] = {*update_fields, *extra}
        super().save(*args, **kwargs)

    def endpoint_url(self, identifier: str, role: str = "RECEIVER") -> str | None:
        """The URL the CPO published for a module (and interface role), from its version details."""
        for endpoint in self.ocpi_endpoints or []:
            if endpoint.get("identifier") == identifier and endpoint.get("role", role) == role:
                return str(endpoint["url"])
        return None
