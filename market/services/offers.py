"""FlexOffer: an aggregator's offer, answering a request or unsolicited, with one or more exclusive options.

SUBMITTED -> ACCEPTED (ordered) | REJECTED | REVOKED | EXPIRED.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import prefetch_related_objects

from common import isp as isp_time
from common.audit import audit_event
from common.exceptions import ApplicationError, TransitionError
from common.models import AuditEvent, audit_payload
from common.sql import (
    array_param,
    insert_fields,
    insert_instances,
    insert_params,
    insert_sql,
    instance_from_values,
    mark_inserted,
    unnest_columns,
    unnest_params,
    unnest_sql,
    wrapper,
)
from market import events, selectors
from market.models import (
    CongestionPoint,
    DPrognosis,
    FlexContract,
    FlexOffer,
    FlexOfferOption,
    FlexOfferOptionIsp,
    FlexRequest,
    FlexRequestIsp,
    Participant,
)
from market.services._base import (
    Actor,
    OfferOptionInput,
    already_submitted,
    clean_fields_only,
    content_hash,
    now,
    positioned,
    remember_related,
    require_role,
    transition,
    validate_expiry,
    validate_future_isps,
    validate_gate_closure,
    validate_isp_indexes,
    validate_market_frame,
    validate_powers,
    validate_price,
)

OFFER_AUDIT_FIELDS = ["status", "expires_at"]


def validate_activation_factor(value: Decimal, *, field: str) -> None:
    if not (Decimal("0") < value <= Decimal("1")):
        raise ApplicationError("A minimum activation factor lies in (0, 1].", code="invalid_activation_factor",
                               field=field)
    if value != value.quantize(Decimal("0.01")):
        raise ApplicationError("Activation factors have 2 decimals.", code="invalid_activation_factor", field=field)


def _validate_options(
    *, point: CongestionPoint, period: date, options: Sequence[OfferOptionInput], at: datetime,
    flex_request: FlexRequest | None,
) -> None:
    if not options:
        raise ApplicationError("An offer has at least one option.", code="missing_options", field="options")
    if len(options) > 1 and not point.mutex_offers_supported:
        raise ApplicationError("This congestion point takes no mutually exclusive options.",
                               code="no_mutex_offer_support", field="options")
    references: set[str] = set()
    for index, option in enumerate(options):
        prefix = f"options[{index}]"
        if not option.option_reference or option.option_reference in references:
            raise ApplicationError("Each option needs its own reference.", code="duplicate_option_reference",
                                   field=f"{prefix}.option_reference")
        references.add(option.option_reference)
        indexes = [row.isp for row in option.isps]
        validate_isp_indexes(period=period, indexes=indexes, field=f"{prefix}.isps")
        if all(row.power_w == 0 for row in option.isps):
            raise ApplicationError("An option must change the power in at least one ISP.", code="empty_offer",
                                   field=f"{prefix}.isps")
        validate_powers(market=point.market, rows=option.isps, field=f"{prefix}.isps")
        changed = positioned(indexes, keep=(row.power_w != 0 for row in option.isps))
        validate_future_isps(period=period, rows=positioned(indexes), at=at, field=f"{prefix}.isps")
        validate_gate_closure(point=point, period=period, rows=changed, at=at, field=f"{prefix}.isps")
        validate_price(option.price_eur, field=f"{prefix}.price_eur")
        validate_activation_factor(option.min_activation_factor, field=f"{prefix}.min_activation_factor")
        if flex_request is not None:
            _validate_option_against_request(flex_request=flex_request, option=option, prefix=prefix)


def _validate_option_against_request(*, flex_request: FlexRequest, option: OfferOptionInput, prefix: str) -> None:
    bands = {row.isp: row for row in flex_request.isps.all()}
    requested = {isp for isp, row in bands.items() if row.disposition == FlexRequestIsp.Disposition.REQUESTED}
    if not requested & {row.isp for row in option.isps if row.power_w != 0}:
        raise ApplicationError("A solicited offer must offer flex in at least one Requested ISP of the request.",
                               code="request_mismatch", field=f"{prefix}.isps")
    for position, row in enumerate(option.isps):
        band = bands.get(row.isp)
        if band is None or band.disposition != FlexRequestIsp.Disposition.REQUESTED or row.power_w == 0:
            continue
        downward = band.max_power_w <= 0
        if (downward and row.power_w > 0) or (not downward and row.power_w < 0):
            raise ApplicationError(
                f"ISP {row.isp}: the request asks for {'less' if downward else 'more'} consumption; "
                f"power_w must be {'negative' if downward else 'positive'}.",
                code="wrong_power_sign",
                field=f"{prefix}.isps[{position}].power_w",
            )


def _validate_request_reference(
    *, flex_request: FlexRequest, congestion_point: CongestionPoint, period: date, at: datetime
) -> None:
    if flex_request.congestion_point_id != congestion_point.pk:
        raise ApplicationError("The flex request is for another congestion point.",
                               code="reference_congestion_point_mismatch", field="flex_request")
    if flex_request.period != period:
        raise ApplicationError("The flex request is for another day.", code="reference_period_mismatch",
                               field="flex_request")
    if flex_request.status == FlexRequest.Status.SUPERSEDED:
        raise ApplicationError("The flex request was superseded by a newer revision.", code="reference_superseded",
                               field="flex_request")
    if flex_request.expires_at <= at or flex_request.status == FlexRequest.Status.EXPIRED:
        raise ApplicationError("The flex request has expired.", code="reference_expired", field="flex_request")
    if flex_request.status not in selectors.OPEN_REQUEST_STATUSES:
        raise ApplicationError(f"The flex request is {flex_request.status}.", code="reference_not_open",
                               field="flex_request")


def _resolve_baseline_id(
    *, aggregator: Participant, congestion_point: CongestionPoint, period: date, d_prognosis: DPrognosis | None,
    flex_request: FlexRequest | None,
) -> uuid.UUID:
    """The D-prognosis the offer is measured against: the one named, or the aggregator's current one."""
    if d_prognosis is None:
        current = selectors.baseline_id_for_request(aggregator=aggregator, flex_request=flex_request,
                                                    congestion_point=congestion_point, period=period)
        if current is None:
            raise ApplicationError("Submit a D-prognosis for this congestion point and day first: it is the baseline.",
                                   code="no_baseline", field="d_prognosis")
        return current
    fresh = DPrognosis.objects.get(pk=d_prognosis.pk)  # its status now, not a caller's stale copy
    if fresh.aggregator_id != aggregator.pk:
        raise ApplicationError("Unknown D-prognosis reference.", code="unknown_reference", field="d_prognosis")
    if fresh.congestion_point_id != congestion_point.pk:
        raise ApplicationError("The D-prognosis is for another congestion point.",
                               code="reference_congestion_point_mismatch", field="d_prognosis")
    if fresh.period != period:
        raise ApplicationError("The D-prognosis is for another day.", code="reference_period_mismatch",
                               field="d_prognosis")
    if fresh.status != DPrognosis.Status.ACCEPTED:
        raise ApplicationError("The referenced D-prognosis is superseded or rejected.", code="no_baseline",
                               field="d_prognosis")
    return fresh.pk


