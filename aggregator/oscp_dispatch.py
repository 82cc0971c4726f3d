"""OSCP capacity forecasts per charge point group: what each group may draw, per ISP, and when it is sent.

Per group and market day the CONSUMPTION forecast is, ISP by ISP:
1. the Flexpower-style profile: `peak_capacity_kw` in the local peak window (17:00-21:00 by default),
   `offpeak_capacity_kw` otherwise (local wall-clock time, so DST days with 92 or 100 ISPs need no special case);
2. replaced by what an adjustment request we granted allows (CapacityAdjustment.granted_blocks);
3. in every ISP where one of our live orders (placed or dispatched) asks a reduction at the group's congestion
   point: capped at the SUM OF THE CURRENT SESSION SCHEDULES of the group's charge points.

Why the schedules and not "congestion point capacity minus the ordered reduction": the group is one CPO's site,
usually a small part of what sits behind the congestion point (households, other aggregators' sites), so the
point's capacity says nothing about what this group may draw; and the dispatch schedule is the plan the optimiser
has checked both delivers the ordered reduction and still gives each driver their energy by departure. Capping the
group at the plan's total (not per session) leaves the CPO free to move power between its cars inside the group.
Outside ordered ISPs the plan is not a limit (its zeros there mean "nothing needed", not "nothing allowed"), so
the profile applies.

A FALLBACK_CONSUMPTION forecast (`fallback_capacity_kw` all day) goes with every day's forecast: what the CPO keeps
to if we fall silent. Forecasts are recomputed from the database state each time, so the day-ahead publication,
a handshake, an order dispatch and an adjustment all send the same truth; a newer forecast for the same group,
type and day supersedes an unsent older one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.db import transaction

from aggregator.adapters import oscp as protocol
from aggregator.models import CapacityAdjustment, CapacityGroup, OscpInboundMessage, OscpOutboundMessage, OscpPeer
from aggregator.models.operators import DispatchMode
from aggregator.models.portfolio import SessionSchedule
from aggregator.oscp import services as oscp_services
from common import isp as isp_time
from common import time as clock
from common.audit import audit_record
from market.models import FlexOrder, FlexRequest, FlexRequestIsp

logger = logging.getLogger(__name__)

OSCP_MODES = (DispatchMode.OSCP, DispatchMode.OCPI_OSCP)
KW_DECIMALS = 3
Endpoint = OscpOutboundMessage.Endpoint


@dataclass(frozen=True)
class IspCapacity:
    isp: int
    start: datetime
    end: datetime
    capacity_kw: float
    ordered: bool = False


def profile_kw(group: CapacityGroup, slot: isp_time.IspSlot) -> float:
    local = slot.local_start.time()
    peak = group.peak_start <= local < group.peak_end
    return float(group.peak_capacity_kw if peak else group.offpeak_capacity_kw)


def ordered_isps(group: CapacityGroup, day: date) -> set[int]:
    """ISPs of the day where one of our live orders at the group's congestion point asks a reduction."""
    return set(
        FlexOrder.objects.filter(
            aggregator=group.peer.cpo.aggregator, congestion_point=group.congestion_point, period=day,
            status__in=[FlexOrder.Status.PLACED, FlexOrder.Status.DISPATCHED],
        ).filter(isps__power_w__lt=0).values_list("isps__isp", flat=True)
    )


def scheduled_kw(group: CapacityGroup, slots: list[isp_time.IspSlot]) -> list[float]:
    """Sum of the current session schedules of the group's charge points, per slot (kW)."""
    totals = [0.0] * len(slots)
    schedules = SessionSchedule.objects.filter(is_current=True, session__charge_point__capacity_groups=group)
    for schedule in schedules.only("start", "slot_power_w"):
        for position, slot in enumerate(slots):
            index = int((slot.start - schedule.start) / isp_time.ISP)
            if 0 <= index < len(schedule.slot_power_w):
                totals[position] += schedule.slot_power_w[index] / 1000.0
    return totals


