"""Writes on the exchange: every USEF state transition is one function here, in one transaction, audited.

Rules follow UFTP 3.1 receiver validation (../shared/specs/uftp/UFTP-BRIEF.md section 6); each refusal
raises ApplicationError with a stable code and the field at fault:

    isp_out_of_bounds, isp_conflict, missing_isps, isp_in_past, period_in_past, lacking_requested_disposition,
    power_discrepancy, requested_power_discrepancy, expiration_out_of_bounds, wrong_role, foreign_congestion_point,
    congestion_point_not_represented, reference_period_mismatch, reference_congestion_point_mismatch,
    reference_expired, reference_not_open, request_mismatch, wrong_power_sign, empty_offer, price_precision,
    no_baseline, unknown_reference, invalid_state (409), offer_expired, activation_factor_out_of_bounds,
    not_owner, invalid_price, invalid_choice
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import transaction
from django.db.models import Max

from common import isp as isp_time
from common.audit import audit_record
from common.exceptions import ApplicationError, TransitionError
from common.models import audit_payload
from common.time import now
from market import events, selectors
from market.models import (
    CongestionPoint,
    DPrognosis,
    DPrognosisIsp,
    FlexOffer,
    FlexOfferIsp,
    FlexOrder,
    FlexOrderIsp,
    FlexRequest,
    FlexRequestIsp,
    Participant,
    User,
)

Actor = User | None


@dataclass(frozen=True)
class IspBand:
    """One FlexRequest ISP as given by a DSO."""

    isp: int
    disposition: str
    min_power_w: int
    max_power_w: int


@dataclass(frozen=True)
class IspPower:
    """One ISP with a power (offer, order, prognosis)."""

    isp: int
    power_w: int


# --- shared validation ------------------------------------------------------------------------------


def _require_role(participant: Participant, role: str, *, field: str = "participant") -> None:
    if participant.role != role:
        raise ApplicationError(f"Only a {role} participant may do this; {participant} is {participant.role}.",
                               code="wrong_role", field=field)


def _validate_isp_indexes(*, period: date, indexes: Sequence[int], field: str = "isps") -> None:
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


def _validate_future_isps(*, period: date, indexes: Iterable[int], at: datetime, field: str = "isps") -> None:
    if isp_time.day_end(period) <= at:
        raise ApplicationError(f"The period {period.isoformat()} is over.", code="period_in_past", field="period")
    for position, index in enumerate(indexes):
        if isp_time.isp_start(period, index) <= at:
            raise ApplicationError(
                f"ISP {index} of {period.isoformat()} has already started.",
                code="isp_in_past",
                field=f"{field}[{position}].isp",
            )


def _validate_expiry(*, expires_at: datetime, period: date, last_isp: int, at: datetime) -> None:
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


def _new_revision(model: type[FlexRequest] | type[DPrognosis], **scope: Any) -> int:
    current = model.objects.filter(**scope).aggregate(top=Max("revision"))["top"]
    return (current or 0) + 1


# --- FlexRequest ------------------------------------------------------------------------------------

REQUEST_AUDIT_FIELDS = ["status", "revision", "expires_at"]


def _validate_request_bands(*, period: date, isps: Sequence[IspBand], expires_at: datetime, at: datetime) -> None:
    """Receiver validation of a FlexRequest's ISPs, on creation and again when a (possibly edited) draft opens."""
    indexes = [band.isp for band in isps]
    _validate_isp_indexes(period=period, indexes=indexes)
    requested = [band for band in isps if band.disposition == FlexRequestIsp.Disposition.REQUESTED]
    if not requested:
        raise ApplicationError("A flex request needs at least one ISP with disposition Requested.",
                               code="lacking_requested_disposition", field="isps")
    for position, band in enumerate(isps):
        field = f"isps[{position}]"
        if band.disposition not in FlexRequestIsp.Disposition.values:
            raise ApplicationError(f"Unknown disposition {band.disposition!r}.", code="invalid_choice",
                                   field=f"{field}.disposition")
        if band.min_power_w > band.max_power_w:
            raise ApplicationError(f"ISP {band.isp}: min_power_w is above max_power_w.", code="power_discrepancy",
                                   field=f"{field}.min_power_w")
        if band.disposition == FlexRequestIsp.Disposition.REQUESTED and band.min_power_w < 0 < band.max_power_w:
            raise ApplicationError(
                f"ISP {band.isp}: a Requested band must lie on one side of zero.",
                code="requested_power_discrepancy",
                field=f"{field}.max_power_w",
            )
    _validate_future_isps(period=period, indexes=[b.isp for b in requested], at=at)
    _validate_expiry(expires_at=expires_at, period=period, last_isp=max(b.isp for b in requested), at=at)


