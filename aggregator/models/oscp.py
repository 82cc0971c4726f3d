"""OSCP 2.0 as Capacity Provider: the CPO back-offices we hand group capacity to (Flexibility Providers),
their capacity groups, the outbox of messages we send them, and what they send us (measurements,
compliance errors, adjustment requests). Brief: ../shared/specs/oscp/OSCP-BRIEF.md.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import time
from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from aggregator.encryption import EncryptedTokenField
from aggregator.models.operators import ChargePointOperator
from aggregator.models.portfolio import ChargePoint
from common import time as clock
from common.models import BaseModel, PublicIdModel
from market.models import CongestionPoint, FlexOrder


def token_digest(token: str) -> str:
    """SHA-256 of a token we issued: we only ever compare what a peer presents, so we keep no clear text."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class OscpPeer(PublicIdModel):
    """One OSCP connection to a CPO's back-office acting as Flexibility Provider (FP).

    Tokens (brief 3.1): `token_for_peer` is the token the peer issued to us (sent in our Authorization header, so
    kept Fernet-encrypted at rest rather than hashed, see aggregator.encryption); the tokens we issued are kept
    only as SHA-256 digests: `token_from_peer_digest` (current) and `initial_token_digest` (token A handed out of
    band, valid until the registration exchange completes).
    """

    class Registration(models.TextChoices):
        NEW = "NEW", "Not registered"
        REGISTER_SENT = "REGISTER_SENT", "Register sent, awaiting the peer's Register"
        REGISTERED = "REGISTERED", "Registered"
        UNREGISTERED = "UNREGISTERED", "Unregistered"

    class Handshake(models.TextChoices):
        NONE = "NONE", "No handshake"
        SENT = "SENT", "Handshake sent, awaiting acknowledge"
        COMPLETE = "COMPLETE", "Handshake complete"

    cpo = models.OneToOneField(ChargePointOperator, on_delete=models.PROTECT, related_name="oscp_peer")
    base_url = models.URLField(blank=True, help_text="The peer's OSCP 2.0 base URL (from its Register version_url).")
    version = models.CharField(max_length=10, default="2.0")
    token_for_peer = EncryptedTokenField(blank=True)
    token_from_peer_digest = models.CharField(max_length=64, blank=True, db_index=True)
    initial_token_digest = models.CharField(max_length=64, blank=True, db_index=True)
    registration_status = models.CharField(max_length=16, choices=Registration.choices, default=Registration.NEW)
    handshake_status = models.CharField(max_length=10, choices=Handshake.choices, default=Handshake.NONE)
    # What we ask of the peer in our Handshake / HandshakeAcknowledge.
    heartbeat_interval_wanted_s = models.PositiveIntegerField(default=60, validators=[MinValueValidator(1)])
    measurement_configuration = models.JSONField(default=list, blank=True,
                                                 help_text='e.g. ["CONTINUOUS"]; what we ask the peer for.')
    # What the peer asked of us (its RequiredBehaviour).
    peer_required_behaviour = models.JSONField(null=True, blank=True)
    last_heartbeat_sent_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_received_at = models.DateTimeField(null=True, blank=True)
    peer_offline_mode_at = models.DateTimeField(null=True, blank=True,
                                                help_text="From the peer's last Heartbeat: offline after this.")
    offline_alerted_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["cpo__name"]
        verbose_name = "OSCP peer (Flexibility Provider)"

    def __str__(self) -> str:
        return f"OSCP {self.cpo.name}"

    @property
    def heartbeat_interval_s(self) -> int | None:
        """Seconds between the heartbeats the peer wants from us (None: it does not care)."""
        value = (self.peer_required_behaviour or {}).get("heartbeat_interval")
        return max(1, int(value)) if isinstance(value, int | float) else None

    @property
    def is_peer_online(self) -> bool:
        return self.peer_offline_mode_at is not None and self.peer_offline_mode_at > clock.now()

    def token_matches(self, token: str) -> bool:
        digest = token_digest(token)
        return digest in {self.token_from_peer_digest, self.initial_token_digest} - {""}