def _granted_kw(group: CapacityGroup, slots: list[isp_time.IspSlot]) -> dict[datetime, float]:
    """What granted adjustments allow, by ISP start (a later grant overrides an earlier one)."""
    first, last = slots[0].start, slots[-1].end
    granted: dict[datetime, float] = {}
    for adjustment in group.adjustments.exclude(decision=CapacityAdjustment.Decision.DENIED).order_by("created_at"):
        for row in adjustment.granted_blocks:
            start = datetime.fromisoformat(row["start"])
            if first <= start < last:
                granted[start] = float(row["capacity_kw"])
    return granted


def group_day_capacity(group: CapacityGroup, day: date) -> list[IspCapacity]:
    """The CONSUMPTION limit per ISP of the market day (see the module docstring for the rules)."""
    slots = isp_time.isp_slots(day)
    ordered = ordered_isps(group, day)
    planned = scheduled_kw(group, slots) if ordered else [0.0] * len(slots)
    granted = _granted_kw(group, slots)
    rows = []
    for position, slot in enumerate(slots):
        capacity = granted.get(slot.start, profile_kw(group, slot))
        if slot.index in ordered:
            capacity = min(capacity, planned[position])
        rows.append(IspCapacity(isp=slot.index, start=slot.start, end=slot.end,
                                capacity_kw=round(max(capacity, 0.0), KW_DECIMALS), ordered=slot.index in ordered))
    return rows


def group_forecast_queue(*, group: CapacityGroup, day: date, flex_order: FlexOrder | None = None
                         ) -> list[OscpOutboundMessage]:
    """Queue the group's CONSUMPTION and FALLBACK_CONSUMPTION forecasts for the day (ISPs not yet over only).

    Nothing is queued before the handshake is complete; completing it publishes today and tomorrow.
    """
    peer = group.peer
    if peer.handshake_status != OscpPeer.Handshake.COMPLETE or not peer.is_active or not group.is_active:
        logger.info("OSCP group %s: no forecast for %s before the handshake with %s", group, day, peer)
        return []
    now = clock.now()
    rows = [row for row in group_day_capacity(group, day) if row.end > now]
    if not rows:
        return []
    valid_until = rows[-1].end
    consumption = protocol.merge_equal_blocks(
        protocol.Block(start=row.start, end=row.end, capacity=row.capacity_kw) for row in rows)
    fallback = [protocol.Block(start=rows[0].start, end=valid_until, capacity=float(group.fallback_capacity_kw))]
    messages = []
    with transaction.atomic():
        for forecast_type, blocks in (("CONSUMPTION", consumption), ("FALLBACK_CONSUMPTION", fallback)):
            messages.append(oscp_services.message_queue(
                peer=peer, endpoint=Endpoint.UPDATE_GROUP_CAPACITY_FORECAST, group=group, flex_order=flex_order,
                body=protocol.capacity_forecast_body(group_id=group.group_id, forecast_type=forecast_type,
                                                     blocks=blocks),
                supersede_key=f"forecast:{group.pk}:{forecast_type}:{day.isoformat()}", valid_until=valid_until,
            ))
    return messages


def peer_forecasts_queue(*, peer: OscpPeer, days: list[date] | None = None) -> int:
    """Every active group of the peer, for today and tomorrow unless told otherwise."""
    today = isp_time.market_day_of(clock.now())
    count = 0
    for group in peer.groups.filter(is_active=True).select_related("peer__cpo", "congestion_point"):
        for day in days or [today, today + timedelta(days=1)]:
            count += len(group_forecast_queue(group=group, day=day))
    return count


def day_ahead_forecasts_queue(*, day: date | None = None) -> int:
    """Celery beat, once a day: tomorrow's forecasts for every group of every peer we are in handshake with."""
    target = day or isp_time.market_day_of(clock.now()) + timedelta(days=1)
    count = 0
    for peer in OscpPeer.objects.filter(is_active=True, handshake_status=OscpPeer.Handshake.COMPLETE):
        count += peer_forecasts_queue(peer=peer, days=[target])
    return count