@transaction.atomic
def flex_request_create(
    *,
    dso: Participant,
    congestion_point: CongestionPoint,
    period: date,
    isps: Sequence[IspBand],
    expires_at: datetime,
    service_type: str = "",
    actor: Actor = None,
    open_now: bool = True,
) -> FlexRequest:
    """Create a flex request (DRAFT, or OPEN at once when `open_now`), validated as a UFTP receiver would."""
    _require_role(dso, Participant.Role.DSO, field="dso")
    if congestion_point.dso_id != dso.pk:
        raise ApplicationError("This congestion point belongs to another DSO.", code="foreign_congestion_point",
                               field="congestion_point")
    _validate_request_bands(period=period, isps=isps, expires_at=expires_at, at=now())

    flex_request = FlexRequest(
        dso=dso,
        congestion_point=congestion_point,
        period=period,
        revision=_new_revision(FlexRequest, congestion_point=congestion_point, period=period, dso=dso),
        expires_at=expires_at,
        service_type=service_type,
        status=FlexRequest.Status.DRAFT,
        created_by=actor,
    )
    flex_request.full_clean()
    flex_request.save()
    FlexRequestIsp.objects.bulk_create(
        FlexRequestIsp(
            flex_request=flex_request,
            isp=band.isp,
            disposition=band.disposition,
            min_power_w=band.min_power_w,
            max_power_w=band.max_power_w,
        )
        for band in sorted(isps, key=lambda b: b.isp)
    )
    audit_record(obj=flex_request, action="flex_request.created", actor=actor,
                 after=audit_payload(flex_request, REQUEST_AUDIT_FIELDS))
    if open_now:
        flex_request_open(flex_request=flex_request, actor=actor)
    return flex_request


def _transition(
    obj: Any,
    *,
    allowed_from: Iterable[str],
    to: str,
    action: str,
    actor: Actor,
    actor_label: str = "",
    audit_fields: list[str],
) -> None:
    """Move obj.status from one of `allowed_from` to `to`, claiming the row so concurrent callers cannot both win."""
    allowed = tuple(allowed_from)
    before = audit_payload(obj, audit_fields)
    claimed = type(obj).objects.filter(pk=obj.pk, status__in=allowed).update(status=to, updated_at=now())
    if claimed != 1:
        obj.refresh_from_db(fields=["status"])
        raise TransitionError(
            f"{type(obj).__name__} is {obj.status}; {action} needs one of {', '.join(allowed)}.",
            extra={"current_status": obj.status},
        )
    obj.status = to
    audit_record(obj=obj, action=action, actor=actor, actor_label=actor_label, before=before,
                 after=audit_payload(obj, audit_fields))


