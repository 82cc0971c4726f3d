"""FlexRequest: a DSO asks for a change in power per ISP at one congestion point.

DRAFT -> OPEN -> PARTIALLY_ORDERED / ORDERED | EXPIRED | CANCELLED; a revision (same conversation, higher
revision number) moves its predecessor to SUPERSEDED.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from django.db import transaction
from django.db.models import Max

from common.audit import audit_record
from common.exceptions import ApplicationError, TransitionError
from common.models import audit_payload
from market import events, selectors
from market.models import CongestionPoint, FlexOffer, FlexRequest, FlexRequestIsp, Participant
from market.services._base import (
    Actor,
    IspBand,
    IspPower,
    already_submitted,
    content_hash,
    now,
    positioned,
    require_role,
    transition,
    validate_expiry,
    validate_future_isps,
    validate_gate_closure,
    validate_isp_indexes,
    validate_market_frame,
    validate_powers,
)

REQUEST_AUDIT_FIELDS = ["status", "revision", "expires_at"]
OFFER_AUDIT_FIELDS = ["status", "expires_at"]
CANCELLABLE = (FlexRequest.Status.DRAFT, FlexRequest.Status.OPEN, FlexRequest.Status.PARTIALLY_ORDERED)
REVISABLE = (FlexRequest.Status.DRAFT, FlexRequest.Status.OPEN)


def validate_request_bands(
    *, point: CongestionPoint, period: date, isps: Sequence[IspBand], expires_at: datetime, at: datetime
) -> None:
    """Receiver validation of a FlexRequest's ISPs, on creation and again when a (possibly edited) draft opens."""
    validate_isp_indexes(period=period, indexes=[band.isp for band in isps])
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
    for bound in ("min_power_w", "max_power_w"):
        validate_powers(market=point.market, rows=[IspPower(b.isp, getattr(b, bound)) for b in isps], attribute=bound)
    requested_rows = positioned((b.isp for b in isps),
                                keep=(b.disposition == FlexRequestIsp.Disposition.REQUESTED for b in isps))
    validate_future_isps(period=period, rows=requested_rows, at=at)
    validate_gate_closure(point=point, period=period, rows=requested_rows, at=at)
    validate_expiry(expires_at=expires_at, period=period, last_isp=max(isp for _, isp in requested_rows), at=at)


def _request_digest(*, point: CongestionPoint, period: date, isps: Sequence[IspBand], expires_at: datetime,
                    service_type: str) -> str:
    return content_hash({
        "congestion_point": point.ean, "period": period.isoformat(), "expires_at": expires_at.isoformat(),
        "service_type": service_type,
        "isps": sorted((b.isp, b.disposition, b.min_power_w, b.max_power_w) for b in isps),
    })


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
    actor_label: str = "",
    open_now: bool = True,
    message_id: Any = None,
    isp_duration: str | None = None,
    time_zone: str | None = None,
    _revises: FlexRequest | None = None,
) -> FlexRequest:
    """Create a flex request (DRAFT, or OPEN at once when `open_now`), validated as a UFTP receiver would."""
    require_role(dso, Participant.Role.DSO, field="dso")
    if congestion_point.dso_id != dso.pk:
        raise ApplicationError("This congestion point belongs to another DSO.", code="foreign_congestion_point",
                               field="congestion_point")
    validate_market_frame(market=congestion_point.market, isp_duration=isp_duration, time_zone=time_zone)
    digest = _request_digest(point=congestion_point, period=period, isps=isps, expires_at=expires_at,
                             service_type=service_type)
    existing = already_submitted(FlexRequest, message_id=message_id, sender={"dso": dso}, digest=digest)
    if existing is not None:
        return existing
    validate_request_bands(point=congestion_point, period=period, isps=isps, expires_at=expires_at, at=now())

    flex_request = FlexRequest(
        dso=dso,
        congestion_point=congestion_point,
        period=period,
        expires_at=expires_at,
        service_type=service_type,
        status=FlexRequest.Status.DRAFT,
        created_by=actor,
        content_hash=digest,
    )
    if message_id is not None:
        flex_request.message_id = message_id
    if _revises is not None:
        flex_request.conversation_id = _revises.conversation_id
        flex_request.revision = (
            FlexRequest.objects.filter(conversation_id=_revises.conversation_id).aggregate(top=Max("revision"))["top"]
            or 0
        ) + 1
    flex_request.full_clean()
    flex_request.save()
    FlexRequestIsp.objects.bulk_create(
        FlexRequestIsp(flex_request=flex_request, isp=band.isp, disposition=band.disposition,
                       min_power_w=band.min_power_w, max_power_w=band.max_power_w)
        for band in sorted(isps, key=lambda b: b.isp)
    )
    audit_record(obj=flex_request, action="flex_request.created", actor=actor, actor_label=actor_label,
                 after=audit_payload(flex_request, REQUEST_AUDIT_FIELDS))
    if open_now:
        flex_request_open(flex_request=flex_request, actor=actor, actor_label=actor_label)
    return flex_request