def order_capacity_forecasts_queue(*, flex_order: FlexOrder) -> int:
    """The dispatch hook: an order was scheduled; send each OSCP group at its congestion point (of CPOs whose
    dispatch_mode includes OSCP) its new forecast for the order's day. Runs in the dispatch transaction."""
    groups = CapacityGroup.objects.filter(
        congestion_point=flex_order.congestion_point, is_active=True, peer__is_active=True,
        peer__cpo__aggregator=flex_order.aggregator, peer__cpo__dispatch_mode__in=OSCP_MODES,
    ).select_related("peer__cpo", "congestion_point")
    return sum(len(group_forecast_queue(group=group, day=flex_order.period, flex_order=flex_order))
               for group in groups)


# --- AdjustGroupCapacityForecast --------------------------------------------------------------------


def _congested_isps(group: CapacityGroup, day: date) -> set[int]:
    """ISPs in which the congestion point is short: our orders there, or a DSO request still asking reduction."""
    requested = set(
        FlexRequestIsp.objects.filter(
            flex_request__congestion_point=group.congestion_point, flex_request__period=day,
            flex_request__status__in=[FlexRequest.Status.OPEN, FlexRequest.Status.PARTIALLY_ORDERED,
                                      FlexRequest.Status.ORDERED],
            disposition=FlexRequestIsp.Disposition.REQUESTED,
        ).values_list("isp", flat=True)
    )
    return requested | ordered_isps(group, day)


def group_hardware_kw(group: CapacityGroup) -> float:
    """The most the group can use: its charge points' rated power (the off-peak capacity when none are listed),
    never more than the congestion point's physical capacity when the DSO told us that."""
    rated = sum(point.max_power_w for point in group.charge_points.all()) / 1000.0
    limit = rated if rated > 0 else float(group.offpeak_capacity_kw)
    if group.congestion_point.capacity_kw is not None:
        limit = min(limit, float(group.congestion_point.capacity_kw))
    return limit


def _to_kw(block: protocol.Block) -> float | None:
    if block.unit == "KW":
        return block.capacity
    if block.unit == "W":
        return block.capacity / 1000.0
    return None  # A, WH, KWH: not a power we can compare against a kW limit


@transaction.atomic
def adjustment_decide(*, peer: OscpPeer, inbound: OscpInboundMessage,
                      parsed: protocol.ParsedForecast) -> CapacityAdjustment:
    """Answer an AdjustGroupCapacityForecast from the congestion point's state, ISP by ISP:
    - lowering is always granted (less load never hurts the grid);
    - raising is refused where the point is congested (our order there, or a DSO request asking reduction);
    - elsewhere raised up to the group's hardware limit (and the point's capacity, when known).
    The answer is an UpdateGroupCapacityForecast over the requested blocks (X-Correlation-ID = the request's
    X-Request-ID); granted values stay in force for later forecasts of those days."""
    group = oscp_services.peer_group(peer=peer, group_id=parsed.group_id)
    requested = [block.as_json() for block in parsed.blocks]
    if parsed.forecast_type != "CONSUMPTION" or any(_to_kw(block) is None for block in parsed.blocks):
        reason = "only CONSUMPTION forecasts in W or KW can be adjusted"
        adjustment = CapacityAdjustment.objects.create(group=group, inbound=inbound, forecast_type=parsed.forecast_type,
                                                       requested_blocks=requested,
                                                       decision=CapacityAdjustment.Decision.DENIED, reason=reason)
        _answer(adjustment, group, inbound, [])
        return adjustment
    hardware = group_hardware_kw(group)
    current: dict[datetime, IspCapacity] = {}
    congested: set[datetime] = set()
    answer_rows: list[dict[str, object]] = []  # every requested ISP, as it stands after the decision
    met = unmet = raised = 0
    for block in parsed.blocks:
        wanted = _to_kw(block) or 0.0
        for start in isp_time.iter_isp_starts(block.start, block.end):
            day = isp_time.market_day_of(start)
            if start not in current:
                for row in group_day_capacity(group, day):
                    current[row.start] = row
                congested |= {isp_time.isp_start(day, isp) for isp in _congested_isps(group, day)}
            now_kw = current[start].capacity_kw
            if wanted <= now_kw:
                allowed = wanted  # lowering is always fine
            elif start in congested:
                allowed = now_kw
            else:
                allowed = max(now_kw, min(wanted, hardware))
            met, unmet = (met + 1, unmet) if allowed >= wanted else (met, unmet + 1)
            raised += allowed > now_kw
            answer_rows.append({"start": start.isoformat(), "end": (start + isp_time.ISP).isoformat(),
                                "capacity_kw": round(allowed, KW_DECIMALS), "changed": allowed != now_kw})
    # Only real changes are kept as grants: restating today's value must not freeze it against later orders.
    granted_rows = [{key: row[key] for key in ("start", "end", "capacity_kw")} for row in answer_rows if row["changed"]]
    if unmet == 0:
        decision = CapacityAdjustment.Decision.GRANTED
    elif met == 0 and raised == 0:
        decision = CapacityAdjustment.Decision.DENIED
    else:
        decision = CapacityAdjustment.Decision.PARTIAL
    reason = {
        CapacityAdjustment.Decision.GRANTED: "granted",
        CapacityAdjustment.Decision.PARTIAL: f"raised where the congestion point has room, up to {hardware:g} kW",
        CapacityAdjustment.Decision.DENIED: "the congestion point is short in the requested ISPs",
    }[decision]
    adjustment = CapacityAdjustment.objects.create(
        group=group, inbound=inbound, forecast_type=parsed.forecast_type, requested_blocks=requested,
        granted_blocks=granted_rows, decision=decision, reason=reason)
    _answer(adjustment, group, inbound, answer_rows)
    return adjustment