@transaction.atomic
def flex_request_open(*, flex_request: FlexRequest, actor: Actor = None) -> FlexRequest:
    """DRAFT -> OPEN; aggregators on the point can now see and answer it."""
    bands = [IspBand(isp=row.isp, disposition=row.disposition, min_power_w=row.min_power_w,
                     max_power_w=row.max_power_w) for row in flex_request.isps.all()]
    _validate_request_bands(period=flex_request.period, isps=bands, expires_at=flex_request.expires_at, at=now())
    _transition(flex_request, allowed_from=[FlexRequest.Status.DRAFT], to=FlexRequest.Status.OPEN,
                action="flex_request.opened", actor=actor, audit_fields=REQUEST_AUDIT_FIELDS)
    events.event_publish(name=events.FLEX_REQUEST_OPENED, object_id=flex_request.pk)
    return flex_request


@transaction.atomic
def flex_request_cancel(*, flex_request: FlexRequest, actor: Actor = None) -> FlexRequest:
    """DRAFT/OPEN/PARTIALLY_ORDERED -> CANCELLED. Orders already placed stay binding; open offers lapse."""
    _transition(
        flex_request,
        allowed_from=[FlexRequest.Status.DRAFT, FlexRequest.Status.OPEN, FlexRequest.Status.PARTIALLY_ORDERED],
        to=FlexRequest.Status.CANCELLED,
        action="flex_request.cancelled",
        actor=actor,
        audit_fields=REQUEST_AUDIT_FIELDS,
    )
    for offer in flex_request.offers.filter(status=FlexOffer.Status.SUBMITTED):
        _transition(offer, allowed_from=[FlexOffer.Status.SUBMITTED], to=FlexOffer.Status.REJECTED,
                    action="flex_offer.rejected", actor=actor, actor_label="request cancelled",
                    audit_fields=OFFER_AUDIT_FIELDS)
    return flex_request


@transaction.atomic
def flex_request_expire(*, flex_request: FlexRequest) -> FlexRequest:
    """OPEN -> EXPIRED once its expiry time has passed (partially ordered requests keep their status)."""
    if flex_request.expires_at > now():
        raise TransitionError("The request has not reached its expiry time.", code="not_expired")
    _transition(flex_request, allowed_from=[FlexRequest.Status.OPEN], to=FlexRequest.Status.EXPIRED,
                action="flex_request.expired", actor=None, actor_label="expiry", audit_fields=REQUEST_AUDIT_FIELDS)
    return flex_request


def _flex_request_update_coverage(*, flex_request: FlexRequest, actor: Actor) -> None:
    """After an order: ORDERED when every Requested ISP is covered by ordered flex, else PARTIALLY_ORDERED."""
    ordered = selectors.flex_request_ordered_power_by_isp(flex_request=flex_request)
    covered = True
    for row in flex_request.isps.filter(disposition=FlexRequestIsp.Disposition.REQUESTED):
        total = ordered.get(row.isp, 0)
        if row.max_power_w <= 0:
            covered &= total <= row.max_power_w  # downward: at least |MaxPower| less consumption
        else:
            covered &= total >= row.min_power_w  # upward: at least MinPower more consumption
    target = FlexRequest.Status.ORDERED if covered else FlexRequest.Status.PARTIALLY_ORDERED
    if flex_request.status != target:
        _transition(
            flex_request,
            allowed_from=[FlexRequest.Status.OPEN, FlexRequest.Status.PARTIALLY_ORDERED],
            to=target,
            action=f"flex_request.{target}",
            actor=actor,
            audit_fields=REQUEST_AUDIT_FIELDS,
        )


# --- D-prognosis ------------------------------------------------------------------------------------

PROGNOSIS_AUDIT_FIELDS = ["status", "revision"]