@transaction.atomic
def flex_request_revise(
    *,
    flex_request: FlexRequest,
    dso: Participant,
    isps: Sequence[IspBand],
    expires_at: datetime,
    service_type: str | None = None,
    actor: Actor = None,
    actor_label: str = "",
    message_id: Any = None,
) -> FlexRequest:
    """A new revision of a request in the same conversation; the earlier one becomes SUPERSEDED.

    Only requests without orders (DRAFT or OPEN) are revised: orders already placed stay tied to the revision
    they answered. Offers on the old revision lapse (REJECTED); aggregators answer the new one.
    """
    if flex_request.dso_id != dso.pk:
        raise ApplicationError("Unknown flex request reference.", code="unknown_reference", field="flex_request")
    # A resent revision (same message id and content) is 'Already Submitted': answer with the first result,
    # even though the original is superseded by now.
    resent = already_submitted(
        FlexRequest, message_id=message_id, sender={"dso": dso},
        digest=_request_digest(point=flex_request.congestion_point, period=flex_request.period, isps=isps,
                               expires_at=expires_at,
                               service_type=flex_request.service_type if service_type is None else service_type),
    )
    if resent is not None:
        return resent
    locked = FlexRequest.objects.select_for_update().get(pk=flex_request.pk)
    if locked.status not in REVISABLE:
        raise TransitionError(f"A {locked.status} request cannot be revised.", extra={"current_status": locked.status})
    revision = flex_request_create(
        dso=dso, congestion_point=locked.congestion_point, period=locked.period, isps=isps, expires_at=expires_at,
        service_type=locked.service_type if service_type is None else service_type, actor=actor,
        actor_label=actor_label, open_now=locked.status == FlexRequest.Status.OPEN, message_id=message_id, _revises=locked,
    )
    transition(locked, allowed_from=REVISABLE, to=FlexRequest.Status.SUPERSEDED, action="flex_request.superseded",
               actor=actor, actor_label=actor_label, audit_fields=REQUEST_AUDIT_FIELDS)
    _lapse_open_offers(flex_request=locked, actor=actor, reason="request superseded")
    return revision


def _lapse_open_offers(*, flex_request: FlexRequest, actor: Actor, reason: str) -> None:
    for offer in flex_request.offers.filter(status=FlexOffer.Status.SUBMITTED):
        transition(offer, allowed_from=[FlexOffer.Status.SUBMITTED], to=FlexOffer.Status.REJECTED,
                   action="flex_offer.rejected", actor=actor, actor_label=reason, audit_fields=OFFER_AUDIT_FIELDS)


@transaction.atomic
def flex_request_open(*, flex_request: FlexRequest, actor: Actor = None, actor_label: str = "") -> FlexRequest:
    """DRAFT -> OPEN; aggregators on the point can now see and answer it. A draft is validated again."""
    bands = [IspBand(isp=row.isp, disposition=row.disposition, min_power_w=row.min_power_w,
                     max_power_w=row.max_power_w) for row in flex_request.isps.all()]
    validate_request_bands(point=flex_request.congestion_point, period=flex_request.period, isps=bands,
                           expires_at=flex_request.expires_at, at=now())
    transition(flex_request, allowed_from=[FlexRequest.Status.DRAFT], to=FlexRequest.Status.OPEN,
               action="flex_request.opened", actor=actor, actor_label=actor_label, audit_fields=REQUEST_AUDIT_FIELDS)
    events.event_publish(name=events.FLEX_REQUEST_OPENED, object_id=flex_request.pk)
    return flex_request


@transaction.atomic
def flex_request_cancel(*, flex_request: FlexRequest, actor: Actor = None, actor_label: str = "") -> FlexRequest:
    """DRAFT/OPEN/PARTIALLY_ORDERED -> CANCELLED. Orders already placed stay binding; open offers lapse."""
    transition(flex_request, allowed_from=CANCELLABLE, to=FlexRequest.Status.CANCELLED,
               action="flex_request.cancelled", actor=actor, actor_label=actor_label,
               audit_fields=REQUEST_AUDIT_FIELDS)
    _lapse_open_offers(flex_request=flex_request, actor=actor, reason="request cancelled")
    return flex_request


@transaction.atomic
def flex_request_expire(*, flex_request: FlexRequest) -> FlexRequest:
    """OPEN -> EXPIRED once its expiry time has passed (partially ordered requests keep their status)."""
    if flex_request.expires_at > now():
        raise TransitionError("The request has not reached its expiry time.", code="not_expired")
    transition(flex_request, allowed_from=[FlexRequest.Status.OPEN], to=FlexRequest.Status.EXPIRED,
               action="flex_request.expired", actor=None, actor_label="expiry", audit_fields=REQUEST_AUDIT_FIELDS)
    return flex_request


def flex_request_update_coverage(*, flex_request: FlexRequest, actor: Actor) -> None:
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
        transition(flex_request, allowed_from=[FlexRequest.Status.OPEN, FlexRequest.Status.PARTIALLY_ORDERED],
                   to=target, action=f"flex_request.{target}", actor=actor, audit_fields=REQUEST_AUDIT_FIELDS)