def validate_contract(
    *, contract: FlexContract, dso: Participant, aggregator: Participant, point: CongestionPoint, period: date
) -> None:
    if contract.dso_id != dso.pk or contract.aggregator_id != aggregator.pk or contract.congestion_point_id != point.pk:
        raise ApplicationError("Unknown contract reference.", code="unknown_contract", field="contract")
    if not contract.covers(period):
        raise ApplicationError("The contract does not cover that day.", code="unknown_contract", field="contract")


def _offer_digest(**parts: Any) -> str:
    options = [
        (o.option_reference, str(o.price_eur), str(o.min_activation_factor), sorted((r.isp, r.power_w) for r in o.isps))
        for o in parts.pop("options")
    ]
    return content_hash({**{k: str(v) if v is not None else None for k, v in parts.items()}, "options": options})


IspValue = tuple[FlexOfferOption, int, int]  # (option, ISP, power in W)


def _insert_offer(offer: FlexOffer, options: list[FlexOfferOption], isps: list[IspValue],
                  event: AuditEvent) -> list[FlexOfferOptionIsp]:
    """Write a validated offer with its options, their ISPs and its audit event, all or nothing; return the ISP
    rows (with their options cached on them).

    This is the bidding API's hot path. On PostgreSQL it is ONE statement (a data-modifying CTE; a statement is
    atomic), so a submission pays one round trip instead of four INSERTs plus BEGIN and COMMIT; hand-built
    (common.sql) because compiling the ORM's inserts cost more than the database spent on them, and the ISP rows
    become instances only from what the database returned (common.sql.instance_from_values). Elsewhere the
    four INSERTs run in a transaction."""
    db = wrapper(connection)
    if db.vendor != "postgresql":
        with transaction.atomic():
            insert_instances(FlexOffer, [offer], connection=db)
            insert_instances(FlexOfferOption, options, connection=db)
            rows = insert_instances(FlexOfferOptionIsp, [
                FlexOfferOptionIsp(option=option, isp=isp, power_w=power_w) for option, isp, power_w in isps
            ], connection=db)
            insert_instances(AuditEvent, [event], connection=db)
        return rows
    params = [
        *insert_params(FlexOffer, [offer], connection=db),
        *unnest_params(options, insert_fields(FlexOfferOption), connection=db),
        array_param([isp for _, isp, _ in isps]), array_param([power_w for _, _, power_w in isps]),
        array_param([option.option_reference for option, _, _ in isps]),
        *insert_params(AuditEvent, [event], connection=db),
    ]
    with db.cursor() as cursor:
        cursor.execute(_insert_offer_sql(db), params)
        returned = cursor.fetchall()
    option_ids = {reference: option_id for option_id, reference, _, _, _ in returned}
    isp_ids = {(reference, isp): isp_id for _, reference, isp_id, isp, _ in returned}
    mark_inserted([offer], [], connection=db)
    mark_inserted(options, [option_ids[option.option_reference] for option in options], connection=db)
    mark_inserted([event], [returned[0][4]], connection=db)
    option_field = FlexOfferOptionIsp._meta.get_field("option")
    rows = []
    for option, isp, power_w in isps:
        row = instance_from_values(FlexOfferOptionIsp, {
            "id": isp_ids[(option.option_reference, isp)], "isp": isp, "power_w": power_w, "option_id": option.pk,
        }, connection=db)
        option_field.set_cached_value(row, option)
        rows.append(row)
    return rows