class CapacityGroup(PublicIdModel):
    """A charge point group behind one congestion point (OSCP group_id), agreed with the peer out of band.

    Flexpower-style capacity: `peak_capacity_kw` between `peak_start` and `peak_end` (local market time),
    `offpeak_capacity_kw` otherwise. `fallback_capacity_kw` is the standing FALLBACK_CONSUMPTION forecast the
    peer applies when we go silent.
    """

    peer = models.ForeignKey(OscpPeer, on_delete=models.PROTECT, related_name="groups")
    group_id = models.CharField(max_length=100)
    congestion_point = models.ForeignKey(CongestionPoint, on_delete=models.PROTECT, related_name="+")
    charge_points = models.ManyToManyField(ChargePoint, blank=True, related_name="capacity_groups")
    offpeak_capacity_kw = models.DecimalField(max_digits=9, decimal_places=1,
                                              validators=[MinValueValidator(Decimal("0"))])
    peak_capacity_kw = models.DecimalField(max_digits=9, decimal_places=1, validators=[MinValueValidator(Decimal("0"))])
    peak_start = models.TimeField(default=time(17, 0))
    peak_end = models.TimeField(default=time(21, 0))
    fallback_capacity_kw = models.DecimalField(max_digits=9, decimal_places=1,
                                               validators=[MinValueValidator(Decimal("0"))])
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["group_id"]
        verbose_name = "OSCP capacity group"
        constraints = [
            models.UniqueConstraint(fields=["peer", "group_id"], name="oscp_group_id_unique_per_peer"),
            models.CheckConstraint(condition=Q(peak_start__lt=models.F("peak_end")), name="oscp_peak_window_ordered"),
        ]

    def __str__(self) -> str:
        return self.group_id


class OscpOutboundMessage(BaseModel):
    """The OSCP outbox: one POST/PUT/DELETE to a peer, written in the same transaction as the decision.

    The id is the X-Request-ID. Lifecycle: PENDING -> SENDING -> SENT; a transient failure goes back to
    PENDING with `next_attempt_at` (backoff + jitter) until MAX attempts, then DEAD_LETTER; a permanent refusal
    (4xx that will not change) is FAILED. FAILED and DEAD_LETTER can be re-queued from the admin. A newer
    message with the same `supersede_key` makes an unsent older one SUPERSEDED; forecasts whose blocks have all
    ended before they could be sent are EXPIRED (never replayed).
    """

    class Endpoint(models.TextChoices):
        REGISTER = "register", "Register"
        HANDSHAKE = "handshake", "Handshake"
        HANDSHAKE_ACKNOWLEDGE = "handshake_acknowledge", "HandshakeAcknowledge"
        HEARTBEAT = "heartbeat", "Heartbeat"
        UPDATE_GROUP_CAPACITY_FORECAST = "update_group_capacity_forecast", "UpdateGroupCapacityForecast"

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        SENDING = "SENDING", "Sending"
        SENT = "SENT", "Sent (2xx)"
        FAILED = "FAILED", "Failed (refused by peer)"
        DEAD_LETTER = "DEAD_LETTER", "Dead letter (retries exhausted)"
        SUPERSEDED = "SUPERSEDED", "Superseded"
        EXPIRED = "EXPIRED", "Expired before sending"

    RETRIABLE_BY_OPERATOR = frozenset({Status.FAILED, Status.DEAD_LETTER})

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    peer = models.ForeignKey(OscpPeer, on_delete=models.PROTECT, related_name="outbound_messages")
    endpoint = models.CharField(max_length=40, choices=Endpoint.choices)
    method = models.CharField(max_length=6, default="POST")
    body = models.JSONField(null=True, blank=True)
    correlation_id = models.CharField(max_length=100, blank=True)
    # Register is authenticated with a token other than token_for_peer (token A, or the token in the peer's Register).
    auth_token = EncryptedTokenField(blank=True)
    group = models.ForeignKey(CapacityGroup, null=True, blank=True, on_delete=models.PROTECT, related_name="messages")
    flex_order = models.ForeignKey(FlexOrder, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    supersede_key = models.CharField(max_length=200, blank=True, db_index=True)
    valid_until = models.DateTimeField(null=True, blank=True, help_text="Not sent after this (end of the last block).")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "OSCP outbound message"
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.endpoint} to {self.peer_id} [{self.status}]"


