"""FlexOrder: a DSO's binding purchase, from an offer option (possibly partially activated) or, under a
contract that allows it, directly without an offer (UFTP 3.1).

PLACED -> DISPATCHED -> SETTLED (| DISPUTED).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import transaction

from common import isp as isp_time
from common.audit import audit_record
from common.exceptions import ApplicationError
from common.models import audit_payload
from market import events, selectors
from market.models import (
    CongestionPoint,
    FlexContract,
    FlexOffer,
    FlexOfferOption,
    FlexOrder,
    FlexOrderIsp,
    FlexRequest,
    Participant,
)
from market.services._base import (
    Actor,
    IspPower,
    already_submitted,
    content_hash,
    now,
    positioned,
    require_role,
    transition,
    validate_future_isps,
    validate_isp_indexes,
    validate_market_frame,
    validate_powers,
    validate_price,
)
from market.services.offers import OFFER_AUDIT_FIELDS, require_dso_owns_offer, validate_contract
from market.services.requests import flex_request_update_coverage

ORDER_AUDIT_FIELDS = ["status", "price_eur", "activation_factor"]


def _order_reference(period: date) -> str:
    return f"ORD-{period:%Y%m%d}-{secrets.token_hex(4).upper()}"


def _choose_option(offer: FlexOffer, option_reference: str | None) -> FlexOfferOption:
    options = list(offer.options.all())
    if option_reference is None:
        if len(options) != 1:
            raise ApplicationError("This offer has several options: name the one you order.", code="option_required",
                                   field="option_reference")
        return options[0]
    for option in options:
        if option.option_reference == option_reference:
            return option
    raise ApplicationError(f"The offer has no option {option_reference!r}.", code="unknown_option",
                           field="option_reference")


@transaction.atomic
def flex_offer_accept(
    *,
    flex_offer: FlexOffer,
    dso: Participant,
    actor: Actor = None,
    actor_label: str = "",
    option_reference: str | None = None,
    activation_factor: Decimal = Decimal("1.00"),
) -> FlexOrder:
    """The DSO buys an offer option: offer SUBMITTED -> ACCEPTED and a binding FlexOrder.

    The order copies the option's ISPs; partial activation scales every ISP power and the price by
    `activation_factor`, which must lie in [option's min_activation_factor, 1]. Publishes flex_order.placed
    after commit (dispatch subscribes). Open offers may still be ordered after gate closure, not once an ISP
    has started.
    """
    require_dso_owns_offer(flex_offer=flex_offer, dso=dso)
    option = _choose_option(flex_offer, option_reference)
    if activation_factor != activation_factor.quantize(Decimal("0.01")) or not (
        option.min_activation_factor <= activation_factor <= Decimal("1.00")
    ):
        raise ApplicationError(
            f"The activation factor must lie between {option.min_activation_factor} and 1.00 (2 decimals).",
            code="activation_factor_out_of_bounds",
            field="activation_factor",
        )
    # Decide on the offer's status now, not on the caller's copy: a revocation may have crossed this order.
    flex_offer.status = FlexOffer.objects.select_for_update().values_list("status", flat=True).get(pk=flex_offer.pk)
    if flex_offer.status == FlexOffer.Status.REVOKED:
        raise ApplicationError("The offer was revoked.", code="reference_revoked", field="flex_offer")
    at = now()
    if flex_offer.expires_at <= at or flex_offer.status == FlexOffer.Status.EXPIRED:
        raise ApplicationError("The offer has expired.", code="offer_expired", field="flex_offer")
    option_isps = list(option.isps.all())
    if any(isp_time.isp_start(flex_offer.period, row.isp) <= at for row in option_isps):
        raise ApplicationError("An ISP of the offer has already started.", code="isp_in_past", field="flex_offer")
    transition(flex_offer, allowed_from=[FlexOffer.Status.SUBMITTED], to=FlexOffer.Status.ACCEPTED,
               action="flex_offer.accepted", actor=actor, actor_label=actor_label, audit_fields=OFFER_AUDIT_FIELDS)

    order = FlexOrder(
        dso=dso,
        aggregator=flex_offer.aggregator,
        congestion_point=flex_offer.congestion_point,
        period=flex_offer.period,
        conversation_id=flex_offer.conversation_id,
        flex_offer=flex_offer,
        option=option,
        contract=flex_offer.contract,
        d_prognosis=flex_offer.d_prognosis,
        order_reference=_order_reference(flex_offer.period),
        price_eur=(option.price_eur * activation_factor).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP),
        currency=flex_offer.currency,
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
        for row in option_isps
    )
    audit_record(obj=order, action="flex_order.placed", actor=actor, actor_label=actor_label,
                 after=audit_payload(order, ORDER_AUDIT_FIELDS))
    if flex_offer.flex_request_id:
        request = FlexRequest.objects.select_for_update().get(pk=flex_offer.flex_request_id)
        if request.status in selectors.OPEN_REQUEST_STATUSES:
            flex_request_update_coverage(flex_request=request, actor=actor)
    events.event_publish(name=events.FLEX_ORDER_PLACED, object_id=order.pk)
    return order


@transaction.atomic
def flex_order_direct_create(
    *,
    dso: Participant,
    aggregator: Participant,
    congestion_point: CongestionPoint,
    period: date,
    isps: Sequence[IspPower],
    price_eur: Decimal,
    contract: FlexContract,
    service_type: str = "",
    currency: str = "EUR",
    actor: Actor = None,
    actor_label: str = "",
    message_id: Any = None,
    isp_duration: str | None = None,
    time_zone: str | None = None,
) -> FlexOrder:
    """A direct order without an offer (UFTP 3.1, Unsolicited FlexOrder), only under a contract allowing it.

    Every ISP asks for a change in the same direction ('Requested Power discrepancy' otherwise).
    """
    require_role(dso, Participant.Role.DSO, field="dso")
    require_role(aggregator, Participant.Role.AGR, field="aggregator")
    if congestion_point.dso_id != dso.pk:
        raise ApplicationError("This congestion point belongs to another DSO.", code="foreign_congestion_point",
                               field="congestion_point")
    validate_market_frame(market=congestion_point.market, isp_duration=isp_duration, time_zone=time_zone,
                          currency=currency)
    digest = content_hash({"aggregator": str(aggregator.pk), "congestion_point": congestion_point.ean,
                           "period": period.isoformat(), "price": str(price_eur), "contract": str(contract.pk),
                           "service_type": service_type, "isps": sorted((r.isp, r.power_w) for r in isps)})
    existing = already_submitted(FlexOrder, message_id=message_id, sender={"dso": dso}, digest=digest)
    if existing is not None:
        return existing
    validate_contract(contract=contract, dso=dso, aggregator=aggregator, point=congestion_point, period=period)
    if not contract.allows_direct_orders:
        raise ApplicationError("The contract does not allow orders without an offer.", code="no_agreement",
                               field="contract")
    validate_isp_indexes(period=period, indexes=[row.isp for row in isps])
    validate_future_isps(period=period, rows=positioned(row.isp for row in isps), at=now())
    validate_powers(market=congestion_point.market, rows=isps)
    signs = {row.power_w > 0 for row in isps if row.power_w != 0}
    if not signs:
        raise ApplicationError("A direct order changes the power in at least one ISP.", code="empty_offer",
                               field="isps")
    if len(signs) > 1:
        raise ApplicationError("A direct order asks for a change in one direction only.",
                               code="requested_power_discrepancy", field="isps")
    new_message_id = message_id or uuid.uuid4()
    order = FlexOrder(
        dso=dso, aggregator=aggregator, congestion_point=congestion_point, period=period, contract=contract,
        d_prognosis=selectors.d_prognosis_current(aggregator=aggregator, congestion_point=congestion_point,
                                                  period=period),
        service_type=service_type, order_reference=_order_reference(period), price_eur=validate_price(price_eur),
        currency=currency, created_by=actor, message_id=new_message_id, conversation_id=new_message_id,
        content_hash=digest,
    )
    order.full_clean()
    order.save()
    FlexOrderIsp.objects.bulk_create(
        FlexOrderIsp(flex_order=order, isp=row.isp, power_w=row.power_w) for row in sorted(isps, key=lambda r: r.isp)
    )
    audit_record(obj=order, action="flex_order.placed", actor=actor, actor_label=actor_label,
                 after={**audit_payload(order, ORDER_AUDIT_FIELDS), "direct": True})
    events.event_publish(name=events.FLEX_ORDER_PLACED, object_id=order.pk)
    return order


@transaction.atomic
def flex_order_mark_dispatched(*, flex_order: FlexOrder, actor_label: str = "dispatch") -> FlexOrder:
    """PLACED -> DISPATCHED once the aggregator has sent the commands that deliver it."""
    transition(flex_order, allowed_from=[FlexOrder.Status.PLACED], to=FlexOrder.Status.DISPATCHED,
               action="flex_order.dispatched", actor=None, actor_label=actor_label, audit_fields=ORDER_AUDIT_FIELDS)
    return flex_order


@transaction.atomic
def flex_order_mark_settled(*, flex_order: FlexOrder, actor_label: str = "settlement") -> FlexOrder:
    """PLACED/DISPATCHED -> SETTLED once a settlement statement covers it."""
    transition(flex_order, allowed_from=[FlexOrder.Status.PLACED, FlexOrder.Status.DISPATCHED],
               to=FlexOrder.Status.SETTLED, action="flex_order.settled", actor=None, actor_label=actor_label,
               audit_fields=ORDER_AUDIT_FIELDS)
    return flex_order