def _insert_offer_sql(db: BaseDatabaseWrapper) -> str:
    """The statement of _insert_offer, built once per connection from the models' metadata (it is the same for
    every offer: one offer row, options and ISPs as arrays, one audit row)."""
    cached = db.__dict__.get("_market_insert_offer_sql")
    if cached is not None:
        return str(cached)
    quote = db.ops.quote_name
    offer_sql = insert_sql(FlexOffer, 1, connection=db)
    event_sql = insert_sql(AuditEvent, 1, connection=db)
    # Options and ISPs as arrays (common.sql.unnest_columns): the text stays the same for any number of them.
    option_fields = insert_fields(FlexOfferOption)
    option_columns = ", ".join(quote(str(field.column)) for field in option_fields)
    option_sql = (
        f"INSERT INTO {quote(FlexOfferOption._meta.db_table)} ({option_columns}) "  # noqa: S608 - model metadata
        f"SELECT {option_columns} FROM {unnest_sql(option_fields, connection=db)} RETURNING id, option_reference"
    )
    # Each ISP row finds its option's new id by reference (unique per offer).
    isp_field, power_field = FlexOfferOptionIsp._meta.get_field("isp"), FlexOfferOptionIsp._meta.get_field("power_w")
    option_field = FlexOfferOptionIsp._meta.get_field("option")
    isp_column, power_column = quote(str(isp_field.column)), quote(str(power_field.column))
    option_fk = quote(str(option_field.column))
    isp_rows, _ = unnest_columns([
        (isp_column, str(isp_field.db_type(db)), []),
        (power_column, str(power_field.db_type(db)), []),
        ("option_reference", "text", []),
    ], alias="v")
    isp_sql = (
        f"INSERT INTO {quote(FlexOfferOptionIsp._meta.db_table)} ({isp_column}, {power_column}, {option_fk}) "  # noqa: S608
        f"SELECT v.{isp_column}, v.{power_column}, o.id FROM {isp_rows} "
        f"JOIN new_options o ON o.option_reference = v.option_reference RETURNING id, {option_fk}, {isp_column}"
    )
    sql = (
        f"WITH new_offer AS ({offer_sql}), new_options AS ({option_sql}), "  # noqa: S608 - from model metadata
        f"new_isps AS ({isp_sql}), new_event AS ({event_sql}) "
        f"SELECT o.id, o.option_reference, i.id, i.{isp_column}, (SELECT id FROM new_event) "
        f"FROM new_isps i JOIN new_options o ON o.id = i.{option_fk}"
    )
    db.__dict__["_market_insert_offer_sql"] = sql
    return sql