@transaction.atomic
def d_prognosis_submit(
    *,
    aggregator: Participant,
    congestion_point: CongestionPoint,
    period: date,
    isps: Sequence[IspPower],
    actor: Actor = None,
    actor_label: str = "",
) -> DPrognosis:
    """Store a new D-prognosis revision: every ISP of the day, from an aggregator active on the point.

    A valid prognosis is accepted at once (the DSO's D-PrognosisResponse is automatic) and supersedes
    the aggregator's earlier revisions for the point and day.
    """
    _require_role(aggregator, Participant.Role.AGR, field="aggregator")
    if not selectors.aggregator_represents(aggregator=aggregator, congestion_point=congestion_point, day=period):
        raise ApplicationError("You represent no connection on this congestion point on that day.",
                               code="congestion_point_not_represented", field="congestion_point")
    if isp_time.day_end(period) <= now():
        raise ApplicationError(f"The period {period.isoformat()} is over.", code="period_in_past", field="period")
    indexes = [row.isp for row in isps]
    _validate_isp_indexes(period=period, indexes=indexes)
    count = isp_time.isp_count(period)
    if len(indexes) != count:
        missing = sorted(set(range(1, count + 1)) - set(indexes))
        raise ApplicationError(
            f"A D-prognosis covers every ISP of the day ({count}); missing: {missing[:10]}"
            + ("..." if len(missing) > 10 else ""),
            code="missing_isps",
            field="isps",
        )
    scope = {"aggregator": aggregator, "congestion_point": congestion_point, "period": period}
    previous = DPrognosis.objects.select_for_update().filter(
        **scope, status__in=[DPrognosis.Status.SUBMITTED, DPrognosis.Status.ACCEPTED]
    )
    for old in previous:
        _transition(old, allowed_from=[DPrognosis.Status.SUBMITTED, DPrognosis.Status.ACCEPTED],
                    to=DPrognosis.Status.SUPERSEDED, action="d_prognosis.superseded", actor=actor,
                    actor_label=actor_label, audit_fields=PROGNOSIS_AUDIT_FIELDS)
    prognosis = DPrognosis(**scope, revision=_new_revision(DPrognosis, **scope), status=DPrognosis.Status.ACCEPTED)
    prognosis.full_clean()
    prognosis.save()
    DPrognosisIsp.objects.bulk_create(
        DPrognosisIsp(d_prognosis=prognosis, isp=row.isp, power_w=row.power_w) for row in sorted(isps, key=lambda r: r.isp)
    )
    audit_record(obj=prognosis, action="d_prognosis.accepted", actor=actor, actor_label=actor_label,
                 after=audit_payload(prognosis, PROGNOSIS_AUDIT_FIELDS))
    return prognosis


# --- FlexOffer --------------------------------------------------------------------------------------

OFFER_AUDIT_FIELDS = ["status", "price_eur", "expires_at"]


