"""D-prognosis: an aggregator's forecast per ISP at one congestion point, the default settlement baseline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from django.db import transaction
from django.db.models import Max

from common import isp as isp_time
from common.audit import audit_record
from common.exceptions import ApplicationError
from common.models import audit_payload
from market import selectors
from market.models import CongestionPoint, DPrognosis, DPrognosisIsp, Participant
from market.services._base import (
    Actor,
    IspPower,
    already_submitted,
    content_hash,
    now,
    require_role,
    transition,
    validate_isp_indexes,
    validate_market_frame,
    validate_powers,
)

PROGNOSIS_AUDIT_FIELDS = ["status", "revision"]


@transaction.atomic
def d_prognosis_submit(
    *,
    aggregator: Participant,
    congestion_point: CongestionPoint,
    period: date,
    isps: Sequence[IspPower],
    revision: int | None = None,
    actor: Actor = None,
    actor_label: str = "",
    message_id: Any = None,
    isp_duration: str | None = None,
    time_zone: str | None = None,
) -> DPrognosis:
    """Store a new D-prognosis revision: every ISP of the day, from an aggregator active on the point.

    A valid prognosis is accepted at once (the DSO's D-PrognosisResponse is automatic) and supersedes the
    aggregator's earlier revisions for the point and day. A sender-chosen `revision` must be higher than any
    before (else 'Subordinate sequence number'); without one, the next number is taken.
    """
    require_role(aggregator, Participant.Role.AGR, field="aggregator")
    validate_market_frame(market=congestion_point.market, isp_duration=isp_duration, time_zone=time_zone)
    if not selectors.aggregator_represents(aggregator=aggregator, congestion_point=congestion_point, day=period):
        raise ApplicationError("You represent no connection on this congestion point on that day.",
                               code="congestion_point_not_represented", field="congestion_point")
    digest = content_hash({"congestion_point": congestion_point.ean, "period": period.isoformat(),
                           "revision": revision, "isps": sorted((r.isp, r.power_w) for r in isps)})
    existing = already_submitted(DPrognosis, message_id=message_id, sender={"aggregator": aggregator}, digest=digest)
    if existing is not None:
        return existing
    if isp_time.day_end(period) <= now():
        raise ApplicationError(f"The period {period.isoformat()} is over.", code="period_in_past", field="period")
    validate_isp_indexes(period=period, indexes=[row.isp for row in isps])
    count = isp_time.isp_count(period)
    if len(isps) != count:
        missing = sorted(set(range(1, count + 1)) - {row.isp for row in isps})
        raise ApplicationError(
            f"A D-prognosis covers every ISP of the day ({count}); missing: {missing[:10]}"
            + ("..." if len(missing) > 10 else ""),
            code="missing_isps",
            field="isps",
        )
    validate_powers(market=congestion_point.market, rows=isps)
    scope = {"aggregator": aggregator, "congestion_point": congestion_point, "period": period}
    top = DPrognosis.objects.select_for_update().filter(**scope).aggregate(top=Max("revision"))["top"] or 0
    if revision is not None and revision <= top:
        raise ApplicationError(f"Revision {revision} is not above the last one ({top}).", code="subordinate_revision",
                               field="revision")
    for old in DPrognosis.objects.filter(**scope, status__in=[DPrognosis.Status.SUBMITTED, DPrognosis.Status.ACCEPTED]):
        transition(old, allowed_from=[DPrognosis.Status.SUBMITTED, DPrognosis.Status.ACCEPTED],
                   to=DPrognosis.Status.SUPERSEDED, action="d_prognosis.superseded", actor=actor,
                   actor_label=actor_label, audit_fields=PROGNOSIS_AUDIT_FIELDS)
    prognosis = DPrognosis(**scope, revision=revision or top + 1, status=DPrognosis.Status.ACCEPTED,
                           content_hash=digest)
    if message_id is not None:
        prognosis.message_id = message_id
    prognosis.full_clean()
    prognosis.save()
    DPrognosisIsp.objects.bulk_create(
        DPrognosisIsp(d_prognosis=prognosis, isp=row.isp, power_w=row.power_w) for row in sorted(isps, key=lambda r: r.isp)
    )
    audit_record(obj=prognosis, action="d_prognosis.accepted", actor=actor, actor_label=actor_label,
                 after=audit_payload(prognosis, PROGNOSIS_AUDIT_FIELDS))
    return prognosis