def _answer(adjustment: CapacityAdjustment, group: CapacityGroup, inbound: OscpInboundMessage,
            answer_rows: list[dict[str, object]]) -> None:
    """Respond with an UpdateGroupCapacityForecast over the requested period: what is in force now."""
    if answer_rows:
        blocks = [protocol.Block(start=datetime.fromisoformat(str(row["start"])),
                                 end=datetime.fromisoformat(str(row["end"])),
                                 capacity=float(str(row["capacity_kw"]))) for row in answer_rows]
    else:  # denied as a whole: restate the current limits over the requested ISPs
        blocks = []
        for block in (_block_from_json(raw) for raw in adjustment.requested_blocks):
            for start in isp_time.iter_isp_starts(block.start, block.end):
                day_rows = {row.start: row for row in group_day_capacity(group, isp_time.market_day_of(start))}
                blocks.append(protocol.Block(start=start, end=start + isp_time.ISP,
                                             capacity=day_rows[start].capacity_kw))
    blocks.sort(key=lambda block: block.start)
    message = oscp_services.message_queue(
        peer=group.peer, endpoint=Endpoint.UPDATE_GROUP_CAPACITY_FORECAST, group=group,
        correlation_id=inbound.request_id, valid_until=max(block.end for block in blocks),
        body=protocol.capacity_forecast_body(group_id=group.group_id, forecast_type="CONSUMPTION",
                                             blocks=protocol.merge_equal_blocks(blocks)),
    )
    adjustment.response = message
    adjustment.save(update_fields=["response", "updated_at"])
    audit_record(obj=adjustment, action="oscp.capacity_adjustment_decided", actor_label=oscp_services.ACTOR,
                 after={"decision": adjustment.decision, "reason": adjustment.reason, "response": str(message.pk)})


def _block_from_json(raw: dict[str, object]) -> protocol.Block:
    return protocol.Block(
        start=protocol.parse_oscp_datetime(raw["start_time"], field="start_time"),
        end=protocol.parse_oscp_datetime(raw["end_time"], field="end_time"),
        capacity=float(str(raw["capacity"])), unit=str(raw["unit"]), phase=str(raw["phase"]),
    )


def order_dispatch_oscp(*, flex_order: FlexOrder, ocpi_commands: list[Any]) -> list[Any]:
    """The one hook in flex_order_dispatch (inside its transaction, after the schedules are stored): queue the OSCP
    forecasts the order changes, and keep OCPI profile commands only for CPOs whose dispatch_mode includes OCPI."""
    order_capacity_forecasts_queue(flex_order=flex_order)
    return [command for command in ocpi_commands if getattr(command.cpo, "dispatch_mode", DispatchMode.OCPI)
            != DispatchMode.OSCP]