class OscpInboundMessage(BaseModel):
    """Every message a peer sent us, by its X-Request-ID: the log, and the guard against double-processing."""

    id = models.BigAutoField(primary_key=True)
    peer = models.ForeignKey(OscpPeer, on_delete=models.PROTECT, related_name="inbound_messages")
    endpoint = models.CharField(max_length=40)
    method = models.CharField(max_length=6, default="POST")
    request_id = models.CharField(max_length=100)
    correlation_id = models.CharField(max_length=100, blank=True)
    body = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "OSCP inbound message"
        constraints = [
            models.UniqueConstraint(fields=["peer", "endpoint", "request_id"], name="oscp_inbound_request_once")
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.request_id}"


class GroupMeasurement(BaseModel):
    """One cumulative energy register reading from UpdateGroupMeasurements: evidence for settlement.

    Stored as sent plus `value_kwh` normalised; one row per (group, measure time, direction, energy type, phase),
    so a repeated message does not count twice.
    """

    id = models.BigAutoField(primary_key=True)
    group = models.ForeignKey(CapacityGroup, on_delete=models.PROTECT, related_name="measurements")
    inbound = models.ForeignKey(OscpInboundMessage, on_delete=models.PROTECT, related_name="+")
    value = models.DecimalField(max_digits=16, decimal_places=4)
    unit = models.CharField(max_length=3)
    value_kwh = models.DecimalField(max_digits=16, decimal_places=6)
    phase = models.CharField(max_length=7)
    direction = models.CharField(max_length=6)
    energy_type = models.CharField(max_length=11, default="TOTAL")
    measure_time = models.DateTimeField(db_index=True)
    initial_measure_time = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-measure_time"]
        verbose_name = "OSCP group measurement"
        constraints = [
            models.UniqueConstraint(fields=["group", "measure_time", "direction", "energy_type", "phase"],
                                    name="oscp_measurement_once")
        ]

    def __str__(self) -> str:
        return f"{self.group} {self.measure_time:%Y-%m-%d %H:%M} {self.value} {self.unit}"


class ComplianceError(BaseModel):
    """GroupCapacityComplianceError: the peer cannot keep a forecast we sent. An alert until someone acknowledges it.

    The message carries no group_id: the group comes from the forecast its X-Correlation-ID names, when it names one.
    """

    id = models.BigAutoField(primary_key=True)
    peer = models.ForeignKey(OscpPeer, on_delete=models.PROTECT, related_name="compliance_errors")
    inbound = models.OneToOneField(OscpInboundMessage, on_delete=models.PROTECT, related_name="+")
    forecast = models.ForeignKey(OscpOutboundMessage, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="compliance_errors")
    group = models.ForeignKey(CapacityGroup, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    message = models.TextField()
    forecasted_blocks = models.JSONField(default=list, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "OSCP compliance error"

    def __str__(self) -> str:
        return f"{self.peer}: {self.message[:60]}"


class CapacityAdjustment(BaseModel):
    """An AdjustGroupCapacityForecast request and our decision; granted blocks feed every later forecast."""

    class Decision(models.TextChoices):
        GRANTED = "GRANTED", "Granted"
        PARTIAL = "PARTIAL", "Partly granted"
        DENIED = "DENIED", "Denied"

    id = models.BigAutoField(primary_key=True)
    group = models.ForeignKey(CapacityGroup, on_delete=models.PROTECT, related_name="adjustments")
    inbound = models.OneToOneField(OscpInboundMessage, on_delete=models.PROTECT, related_name="+")
    forecast_type = models.CharField(max_length=20)
    requested_blocks = models.JSONField()
    # [{"start": iso, "end": iso, "capacity_kw": float}] at ISP resolution: what we allow from now on.
    granted_blocks = models.JSONField(default=list, blank=True)
    decision = models.CharField(max_length=8, choices=Decision.choices)
    reason = models.TextField(blank=True)
    response = models.ForeignKey(OscpOutboundMessage, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="+")

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "OSCP capacity adjustment request"

    def __str__(self) -> str:
        return f"{self.group} {self.decision}"
