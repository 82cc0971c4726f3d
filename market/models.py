"""Market data: who trades, where the grid is congested, and the USEF flex messages with their ISP rows.

Power is in integer watts, positive = consumption from the grid; a requested or offered reduction is
negative. Money is Decimal EUR. Status fields change only through market.services.
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from common.ean import validate_ean18
from common.models import BaseModel, PublicIdModel

usef_domain_validator = RegexValidator(
    regex=r"^([a-z0-9]+(-[a-z0-9]+)*\.)+[a-z]{2,}$",
    message="A USEF domain is a lower-case internet domain name such as dso.example.com.",
    code="invalid_domain",
)


class Participant(PublicIdModel):
    """An organisation acting in one USEF role, identified by its internet domain (as in UFTP)."""

    class Role(models.TextChoices):
        DSO = "DSO", "Distribution system operator"
        AGR = "AGR", "Aggregator"
        CRO = "CRO", "Common reference operator"
        BRP = "BRP", "Balance responsible party"
        TSO = "TSO", "Transmission system operator"

    name = models.CharField(max_length=200)
    role = models.CharField(max_length=3, choices=Role.choices)
    domain = models.CharField(max_length=253, validators=[usef_domain_validator])
    is_active = models.BooleanField(default=True)
    api_rate_limit = models.CharField(
        max_length=20, blank=True, validators=[RegexValidator(r"^\d+/(s|sec|m|min|h|hour|d|day)$")],
        help_text="API requests allowed, e.g. 600/min; blank = the platform default (API_THROTTLE_RATE).",
    )

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["domain", "role"], name="participant_domain_role_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.role})"


class User(AbstractUser):
    """A person (or machine user) acting for one participant."""

    participant = models.ForeignKey(Participant, null=True, blank=True, on_delete=models.PROTECT, related_name="users")

    @property
    def role(self) -> str | None:
        return self.participant.role if self.participant is not None else None


class Market(PublicIdModel):
    """The rules one local flexibility market trades under (USEF: each congestion point is its own market;
    the rules are shared by the points a DSO runs under one programme)."""

    code = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    time_zone = models.CharField(max_length=64, default="Europe/Amsterdam")
    isp_minutes = models.PositiveSmallIntegerField(default=15)
    currency = models.CharField(max_length=3, default="EUR")
    gate_closure_minutes = models.PositiveIntegerField(
        default=60, help_text="No new offers (or requested ISPs) for an ISP later than this many minutes before it starts."
    )
    max_power_w = models.BigIntegerField(
        default=100_000_000, help_text="Largest plausible power per ISP; larger values are refused (Power value rejection)."
    )
    # Settlement terms (UFTP-BRIEF 8-9: agreed outside UFTP). Blank method = the USEF D-prognosis baseline.
    baseline_method = models.CharField(
        max_length=200, blank=True,
        help_text="Dotted path of the settlement baseline method (settlement.baselines.*); blank = D-prognosis.",
    )
    baseline_parameters = models.JSONField(default=dict, blank=True, help_text="Parameters for the baseline method.")
    penalty_eur_per_kwh = models.DecimalField(
        max_digits=10, decimal_places=4, default=Decimal("0"), validators=[MinValueValidator(Decimal("0"))],
        help_text="USEF deficiency penalty per kWh sold but not delivered (0 = no penalty).",
    )

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.name


def default_market_id() -> uuid.UUID:
    """The market new congestion points join unless told otherwise (created on first use)."""
    market, _ = Market.objects.get_or_create(code="default", defaults={"name": "Default market"})
    return market.pk


class CongestionPoint(PublicIdModel):
    """A grid element (transformer, cable) with the connections behind it, owned by one DSO."""

    ean = models.CharField("EAN", max_length=18, unique=True, validators=[validate_ean18])
    dso = models.ForeignKey(
        Participant,
        on_delete=models.PROTECT,
        related_name="congestion_points",
        limit_choices_to={"role": Participant.Role.DSO},
    )
    name = models.CharField(max_length=200)
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="congestion_points",
                               default=default_market_id)
    mutex_offers_supported = models.BooleanField(
        default=False, help_text="Offers may carry several mutually exclusive options (UFTP MutexOffersSupported)."
    )
    # Physical limit the DSO plans against (optional; used by the optimiser to avoid new peaks).
    capacity_kw = models.DecimalField(max_digits=10, decimal_places=1, null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.ean})"

    @property
    def entity_address(self) -> str:
        """UFTP EntityAddress form."""
        return f"ean.{self.ean}"

    def clean(self) -> None:
        if self.dso_id and self.dso.role != Participant.Role.DSO:
            raise ValidationError({"dso": "A congestion point belongs to a participant with the DSO role."})


class Connection(BaseModel):
    """A metered grid connection (EAN-18) behind a congestion point."""

    ean = models.CharField("EAN", max_length=18, primary_key=True, validators=[validate_ean18])
    congestion_point = models.ForeignKey(CongestionPoint, on_delete=models.PROTECT, related_name="connections")
    # Standard annual consumption (Dutch "SJV"); the household base-load forecast scales with it.
    annual_consumption_kwh = models.PositiveIntegerField(default=2800)

    class Meta:
        ordering = ["ean"]

    def __str__(self) -> str:
        return self.ean


class AggregatorConnection(BaseModel):
    """Which aggregator represents which connection, over a validity period (valid_until exclusive)."""

    aggregator = models.ForeignKey(
        Participant,
        on_delete=models.PROTECT,
        related_name="represented_connections",
        limit_choices_to={"role": Participant.Role.AGR},
    )
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="representations")
    valid_from = models.DateField()
    valid_until = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["connection_id", "valid_from"]
        constraints = [
            models.CheckConstraint(
                condition=Q(valid_until__isnull=True) | Q(valid_until__gt=models.F("valid_from")),
                name="aggregator_connection_period_positive",
            )
        ]

    def __str__(self) -> str:
        return f"{self.aggregator} represents {self.connection_id} from {self.valid_from}"

    def covers(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_until is None or day < self.valid_until)

    def clean(self) -> None:
        if self.aggregator_id and self.aggregator.role != Participant.Role.AGR:
            raise ValidationError({"aggregator": "Only a participant with the AGR role can represent connections."})
        if self.valid_until is not None and self.valid_until <= self.valid_from:
            raise ValidationError({"valid_until": "The validity period must end after it starts."})
        overlapping = AggregatorConnection.objects.filter(connection_id=self.connection_id).exclude(pk=self.pk)
        overlapping = overlapping.filter(Q(valid_until__isnull=True) | Q(valid_until__gt=self.valid_from))
        if self.valid_until is not None:
            overlapping = overlapping.filter(valid_from__lt=self.valid_until)
        if overlapping.exists():
            raise ValidationError(
                {"valid_from": "Another aggregator already represents this connection in this period."},
                code="representation_overlap",
            )


class FlexMessage(PublicIdModel):
    """Fields every UFTP flex message shares: the day it is about, where, and its message identity."""

    congestion_point = models.ForeignKey(CongestionPoint, on_delete=models.PROTECT, related_name="+")
    period = models.DateField(help_text="Market day (Europe/Amsterdam) the ISPs belong to.")
    message_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    conversation_id = models.UUIDField(default=uuid.uuid4, editable=False)
    # SHA-256 of the message's canonical content: a resent MessageID with the same content is "Already
    # Submitted" (the first result is returned), with other content a "Duplicate Identifier".
    content_hash = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        abstract = True


class IspRow(models.Model):
    """One ISP of a flex message (stored one row per ISP: UFTP Start/Duration runs are expanded at the edge)."""

    id = models.BigAutoField(primary_key=True)
    isp = models.PositiveSmallIntegerField(validators=[MinValueValidator(1)], help_text="1-based ISP index of the day.")

    class Meta:
        abstract = True
        ordering = ["isp"]

    def __str__(self) -> str:
        return f"ISP {self.isp}"


class IspPowerRow(IspRow):
    """An ISP with one average power (D-prognosis, offer, order)."""

    power_w = models.BigIntegerField()

    class Meta(IspRow.Meta):
        abstract = True


class FlexRequest(FlexMessage):
    """A DSO asks for a change in power per ISP at one congestion point (USEF FlexRequest)."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        OPEN = "open", "Open"
        PARTIALLY_ORDERED = "partially_ordered", "Partially ordered"
        ORDERED = "ordered", "Ordered"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Cancelled"
        SUPERSEDED = "superseded", "Superseded by a revision"

    dso = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="flex_requests")
    revision = models.PositiveIntegerField(default=1)
    expires_at = models.DateTimeField()
    service_type = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT, db_index=True)
    created_by = models.ForeignKey("market.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["congestion_point", "period", "status"])]

    def __str__(self) -> str:
        return f"FlexRequest {self.congestion_point.name} {self.period} r{self.revision} [{self.status}]"


class FlexRequestIsp(IspRow):
    class Disposition(models.TextChoices):
        REQUESTED = "Requested", "Requested"
        AVAILABLE = "Available", "Available"

    flex_request = models.ForeignKey(FlexRequest, on_delete=models.CASCADE, related_name="isps")
    disposition = models.CharField(max_length=9, choices=Disposition.choices)
    min_power_w = models.BigIntegerField()
    max_power_w = models.BigIntegerField()

    class Meta(IspRow.Meta):
        constraints = [
            models.UniqueConstraint(fields=["flex_request", "isp"], name="flex_request_isp_unique"),
            models.CheckConstraint(condition=Q(min_power_w__lte=models.F("max_power_w")), name="flex_request_isp_band"),
        ]

    @property
    def requested_reduction_w(self) -> int:
        """For a Requested downward ISP: the reduction the DSO needs at least (|MaxPower|)."""
        return max(0, -self.max_power_w)


class DPrognosis(FlexMessage):
    """An aggregator's forecast of its load per ISP at one congestion point: the settlement baseline."""

    class Status(models.TextChoices):
        SUBMITTED = "submitted", "Submitted"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"
        SUPERSEDED = "superseded", "Superseded"

    aggregator = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="d_prognoses")
    revision = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.SUBMITTED, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "D-prognosis"
        verbose_name_plural = "D-prognoses"
        constraints = [
            models.UniqueConstraint(
                fields=["aggregator", "congestion_point", "period", "revision"], name="d_prognosis_revision_unique"
            )
        ]

    def __str__(self) -> str:
        return f"D-prognosis {self.congestion_point.name} {self.period} r{self.revision} [{self.status}]"