def flex_offer_submit(
    *,
    aggregator: Participant,
    congestion_point: CongestionPoint,
    period: date,
    options: Sequence[OfferOptionInput],
    expires_at: datetime,
    flex_request: FlexRequest | None = None,
    d_prognosis: DPrognosis | None = None,
    contract: FlexContract | None = None,
    currency: str = "EUR",
    message_id: Any = None,
    actor: Actor = None,
    actor_label: str = "",
    isp_duration: str | None = None,
    time_zone: str | None = None,
) -> FlexOffer:
    """Submit an offer (answering `flex_request`, or unsolicited) against the aggregator's D-prognosis baseline.

    Not wrapped in a transaction of its own: the checks only read, and the offer, its options and ISPs and its
    audit event are written together by _insert_offer (one statement on PostgreSQL, a transaction elsewhere)."""
    require_role(aggregator, Participant.Role.AGR, field="aggregator")
    validate_market_frame(market=congestion_point.market, isp_duration=isp_duration, time_zone=time_zone,
                          currency=currency)
    digest = _offer_digest(congestion_point=congestion_point.ean, period=period, expires_at=expires_at.isoformat(),
                           flex_request=flex_request.pk if flex_request else None,
                           d_prognosis=d_prognosis.pk if d_prognosis else None,
                           contract=contract.pk if contract else None, options=options)
    existing = already_submitted(FlexOffer, message_id=message_id, sender={"aggregator": aggregator}, digest=digest)
    if existing is not None:
        return existing
    at = now()
    if not selectors.represents_for_request(aggregator=aggregator, flex_request=flex_request,
                                            congestion_point=congestion_point, day=period):
        raise ApplicationError("You represent no connection on this congestion point on that day.",
                               code="congestion_point_not_represented", field="congestion_point")
    if flex_request is not None:
        _validate_request_reference(flex_request=flex_request, congestion_point=congestion_point, period=period, at=at)
        prefetch_related_objects([flex_request], "isps")  # read once, checked per option
    _validate_options(point=congestion_point, period=period, options=options, at=at, flex_request=flex_request)
    last_isp = max(row.isp for option in options for row in option.isps)
    validate_expiry(expires_at=expires_at, period=period, last_isp=last_isp, at=at)
    if contract is not None:
        validate_contract(contract=contract, dso=congestion_point.dso, aggregator=aggregator, point=congestion_point,
                          period=period)
    baseline_id = _resolve_baseline_id(aggregator=aggregator, congestion_point=congestion_point, period=period,
                                       d_prognosis=d_prognosis, flex_request=flex_request)

    new_message_id = message_id or uuid.uuid4()
    offer = FlexOffer(
        aggregator=aggregator,
        congestion_point=congestion_point,
        period=period,
        flex_request=flex_request,
        d_prognosis_id=baseline_id,
        contract=contract,
        currency=currency,
        expires_at=expires_at,
        created_by=actor,
        message_id=new_message_id,
        # An unsolicited offer starts its own conversation.
        conversation_id=flex_request.conversation_id if flex_request else new_message_id,
        content_hash=digest,
    )
    clean_fields_only(offer)
    option_rows = [
        FlexOfferOption(flex_offer=offer, option_reference=option.option_reference,
                        price_eur=validate_price(option.price_eur), min_activation_factor=option.min_activation_factor)
        for option in options
    ]
    isp_values = [
        (row, isp.isp, isp.power_w)
        for row, option in zip(option_rows, options, strict=True)
        for isp in sorted(option.isps, key=lambda r: r.isp)
    ]
    event = audit_event(obj=offer, action="flex_offer.submitted", actor=actor, actor_label=actor_label,
                        after={**audit_payload(offer, OFFER_AUDIT_FIELDS), "options": len(options)})
    isp_rows = _insert_offer(offer, option_rows, isp_values, event)
    for row in option_rows:
        remember_related(row, "isps", [isp for isp in isp_rows if isp.option is row])
    remember_related(offer, "options", option_rows)
    events.event_publish(name=events.FLEX_OFFER_SUBMITTED, object_id=offer.pk)
    return offer


