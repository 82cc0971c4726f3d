"""Shared pieces of the market services: input shapes, receiver validation, audited state transitions.

Validation follows the UFTP 3.1 receiver rules (../shared/specs/uftp/UFTP-BRIEF.md section 6); every
refusal is an ApplicationError with a stable code and the field at fault. The codes:

    isp_out_of_bounds, isp_conflict, missing_isps, isp_in_past, period_in_past, gate_closed,
    lacking_requested_disposition, power_discrepancy, requested_power_discrepancy, power_value_rejection,
    expiration_out_of_bounds, wrong_role, foreign_congestion_point, congestion_point_not_represented,
    unknown_reference, reference_period_mismatch, reference_congestion_point_mismatch, reference_expired,
    reference_revoked, reference_not_open, reference_superseded, request_mismatch, wrong_power_sign, empty_offer,
    price_precision, invalid_price, currency_rejected, isp_duration_rejected, time_zone_rejected, no_baseline,
    no_mutex_offer_support, duplicate_option_reference, invalid_activation_factor, activation_factor_out_of_bounds,
    unknown_option, option_required, duplicate_message_id (409), subordinate_revision, flexibility_procured (409),
    revocation_too_late, not_owner, unknown_contract, no_agreement, deadline_expired, reservation_increase,
    invalid_choice, invalid_state (409), offer_expired, not_expired
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from django.db import models

from common import isp as isp_time
from common import time as clock
from common.audit import audit_record
from common.exceptions import ApplicationError, TransitionError
from common.models import audit_payload
from common.sql import seed_prefetch_cache
from market.models import CongestionPoint, Market, Participant, User

Actor = User | None
M = TypeVar("M", bound=models.Model)


@dataclass(frozen=True)
class IspBand:
    """One FlexRequest ISP as given by a DSO."""

    isp: int
    disposition: str
    min_power_w: int
    max_power_w: int


@dataclass(frozen=True)
class IspPower:
    """One ISP with a power (offer option, order, prognosis, reservation update)."""

    isp: int
    power_w: int


@dataclass(frozen=True)
class OfferOptionInput:
    """One option of a FlexOffer: the power per ISP and the price for all of it."""

    option_reference: str
    price_eur: Decimal
    isps: Sequence[IspPower]
    min_activation_factor: Decimal = Decimal("1.00")


def now() -> datetime:
    return clock.now()


# --- shared validation ------------------------------------------------------------------------------


def require_role(participant: Participant, role: str, *, field: str = "participant") -> None:
    if participant.role != role:
        raise ApplicationError(f"Only a {role} participant may do this; {participant} is {participant.role}.",
                               code="wrong_role", field=field)


def validate_market_frame(*, market: Market, isp_duration: str | None, time_zone: str | None,
                          currency: str | None = None) -> None:
    """The market-wide constants a UFTP message repeats, so a receiver can refuse a mismatch."""
    if isp_duration is not None and isp_duration != f"PT{market.isp_minutes}M":
        raise ApplicationError(f"This market's ISPs last PT{market.isp_minutes}M.", code="isp_duration_rejected",
                               field="isp_duration")
    if time_zone is not None and time_zone != market.time_zone:
        raise ApplicationError(f"This market's time zone is {market.time_zone}.", code="time_zone_rejected",
                               field="time_zone")
    if currency is not None and currency != market.currency:
        raise ApplicationError(f"This market settles in {market.currency}.", code="currency_rejected",
                               field="currency")


def validate_isp_indexes(*, period: date, indexes: Sequence[int], field: str = "isps") -> None:
    """At least one ISP, each inside the day (92/96/100 ISPs), none twice."""
    if not indexes:
        raise ApplicationError("At least one ISP is required.", code="missing_isps", field=field)
    count = isp_time.isp_count(period)
    seen: set[int] = set()
    for position, index in enumerate(indexes):
        if not 1 <= index <= count:
            raise ApplicationError(
                f"ISP {index} is outside {period.isoformat()}, which has {count} ISPs.",
                code="isp_out_of_bounds",
                field=f"{field}[{position}].isp",
            )
        if index in seen:
            raise ApplicationError(f"ISP {index} appears twice.", code="isp_conflict", field=f"{field}[{position}].isp")
        seen.add(index)


def positioned(indexes: Iterable[int], keep: Iterable[bool] | None = None) -> list[tuple[int, int]]:
    """(position in the message, ISP) pairs, optionally only where `keep` is true: error fields name the row
    the sender wrote, not its place in a filtered list."""
    pairs = list(enumerate(indexes))
    if keep is None:
        return pairs
    return [pair for pair, wanted in zip(pairs, keep, strict=True) if wanted]


def validate_future_isps(*, period: date, rows: Iterable[tuple[int, int]], at: datetime, field: str = "isps") -> None:
    """No ISP that has started; `rows` are (position, ISP) pairs (see positioned())."""
    if isp_time.day_end(period) <= at:
        raise ApplicationError(f"The period {period.isoformat()} is over.", code="period_in_past", field="period")
    for position, index in rows:
        if isp_time.isp_start(period, index) <= at:
            raise ApplicationError(
                f"ISP {index} of {period.isoformat()} has already started.",
                code="isp_in_past",
                field=f"{field}[{position}].isp",
            )


def validate_gate_closure(
    *, point: CongestionPoint, period: date, rows: Iterable[tuple[int, int]], at: datetime, field: str = "isps"
) -> None:
    """No new offers (or requested ISPs) for an ISP later than the market's gate closure before it starts."""
    lead = timedelta(minutes=point.market.gate_closure_minutes)
    for position, index in rows:
        if isp_time.isp_start(period, index) - lead <= at:
            raise ApplicationError(
                f"Gate closure: ISP {index} closed {point.market.gate_closure_minutes} minutes before it starts.",
                code="gate_closed",
                field=f"{field}[{position}].isp",
            )