@transaction.atomic
def flex_offer_submit(
    *,
    aggregator: Participant,
    congestion_point: CongestionPoint,
    period: date,
    isps: Sequence[IspPower],
    price_eur: Decimal,
    expires_at: datetime,
    flex_request: FlexRequest | None = None,
    d_prognosis: DPrognosis | None = None,
    actor: Actor = None,
    actor_label: str = "",
) -> FlexOffer:
    """Submit an offer, answering `flex_request` or unsolicited, against the aggregator's D-prognosis baseline."""
    _require_role(aggregator, Participant.Role.AGR, field="aggregator")
    at = now()
    if not selectors.aggregator_represents(aggregator=aggregator, congestion_point=congestion_point, day=period):
        raise ApplicationError("You represent no connection on this congestion point on that day.",
                               code="congestion_point_not_represented", field="congestion_point")
    indexes = [row.isp for row in isps]
    _validate_isp_indexes(period=period, indexes=indexes)
    _validate_future_isps(period=period, indexes=indexes, at=at)
    if all(row.power_w == 0 for row in isps):
        raise ApplicationError("An offer must change the power in at least one ISP.", code="empty_offer", field="isps")
    if price_eur < 0:
        raise ApplicationError("The price cannot be negative.", code="invalid_price", field="price_eur")
    if price_eur != price_eur.quantize(Decimal("0.01")):
        raise ApplicationError("EUR prices have at most 2 decimals.", code="price_precision", field="price_eur")
    price_eur = price_eur.quantize(Decimal("0.01"))  # 8.4000 -> 8.40: the precision is checked, trailing zeros go
    _validate_expiry(expires_at=expires_at, period=period, last_isp=max(indexes), at=at)

    if flex_request is not None:
        _validate_offer_against_request(flex_request=flex_request, congestion_point=congestion_point, period=period,
                                        isps=isps, expires_at=expires_at, at=at)

    if d_prognosis is None:
        d_prognosis = selectors.d_prognosis_current(aggregator=aggregator, congestion_point=congestion_point,
                                                    period=period)
        if d_prognosis is None:
            raise ApplicationError("Submit a D-prognosis for this congestion point and day first: it is the baseline.",
                                   code="no_baseline", field="d_prognosis")
    else:
        d_prognosis = DPrognosis.objects.get(pk=d_prognosis.pk)  # its status now, not a caller's stale copy
    if d_prognosis.aggregator_id != aggregator.pk:
        raise ApplicationError("Unknown D-prognosis reference.", code="unknown_reference", field="d_prognosis")
    if d_prognosis.congestion_point_id != congestion_point.pk or d_prognosis.period != period:
        raise ApplicationError("The D-prognosis is for another congestion point or day.",
                               code="reference_period_mismatch", field="d_prognosis")
    if d_prognosis.status != DPrognosis.Status.ACCEPTED:
        raise ApplicationError("The referenced D-prognosis is superseded or rejected.", code="no_baseline",
                               field="d_prognosis")

    message_id = uuid.uuid4()
    offer = FlexOffer(
        aggregator=aggregator,
        congestion_point=congestion_point,
        period=period,
        flex_request=flex_request,
        d_prognosis=d_prognosis,
        price_eur=price_eur,
        expires_at=expires_at,
        created_by=actor,
        message_id=message_id,
        # An unsolicited offer starts its own conversation.
        conversation_id=flex_request.conversation_id if flex_request else message_id,
    )
    offer.full_clean()
    offer.save()
    FlexOfferIsp.objects.bulk_create(
        FlexOfferIsp(flex_offer=offer, isp=row.isp, power_w=row.power_w) for row in sorted(isps, key=lambda r: r.isp)
    )
    audit_record(obj=offer, action="flex_offer.submitted", actor=actor, actor_label=actor_label,
                 after=audit_payload(offer, OFFER_AUDIT_FIELDS))
    events.event_publish(name=events.FLEX_OFFER_SUBMITTED, object_id=offer.pk)
    return offer


def _validate_offer_against_request(
    *,
    flex_request: FlexRequest,
    congestion_point: CongestionPoint,
    period: date,
    isps: Sequence[IspPower],
    expires_at: datetime,
    at: datetime,
) -> None:
    if flex_request.congestion_point_id != congestion_point.pk:
        raise ApplicationError("The flex request is for another congestion point.",
                               code="reference_congestion_point_mismatch", field="flex_request")
    if flex_request.period != period:
        raise ApplicationError("The flex request is for another day.", code="reference_period_mismatch",
                               field="flex_request")
    if flex_request.expires_at <= at or flex_request.status == FlexRequest.Status.EXPIRED:
        raise ApplicationError("The flex request has expired.", code="reference_expired", field="flex_request")
    if flex_request.status not in selectors.OPEN_REQUEST_STATUSES:
        raise ApplicationError(f"The flex request is {flex_request.status}.", code="reference_not_open",
                               field="flex_request")
    bands = {row.isp: row for row in flex_request.isps.all()}
    requested = {isp for isp, row in bands.items() if row.disposition == FlexRequestIsp.Disposition.REQUESTED}
    if not requested & {row.isp for row in isps if row.power_w != 0}:
        raise ApplicationError("A solicited offer must offer flex in at least one Requested ISP of the request.",
                               code="request_mismatch", field="isps")
    for position, row in enumerate(isps):
        band = bands.get(row.isp)
        if band is None or band.disposition != FlexRequestIsp.Disposition.REQUESTED or row.power_w == 0:
            continue
        downward = band.max_power_w <= 0
        if (downward and row.power_w > 0) or (not downward and row.power_w < 0):
            raise ApplicationError(
                f"ISP {row.isp}: the request asks for {'less' if downward else 'more'} consumption; "
                f"power_w must be {'negative' if downward else 'positive'}.",
                code="wrong_power_sign",
                field=f"isps[{position}].power_w",
            )