class DPrognosisIsp(IspPowerRow):
    d_prognosis = models.ForeignKey(DPrognosis, on_delete=models.CASCADE, related_name="isps")

    class Meta(IspPowerRow.Meta):
        constraints = [models.UniqueConstraint(fields=["d_prognosis", "isp"], name="d_prognosis_isp_unique")]


class FlexContract(PublicIdModel):
    """A bilateral agreement between a DSO and an aggregator on one congestion point (outside UFTP itself):
    reserved flexibility that FlexReservationUpdates confirm or release, and whether direct orders are allowed."""

    contract_id = models.CharField(max_length=64, help_text="The ContractID both parties quote.")
    dso = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="contracts_as_dso")
    aggregator = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="contracts_as_aggregator")
    congestion_point = models.ForeignKey(CongestionPoint, on_delete=models.PROTECT, related_name="contracts")
    valid_from = models.DateField()
    valid_until = models.DateField(null=True, blank=True, help_text="Exclusive.")
    reserved_power_w = models.BigIntegerField(
        default=0, help_text="Reserved flex per ISP inside the window, W (negative = less consumption)."
    )
    window_start = models.TimeField(null=True, blank=True, help_text="Local time; reserved ISPs start here.")
    window_end = models.TimeField(null=True, blank=True, help_text="Local time; exclusive.")
    reservation_deadline_minutes = models.PositiveIntegerField(
        default=14 * 60, help_text="FlexReservationUpdates arrive at least this long before the market day starts."
    )
    allows_direct_orders = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    # Settlement terms of the contract; they override the market's when set.
    baseline_method = models.CharField(
        max_length=200, blank=True, help_text="Dotted path of the settlement baseline method; blank = the market's."
    )
    baseline_parameters = models.JSONField(default=dict, blank=True)
    penalty_eur_per_kwh = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True, validators=[MinValueValidator(Decimal("0"))],
        help_text="Deficiency penalty per kWh; blank = the market's.",
    )

    class Meta:
        ordering = ["contract_id"]
        constraints = [models.UniqueConstraint(fields=["dso", "contract_id"], name="contract_id_unique_per_dso")]

    def __str__(self) -> str:
        return f"Contract {self.contract_id} ({self.dso.name} / {self.aggregator.name})"

    def covers(self, day: date) -> bool:
        return self.is_active and self.valid_from <= day and (self.valid_until is None or day < self.valid_until)