def validate_powers(*, market: Market, rows: Sequence[IspPower], field: str = "isps",
                    attribute: str = "power_w") -> None:
    """Refuse implausible magnitudes ('Power value rejection'); `attribute` names the field in the error."""
    for position, row in enumerate(rows):
        if abs(row.power_w) > market.max_power_w:
            raise ApplicationError(
                f"ISP {row.isp}: {row.power_w} W is beyond the plausible {market.max_power_w} W.",
                code="power_value_rejection",
                field=f"{field}[{position}].{attribute}",
            )


def validate_expiry(*, expires_at: datetime, period: date, last_isp: int, at: datetime) -> None:
    """ExpirationDateTime in the future and not after the end of the last ISP of the message."""
    if expires_at <= at:
        raise ApplicationError("The expiry time must be in the future.", code="expiration_out_of_bounds",
                               field="expires_at")
    if expires_at > isp_time.isp_end(period, last_isp):
        raise ApplicationError(
            "The expiry time must not be after the end of the last ISP in the message.",
            code="expiration_out_of_bounds",
            field="expires_at",
        )


def validate_price(price_eur: Decimal, *, field: str = "price_eur") -> Decimal:
    """Non-negative, at most cent precision (EUR's minor unit, as Java peers demand); returns it as 2 decimals."""
    if price_eur < 0:
        raise ApplicationError("The price cannot be negative.", code="invalid_price", field=field)
    if price_eur != price_eur.quantize(Decimal("0.01")):
        raise ApplicationError("EUR prices have at most 2 decimals.", code="price_precision", field=field)
    return price_eur.quantize(Decimal("0.01"))


# --- message identity -------------------------------------------------------------------------------


def content_hash(payload: dict[str, Any]) -> str:
    """SHA-256 of a canonical JSON rendering of a message's content."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def already_submitted(model: type[M], *, message_id: Any, sender: dict[str, Any], digest: str) -> M | None:
    """UFTP rule 9: a MessageID seen before from the same sender with the same content is 'Already Submitted'
    (return the first result); with other content, or from another sender, it is a 'Duplicate Identifier'."""
    if message_id is None:
        return None
    existing = model._default_manager.filter(message_id=message_id).first()
    if existing is None:
        return None
    if all(getattr(existing, f"{key}_id") == value.pk for key, value in sender.items()) and (
        getattr(existing, "content_hash", "") == digest
    ):
        return existing
    raise ApplicationError("This message id was already used for another message.", code="duplicate_message_id",
                           field="message_id", status_code=409)


# --- transitions ------------------------------------------------------------------------------------


def transition(
    obj: Any,
    *,
    allowed_from: Iterable[str],
    to: str,
    action: str,
    actor: Actor,
    actor_label: str = "",
    audit_fields: list[str],
    code: str = "invalid_state",
) -> None:
    """Move obj.status from one of `allowed_from` to `to`, claiming the row so concurrent callers cannot both win."""
    allowed = tuple(allowed_from)
    before = audit_payload(obj, audit_fields)
    claimed = type(obj).objects.filter(pk=obj.pk, status__in=allowed).update(status=to, updated_at=now())
    if claimed != 1:
        obj.refresh_from_db(fields=["status"])
        raise TransitionError(
            f"{type(obj).__name__} is {obj.status}; {action} needs one of {', '.join(allowed)}.",
            code=code,
            extra={"current_status": obj.status},
        )
    obj.status = to
    audit_record(obj=obj, action=action, actor=actor, actor_label=actor_label, before=before,
                 after=audit_payload(obj, audit_fields))


remember_related = seed_prefetch_cache


# full_clean() without the per-foreign-key existence queries: the services pass model instances they have
# just loaded, and the database enforces the keys and unique fields anyway.
def clean_fields_only(instance: models.Model) -> None:
    relation_fields = [field.name for field in instance._meta.fields if field.is_relation]
    instance.full_clean(exclude=relation_fields, validate_unique=False, validate_constraints=False)