@transaction.atomic
def flex_offer_revoke(*, flex_offer: FlexOffer, aggregator: Participant, actor: Actor = None) -> FlexOffer:
    """SUBMITTED -> REVOKED by the aggregator that made it (FlexOfferRevocation); not once ordered."""
    if flex_offer.aggregator_id != aggregator.pk:
        raise ApplicationError("Only the aggregator that made an offer can revoke it.", code="not_owner",
                               field="flex_offer")
    _transition(flex_offer, allowed_from=[FlexOffer.Status.SUBMITTED], to=FlexOffer.Status.REVOKED,
                action="flex_offer.revoked", actor=actor, audit_fields=OFFER_AUDIT_FIELDS)
    return flex_offer


@transaction.atomic
def flex_offer_reject(*, flex_offer: FlexOffer, dso: Participant, actor: Actor = None) -> FlexOffer:
    """SUBMITTED -> REJECTED by the DSO owning the congestion point."""
    _require_dso_owns_offer(flex_offer=flex_offer, dso=dso)
    _transition(flex_offer, allowed_from=[FlexOffer.Status.SUBMITTED], to=FlexOffer.Status.REJECTED,
                action="flex_offer.rejected", actor=actor, audit_fields=OFFER_AUDIT_FIELDS)
    return flex_offer


@transaction.atomic
def flex_offer_expire(*, flex_offer: FlexOffer) -> FlexOffer:
    if flex_offer.expires_at > now():
        raise TransitionError("The offer has not reached its expiry time.", code="not_expired")
    _transition(flex_offer, allowed_from=[FlexOffer.Status.SUBMITTED], to=FlexOffer.Status.EXPIRED,
                action="flex_offer.expired", actor=None, actor_label="expiry", audit_fields=OFFER_AUDIT_FIELDS)
    return flex_offer


def _require_dso_owns_offer(*, flex_offer: FlexOffer, dso: Participant) -> None:
    _require_role(dso, Participant.Role.DSO, field="dso")
    if flex_offer.congestion_point.dso_id != dso.pk:
        raise ApplicationError("This offer is on another DSO's congestion point.", code="foreign_congestion_point",
                               field="flex_offer")


# --- FlexOrder --------------------------------------------------------------------------------------

ORDER_AUDIT_FIELDS = ["status", "price_eur", "activation_factor"]


def _order_reference(period: date) -> str:
    return f"ORD-{period:%Y%m%d}-{secrets.token_hex(4).upper()}"