class FlexOffer(FlexMessage):
    """An aggregator offers changes in power per ISP for a price (USEF FlexOffer): one or more mutually
    exclusive options, each with its own price and minimum activation factor."""

    class Status(models.TextChoices):
        SUBMITTED = "submitted", "Submitted"
        ACCEPTED = "accepted", "Accepted (ordered)"
        REJECTED = "rejected", "Rejected"
        REVOKED = "revoked", "Revoked"
        EXPIRED = "expired", "Expired"

    aggregator = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="flex_offers")
    flex_request = models.ForeignKey(
        FlexRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="offers"
    )
    d_prognosis = models.ForeignKey(DPrognosis, null=True, blank=True, on_delete=models.PROTECT, related_name="offers")
    contract = models.ForeignKey(FlexContract, null=True, blank=True, on_delete=models.PROTECT, related_name="offers")
    currency = models.CharField(max_length=3, default="EUR")
    expires_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SUBMITTED, db_index=True)
    created_by = models.ForeignKey("market.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["aggregator", "status"])]

    def __str__(self) -> str:
        return f"FlexOffer {self.aggregator.name} {self.congestion_point.name} {self.period}"

    @property
    def unsolicited(self) -> bool:
        return self.flex_request_id is None


class FlexOfferOption(BaseModel):
    """One alternative of an offer: the power per ISP and the asking price for all of it."""

    id = models.BigAutoField(primary_key=True)
    flex_offer = models.ForeignKey(FlexOffer, on_delete=models.CASCADE, related_name="options")
    option_reference = models.CharField(max_length=64)
    price_eur = models.DecimalField(max_digits=12, decimal_places=2, validators=[MinValueValidator(Decimal("0"))])
    min_activation_factor = models.DecimalField(max_digits=3, decimal_places=2, default=Decimal("1.00"))

    class Meta:
        ordering = ["flex_offer_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["flex_offer", "option_reference"], name="offer_option_reference_unique"),
            models.CheckConstraint(
                condition=Q(min_activation_factor__gt=0) & Q(min_activation_factor__lte=1),
                name="offer_option_activation_factor_range",
            ),
        ]

    def __str__(self) -> str:
        return f"option {self.option_reference}: EUR {self.price_eur}"


class FlexOfferOptionIsp(IspPowerRow):
    option = models.ForeignKey(FlexOfferOption, on_delete=models.CASCADE, related_name="isps")

    class Meta(IspPowerRow.Meta):
        constraints = [models.UniqueConstraint(fields=["option", "isp"], name="offer_option_isp_unique")]


class FlexOrder(FlexMessage):
    """A DSO buys an offer: binding for the aggregator (USEF FlexOrder)."""

    class Status(models.TextChoices):
        PLACED = "placed", "Placed"
        DISPATCHED = "dispatched", "Dispatched"
        SETTLED = "settled", "Settled"
        DISPUTED = "disputed", "Disputed"

    dso = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="flex_orders_placed")
    aggregator = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="flex_orders")
    flex_offer = models.OneToOneField(
        FlexOffer, null=True, blank=True, on_delete=models.PROTECT, related_name="order"
    )
    option = models.ForeignKey(FlexOfferOption, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    contract = models.ForeignKey(FlexContract, null=True, blank=True, on_delete=models.PROTECT, related_name="orders")
    service_type = models.CharField(max_length=100, blank=True)
    d_prognosis = models.ForeignKey(DPrognosis, null=True, blank=True, on_delete=models.PROTECT, related_name="orders")
    order_reference = models.CharField(max_length=64, unique=True)
    price_eur = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="EUR")
    activation_factor = models.DecimalField(max_digits=3, decimal_places=2, default=Decimal("1.00"))
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PLACED, db_index=True)
    created_by = models.ForeignKey("market.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["aggregator", "congestion_point", "period"])]

    def __str__(self) -> str:
        return f"FlexOrder {self.order_reference} [{self.status}]"

    @property
    def unsolicited(self) -> bool:
        """A direct order (UFTP 3.1): placed without an offer, under a contract."""
        return self.flex_offer_id is None


class FlexOrderIsp(IspPowerRow):
    flex_order = models.ForeignKey(FlexOrder, on_delete=models.CASCADE, related_name="isps")

    class Meta(IspPowerRow.Meta):
        constraints = [models.UniqueConstraint(fields=["flex_order", "isp"], name="flex_order_isp_unique")]


class FlexReservationUpdate(FlexMessage):
    """The DSO confirms, reduces or releases reserved flex of a contract for one day (USEF FlexReservationUpdate).

    Per ISP, Power is the flex still reserved (sign = direction, 0 = released); an update never raises what
    the contract or an earlier update reserved."""

    class Status(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        SUPERSEDED = "superseded", "Superseded"

    contract = models.ForeignKey(FlexContract, on_delete=models.PROTECT, related_name="reservation_updates")
    dso = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="+")
    aggregator = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="reservation_updates")
    reference = models.CharField(max_length=64, blank=True, help_text="The DSO's own reference.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACCEPTED, db_index=True)
    created_by = models.ForeignKey("market.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"FlexReservationUpdate {self.contract.contract_id} {self.period} [{self.status}]"


class FlexReservationUpdateIsp(IspPowerRow):
    reservation_update = models.ForeignKey(FlexReservationUpdate, on_delete=models.CASCADE, related_name="isps")

    class Meta(IspPowerRow.Meta):
        constraints = [
            models.UniqueConstraint(fields=["reservation_update", "isp"], name="reservation_update_isp_unique")
        ]


class ApiKey(PublicIdModel):
    """A named, revocable machine credential of one participant. Only a SHA-256 hash of the key is stored;
    the key itself is shown once, at creation. `scopes` limits what the key may do within the role."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, help_text="Public part of the key, for lookup and display.")
    key_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey("market.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["participant_id", "name"]
        verbose_name = "API key"
        constraints = [
            models.UniqueConstraint(
                fields=["participant", "name"], condition=Q(revoked_at__isnull=True), name="api_key_name_unique_live"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}...)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
