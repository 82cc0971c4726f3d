"""The dispatch outbox: commands sent to CPOs, written in the same transaction as the decision."""

from __future__ import annotations

import uuid

from django.db import models

from aggregator.models.operators import ChargePointOperator
from aggregator.models.portfolio import ChargingSession, SessionSchedule
from common.models import BaseModel
from market.models import FlexOrder


class ChargingProfileCommand(BaseModel):
    """An outbox row: one OCPI chargingprofiles call to a CPO, written with the decision that caused it.

    Lifecycle (OCPI-BRIEF 6.5, aggregator.delivery): PENDING -> SENDING (claimed by one worker, under a lease)
    -> the CPO's synchronous answer: ACCEPTED | REJECTED | NOT_SUPPORTED | UNKNOWN_SESSION; TOO_OFTEN and
    transient failures go back to PENDING with `next_attempt_at` (exponential backoff with jitter) until
    the attempts run out (DEAD_LETTER); permanent failures end FAILED. For ACCEPTED the CPO's async result
    follows: RESULT_ACCEPTED | RESULT_REJECTED | RESULT_UNKNOWN, or TIMED_OUT when none came within the
    CPO's timeout. A newer command for the session supersedes an unsent one (SUPERSEDED). The id is in the
    response_url, so results find their command.
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
        TIMED_OUT = "TIMED_OUT", "No result within the CPO's timeout"
        DEAD_LETTER = "DEAD_LETTER", "Dead letter (attempts exhausted)"

    FINAL_STATUSES = frozenset(
        {
            Status.REJECTED,
            Status.NOT_SUPPORTED,
            Status.UNKNOWN_SESSION,
            Status.FAILED,
            Status.SUPERSEDED,
            Status.RESULT_ACCEPTED,
            Status.RESULT_REJECTED,
            Status.RESULT_UNKNOWN,
            Status.TIMED_OUT,
            Status.DEAD_LETTER,
        }
    )

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=5, choices=Kind.choices, default=Kind.SET)
    # Indexes: every row is updated about three times on its way (claimed, answered, result), each time with a new
    # status, so every index is written again each time; only those a query needs are kept. session, flex_order and
    # status are served by the composite indexes below that start with them; schedule is never queried.
    cpo = models.ForeignKey(ChargePointOperator, on_delete=models.PROTECT, related_name="commands")
    session = models.ForeignKey(ChargingSession, on_delete=models.PROTECT, related_name="commands", db_index=False)
    schedule = models.ForeignKey(SessionSchedule, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                 db_index=False)
    flex_order = models.ForeignKey(FlexOrder, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                   db_index=False)
    request_body = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    response_timeout_s = models.PositiveIntegerField(null=True, blank=True)
    result_at = models.DateTimeField(null=True, blank=True)
    result_body = models.JSONField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="Not sent before this (backoff).")
    lease_id = models.UUIDField(null=True, blank=True, editable=False, help_text="The claim of the sending worker.")
    lease_until = models.DateTimeField(null=True, blank=True, help_text="A SENDING command past this is reclaimed.")
    result_due_at = models.DateTimeField(null=True, blank=True, help_text="ACCEPTED without a result by then: TIMED_OUT.")

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "charging profile command"
        indexes = [
            models.Index(fields=["flex_order", "status"]),
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["session", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.session.cpo_session_id} [{self.status}]"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES
