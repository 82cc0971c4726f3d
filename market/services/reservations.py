"""Bilateral contracts and FlexReservationUpdate: the DSO confirms, reduces or releases reserved flex.

An update never raises the reservation: per ISP its magnitude is at most what the contract reserves and
what the previous update for that day left, in the same direction (UFTP-BRIEF 4.4 and 7.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db import transaction

from common import isp as isp_time
from common.audit import audit_record
from common.exceptions import ApplicationError
from common.models import audit_payload
from market.models import FlexContract, FlexReservationUpdate, FlexReservationUpdateIsp, Participant
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

RESERVATION_AUDIT_FIELDS = ["status"]


def contract_reserved_isps(contract: FlexContract, period: date) -> dict[int, int]:
    """ISP -> reserved W the contract sets for the day (its local time window, elapsed-time ISPs)."""
    if not contract.covers(period) or contract.reserved_power_w == 0:
        return {}
    start = contract.window_start or time(0, 0)
    end = contract.window_end
    reserved: dict[int, int] = {}
    for slot in isp_time.isp_slots(period):
        local = slot.local_start.time()
        if local >= start and (end is None or local < end):
            reserved[slot.index] = contract.reserved_power_w
    return reserved


def reservation_deadline(contract: FlexContract, period: date) -> datetime:
    return isp_time.day_start(period) - timedelta(minutes=contract.reservation_deadline_minutes)


def _remaining_reserved(contract: FlexContract, period: date) -> dict[int, int]:
    latest = (
        FlexReservationUpdate.objects.filter(contract=contract, period=period, status=FlexReservationUpdate.Status.ACCEPTED)
        .prefetch_related("isps")
        .first()
    )
    if latest is None:
        return contract_reserved_isps(contract, period)
    return {row.isp: row.power_w for row in latest.isps.all()}


@transaction.atomic
def flex_reservation_update_submit(
    *,
    dso: Participant,
    contract: FlexContract,
    period: date,
    isps: Sequence[IspPower],
    reference: str = "",
    actor: Actor = None,
    message_id: Any = None,
    isp_duration: str | None = None,
    time_zone: str | None = None,
) -> FlexReservationUpdate:
    """Confirm, reduce or release the contract's reserved flex for one day, before the contract's deadline."""
    require_role(dso, Participant.Role.DSO, field="dso")
    if contract.dso_id != dso.pk:
        raise ApplicationError("Unknown contract reference.", code="unknown_contract", field="contract")
    point = contract.congestion_point
    validate_market_frame(market=point.market, isp_duration=isp_duration, time_zone=time_zone)
    digest = content_hash({"contract": str(contract.pk), "period": period.isoformat(), "reference": reference,
                           "isps": sorted((r.isp, r.power_w) for r in isps)})
    existing = already_submitted(FlexReservationUpdate, message_id=message_id, sender={"dso": dso}, digest=digest)
    if existing is not None:
        return existing
    if not contract.covers(period):
        raise ApplicationError("The contract does not cover that day.", code="unknown_contract", field="contract")
    if reservation_deadline(contract, period) <= now():
        raise ApplicationError("The contract's deadline for reservation updates on that day has passed.",
                               code="deadline_expired", field="period")
    validate_isp_indexes(period=period, indexes=[row.isp for row in isps])
    validate_powers(market=point.market, rows=isps)
    remaining = _remaining_reserved(contract, period)
    for position, row in enumerate(isps):
        held = remaining.get(row.isp, 0)
        same_direction = row.power_w == 0 or (row.power_w > 0) == (held > 0)
        if held == 0 and row.power_w != 0 or not same_direction or abs(row.power_w) > abs(held):
            raise ApplicationError(
                f"ISP {row.isp}: an update can only lower the reservation ({held} W reserved).",
                code="reservation_increase",
                field=f"isps[{position}].power_w",
            )
    for old in FlexReservationUpdate.objects.filter(contract=contract, period=period,
                                                    status=FlexReservationUpdate.Status.ACCEPTED):
        transition(old, allowed_from=[FlexReservationUpdate.Status.ACCEPTED],
                   to=FlexReservationUpdate.Status.SUPERSEDED, action="flex_reservation_update.superseded",
                   actor=actor, audit_fields=RESERVATION_AUDIT_FIELDS)
    # ISPs the update leaves out keep what remained.
    given = {row.isp: row.power_w for row in isps}
    merged = {**remaining, **given}
    update = FlexReservationUpdate(
        contract=contract, dso=dso, aggregator=contract.aggregator, congestion_point=point, period=period,
        reference=reference, created_by=actor, content_hash=digest,
    )
    if message_id is not None:
        update.message_id = message_id
    update.full_clean()
    update.save()
    FlexReservationUpdateIsp.objects.bulk_create(
        FlexReservationUpdateIsp(reservation_update=update, isp=isp, power_w=power) for isp, power in sorted(merged.items())
    )
    audit_record(obj=update, action="flex_reservation_update.accepted", actor=actor,
                 after={**audit_payload(update, RESERVATION_AUDIT_FIELDS), "released_isps": sum(
                     1 for isp, power in merged.items() if power == 0 and remaining.get(isp, 0) != 0)})
    return update


@transaction.atomic
def flex_contract_create(
    *,
    dso: Participant,
    aggregator: Participant,
    congestion_point: Any,
    contract_id: str,
    valid_from: date,
    valid_until: date | None = None,
    reserved_power_w: int = 0,
    window_start: time | None = None,
    window_end: time | None = None,
    allows_direct_orders: bool = False,
    reservation_deadline_minutes: int = 14 * 60,
    actor: Actor = None,
) -> FlexContract:
    """Record a bilateral contract (agreed outside UFTP) between a DSO and an aggregator on a congestion point."""
    require_role(dso, Participant.Role.DSO, field="dso")
    require_role(aggregator, Participant.Role.AGR, field="aggregator")
    if congestion_point.dso_id != dso.pk:
        raise ApplicationError("This congestion point belongs to another DSO.", code="foreign_congestion_point",
                               field="congestion_point")
    contract = FlexContract(
        dso=dso, aggregator=aggregator, congestion_point=congestion_point, contract_id=contract_id,
        valid_from=valid_from, valid_until=valid_until, reserved_power_w=reserved_power_w, window_start=window_start,
        window_end=window_end, allows_direct_orders=allows_direct_orders,
        reservation_deadline_minutes=reservation_deadline_minutes,
    )
    contract.full_clean()
    contract.save()
    audit_record(obj=contract, action="flex_contract.created", actor=actor,
                 after=audit_payload(contract, ["contract_id", "reserved_power_w", "allows_direct_orders"]))
    return contract