@transaction.atomic
def flex_offer_accept(
    *, flex_offer: FlexOffer, dso: Participant, actor: Actor = None, activation_factor: Decimal = Decimal("1.00")
) -> FlexOrder:
    """The DSO buys an offer: SUBMITTED -> ACCEPTED and a binding FlexOrder copying its ISPs and price.

    Partial activation scales every ISP power and the price by `activation_factor`, which must lie in
    [min_activation_factor, 1]. Publishes flex_order.placed after commit (dispatch subscribes).
    """
    _require_dso_owns_offer(flex_offer=flex_offer, dso=dso)
    if not (flex_offer.min_activation_factor <= activation_factor <= Decimal("1.00")):
        raise ApplicationError(
            f"The activation factor must lie between {flex_offer.min_activation_factor} and 1.00.",
            code="activation_factor_out_of_bounds",
            field="activation_factor",
        )
    at = now()
    if flex_offer.expires_at <= at:
        raise ApplicationError("The offer has expired.", code="offer_expired", field="flex_offer")
    offer_isps = list(flex_offer.isps.all())
    if any(isp_time.isp_start(flex_offer.period, row.isp) <= at for row in offer_isps):
        raise ApplicationError("An ISP of the offer has already started.", code="isp_in_past", field="flex_offer")
    _transition(flex_offer, allowed_from=[FlexOffer.Status.SUBMITTED], to=FlexOffer.Status.ACCEPTED,
                action="flex_offer.accepted", actor=actor, audit_fields=OFFER_AUDIT_FIELDS)

    order = FlexOrder(
        dso=dso,
        aggregator=flex_offer.aggregator,
        congestion_point=flex_offer.congestion_point,
        period=flex_offer.period,
        conversation_id=flex_offer.conversation_id,
        flex_offer=flex_offer,
        d_prognosis=flex_offer.d_prognosis,
        order_reference=_order_reference(flex_offer.period),
        price_eur=(flex_offer.price_eur * activation_factor).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP),
        activation_factor=activation_factor,
        created_by=actor,
    )
    order.full_clean()
    order.save()
    FlexOrderIsp.objects.bulk_create(
        FlexOrderIsp(
            flex_order=order,
            isp=row.isp,
            power_w=int((Decimal(row.power_w) * activation_factor).to_integral_value(rounding=ROUND_HALF_UP)),
        )
        for row in offer_isps
    )
    audit_record(obj=order, action="flex_order.placed", actor=actor, after=audit_payload(order, ORDER_AUDIT_FIELDS))
    if flex_offer.flex_request_id:
        request = FlexRequest.objects.select_for_update().get(pk=flex_offer.flex_request_id)
        _flex_request_update_coverage(flex_request=request, actor=actor)
    events.event_publish(name=events.FLEX_ORDER_PLACED, object_id=order.pk)
    return order


@transaction.atomic
def flex_order_mark_dispatched(*, flex_order: FlexOrder, actor_label: str = "dispatch") -> FlexOrder:
    """PLACED -> DISPATCHED once the aggregator has sent the commands that deliver it."""
    _transition(flex_order, allowed_from=[FlexOrder.Status.PLACED], to=FlexOrder.Status.DISPATCHED,
                action="flex_order.dispatched", actor=None, actor_label=actor_label, audit_fields=ORDER_AUDIT_FIELDS)
    return flex_order


@transaction.atomic
def flex_order_mark_settled(*, flex_order: FlexOrder, actor_label: str = "settlement") -> FlexOrder:
    """PLACED/DISPATCHED -> SETTLED once a settlement statement covers it."""
    _transition(flex_order, allowed_from=[FlexOrder.Status.PLACED, FlexOrder.Status.DISPATCHED],
                to=FlexOrder.Status.SETTLED, action="flex_order.settled", actor=None, actor_label=actor_label,
                audit_fields=ORDER_AUDIT_FIELDS)
    return flex_order


# --- housekeeping -----------------------------------------------------------------------------------


def market_expire_due() -> dict[str, int]:
    """Expire every open request and submitted offer whose expiry time has passed (run by Celery beat)."""
    at = now()
    expired = {"flex_requests": 0, "flex_offers": 0}
    for request in FlexRequest.objects.filter(status=FlexRequest.Status.OPEN, expires_at__lte=at):
        try:
            flex_request_expire(flex_request=request)
            expired["flex_requests"] += 1
        except TransitionError:
            continue  # another worker got there first
    for offer in FlexOffer.objects.filter(status=FlexOffer.Status.SUBMITTED, expires_at__lte=at):
        try:
            flex_offer_expire(flex_offer=offer)
            expired["flex_offers"] += 1
        except TransitionError:
            continue
    return expired