@transaction.atomic
def flex_offer_revoke(
    *, flex_offer: FlexOffer, aggregator: Participant, actor: Actor = None, actor_label: str = ""
) -> FlexOffer:
    """SUBMITTED -> REVOKED by the aggregator that made it (FlexOfferRevocation).

    Not once ordered ('Flexibility procured'), and not once one of its ISPs has started (operate phase).
    A revocation that crosses an order wins only if it arrives first: the row claim decides.
    """
    if flex_offer.aggregator_id != aggregator.pk:
        raise ApplicationError("Only the aggregator that made an offer can revoke it.", code="not_owner",
                               field="flex_offer")
    # Decide on the offer's status now, not on the caller's copy: an order may have crossed this revocation.
    flex_offer.status = FlexOffer.objects.select_for_update().values_list("status", flat=True).get(pk=flex_offer.pk)
    first_isp = min((row.isp for option in flex_offer.options.all() for row in option.isps.all()), default=1)
    if isp_time.isp_start(flex_offer.period, first_isp) <= now():
        raise ApplicationError("An ISP of the offer has started: it can no longer be revoked.",
                               code="revocation_too_late", field="flex_offer")
    if flex_offer.status == FlexOffer.Status.ACCEPTED:
        raise TransitionError("The offer was ordered: flexibility procured.", code="flexibility_procured")
    transition(flex_offer, allowed_from=[FlexOffer.Status.SUBMITTED], to=FlexOffer.Status.REVOKED,
               action="flex_offer.revoked", actor=actor, actor_label=actor_label, audit_fields=OFFER_AUDIT_FIELDS)
    return flex_offer


def require_dso_owns_offer(*, flex_offer: FlexOffer, dso: Participant) -> None:
    require_role(dso, Participant.Role.DSO, field="dso")
    if flex_offer.congestion_point.dso_id != dso.pk:
        raise ApplicationError("This offer is on another DSO's congestion point.", code="foreign_congestion_point",
                               field="flex_offer")


@transaction.atomic
def flex_offer_reject(
    *, flex_offer: FlexOffer, dso: Participant, actor: Actor = None, actor_label: str = ""
) -> FlexOffer:
    """SUBMITTED -> REJECTED by the DSO owning the congestion point."""
    require_dso_owns_offer(flex_offer=flex_offer, dso=dso)
    transition(flex_offer, allowed_from=[FlexOffer.Status.SUBMITTED], to=FlexOffer.Status.REJECTED,
               action="flex_offer.rejected", actor=actor, actor_label=actor_label, audit_fields=OFFER_AUDIT_FIELDS)
    return flex_offer


@transaction.atomic
def flex_offer_expire(*, flex_offer: FlexOffer) -> FlexOffer:
    if flex_offer.expires_at > now():
        raise TransitionError("The offer has not reached its expiry time.", code="not_expired")
    transition(flex_offer, allowed_from=[FlexOffer.Status.SUBMITTED], to=FlexOffer.Status.EXPIRED,
               action="flex_offer.expired", actor=None, actor_label="expiry", audit_fields=OFFER_AUDIT_FIELDS)
    return flex_offer
