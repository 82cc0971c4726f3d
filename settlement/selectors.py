"""Reads of settlement data, scoped to the participant asking."""

from __future__ import annotations

import calendar
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db.models import Prefetch, QuerySet, Sum

from aggregator.models import ChargingSession, SessionSchedule
from common import isp as isp_time
from common.exceptions import ApplicationError
from market.models import Participant
from settlement.models import Dispute, OrderSettlement, SessionReward, SettlementLine, Statement

ENERGY_MET_TOLERANCE_KWH = Decimal("0.01")


def _with_lines(queryset: QuerySet[Statement]) -> QuerySet[Statement]:
    return queryset.select_related("dso", "aggregator", "ledger_entry").prefetch_related(
        Prefetch(
            "order_settlements",
            queryset=OrderSettlement.objects.select_related(
                "flex_order", "flex_order__congestion_point", "baseline").prefetch_related(
                Prefetch("lines", queryset=SettlementLine.objects.order_by("isp"))
            ),
        )
    )


def statements_for_participant(*, participant: Participant) -> QuerySet[Statement]:
    """Statements a participant may read: as the paying DSO or as the paid aggregator."""
    if participant.role == Participant.Role.DSO:
        queryset = Statement.objects.filter(dso=participant)
    elif participant.role == Participant.Role.AGR:
        queryset = Statement.objects.filter(aggregator=participant)
    else:
        queryset = Statement.objects.none()
    return _with_lines(queryset).order_by("-period_start", "-version")


def disputes_for_participant(*, participant: Participant) -> QuerySet[Dispute]:
    """Disputes on statements between the participant and its counterparts."""
    if participant.role == Participant.Role.DSO:
        queryset = Dispute.objects.filter(statement__dso=participant)
    elif participant.role == Participant.Role.AGR:
        queryset = Dispute.objects.filter(statement__aggregator=participant)
    else:
        queryset = Dispute.objects.none()
    return queryset.select_related("statement", "flex_order", "line", "resolution_statement", "raised_by",
                                   "resolved_by").order_by("-created_at")


# --- driver transparency report -------------------------------------------------------------------------------


def month_bounds(month: str) -> tuple[date, date]:
    """'YYYY-MM' -> first and last market day of that month."""
    try:
        first = datetime.strptime(month, "%Y-%m").date()  # noqa: DTZ007 (a calendar month, not an instant)
    except ValueError as exc:
        raise ApplicationError("month must look like 2026-11.", code="invalid_month", field="month") from exc
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


@dataclass
class SessionReport:
    session: ChargingSession
    energy_delivered_kwh: Decimal | None
    energy_shifted_kwh: Decimal
    requested_energy_met: bool | None
    shortfall_kwh: Decimal | None
    reward_eur: Decimal
    orders: list[str] = field(default_factory=list)


def _delivered_kwh(session: ChargingSession, schedule: SessionSchedule | None) -> Decimal | None:
    if session.energy_delivered_kwh is not None:
        return session.energy_delivered_kwh
    return schedule.planned_energy_kwh if schedule is not None else None


def driver_session_report(*, aggregator: Participant, month: str) -> list[SessionReport]:
    """Per session of the aggregator that started in `month` (market time): energy delivered, energy shifted out
    of ordered (congested) ISPs, whether the requested energy was met, and the reward earned, counted from the
    current statement versions only."""
    if aggregator.role != Participant.Role.AGR:
        raise ApplicationError("The driver report is the aggregator's.", code="permission_denied", status_code=403)
    first, last = month_bounds(month)
    sessions = list(
        ChargingSession.objects.filter(
            charge_point__cpo__aggregator=aggregator, arrival_at__gte=isp_time.day_start(first),
            arrival_at__lt=isp_time.day_end(last),
        ).exclude(status=ChargingSession.Status.INVALID).select_related("driver", "charge_point")
        .order_by("arrival_at", "pk")
    )
    schedules = {s.session_id: s for s in SessionSchedule.objects.filter(session__in=sessions, is_current=True)}
    rewards: dict[Any, dict[str, Any]] = defaultdict(lambda: {"kwh": Decimal(0), "eur": Decimal(0), "orders": []})
    for reward in (SessionReward.objects.filter(session__in=sessions,
                                                order_settlement__statement__status=Statement.Status.ISSUED)
                   .select_related("order_settlement__flex_order")):
        entry = rewards[reward.session_id]
        entry["kwh"] += reward.shifted_kwh
        entry["eur"] += reward.reward_eur
        entry["orders"].append(reward.order_settlement.flex_order.order_reference)
    report = []
    for session in sessions:
        schedule = schedules.get(session.pk)
        delivered = _delivered_kwh(session, schedule)
        shortfall = None if delivered is None else max(Decimal(0), session.energy_requested_kwh - delivered)
        entry = rewards[session.pk]
        report.append(SessionReport(
            session=session, energy_delivered_kwh=delivered, energy_shifted_kwh=entry["kwh"],
            requested_energy_met=None if shortfall is None else shortfall <= ENERGY_MET_TOLERANCE_KWH,
            shortfall_kwh=shortfall, reward_eur=entry["eur"], orders=sorted(set(entry["orders"]))))
    return report


@dataclass
class DriverMonth:
    driver_id: Any
    driver_reference: str | None
    sessions: int = 0
    energy_delivered_kwh: Decimal = Decimal(0)
    energy_shifted_kwh: Decimal = Decimal(0)
    sessions_energy_met: int = 0
    reward_eur: Decimal = Decimal(0)


def driver_month_report(*, aggregator: Participant, month: str) -> list[DriverMonth]:
    """The session report summed per driver (sessions without a known driver together, driver None)."""
    drivers: dict[Any, DriverMonth] = {}
    for item in driver_session_report(aggregator=aggregator, month=month):
        driver = item.session.driver
        key = driver.pk if driver is not None else None
        summary = drivers.setdefault(key, DriverMonth(driver_id=key,
                                                      driver_reference=driver.reference if driver else None))
        summary.sessions += 1
        summary.energy_delivered_kwh += item.energy_delivered_kwh or Decimal(0)
        summary.energy_shifted_kwh += item.energy_shifted_kwh
        summary.sessions_energy_met += 1 if item.requested_energy_met else 0
        summary.reward_eur += item.reward_eur
    return sorted(drivers.values(), key=lambda d: (d.driver_reference is None, d.driver_reference or ""))


def statement_reward_total(statement: Statement) -> Decimal:
    return SessionReward.objects.filter(order_settlement__statement=statement).aggregate(
        total=Sum("reward_eur"))["total"] or Decimal(0)
