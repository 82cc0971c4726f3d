"""The demo market day, a-f, through the portal, the API, OCPI over real HTTP and settlement; then its ledger."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models import Sum

from aggregator.models import ChargingProfileCommand, ChargingSession, SessionSchedule
from common import isp as isp_time
from common.models import AuditEvent
from market.models import Connection, FlexOffer, FlexOrder, FlexRequest
from sandbox.demo import run_market_day
from sandbox.models import SandboxChargingProfile
from sandbox.scenario import demo_scenario_load
from settlement.models import MeterReading, OrderSettlement, SettlementLine, Statement

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def day(live_server, settings, tomorrow):
    settings.PUBLIC_BASE_URL = live_server.url
    world = demo_scenario_load(period=tomorrow, base_url=live_server.url, charge_points_per_congestion_point=24,
                               seed=11)
    lines: list[str] = []
    result = run_market_day(base_url=live_server.url, period=tomorrow, api_tokens=world.api_tokens,
                            progress=lines.append)
    return world, result, lines


def test_the_market_day_runs_a_to_f_and_its_ledger_adds_up(day, tomorrow):
    world, result, lines = day
    figures = result.figures

    # a-c: one request per point, offers from both aggregators, orders placed through the portal.
    assert figures["flex_requests"] == 3 == FlexRequest.objects.count()
    assert figures["offers"] == FlexOffer.objects.count() > 0
    assert figures["orders"] == FlexOrder.objects.count() > 0
    assert set(FlexRequest.objects.values_list("status", flat=True)) <= {"ordered", "partially_ordered"}

    # d: one profile per scheduled session, every one sent, answered and applied by the CPO.
    scheduled = SessionSchedule.objects.filter(is_current=True).count()
    assert scheduled == figures["sessions_scheduled"] > 0
    assert figures["profiles_sent"] == scheduled == ChargingProfileCommand.objects.count()
    assert figures["profiles_accepted"] == scheduled
    assert SandboxChargingProfile.objects.filter(is_active=True, async_result="ACCEPTED").count() == scheduled
    assert set(FlexOrder.objects.values_list("status", flat=True)) == {"settled"}

    # e: a reading per connection per ISP of the day; every session ended with the energy it could get.
    connections = Connection.objects.filter(charge_points__isnull=False).distinct().count()
    assert figures["meter_readings"] == MeterReading.objects.count() == connections * isp_time.isp_count(tomorrow)
    assert not ChargingSession.objects.exclude(status=ChargingSession.Status.COMPLETED).exists()
    for schedule in SessionSchedule.objects.filter(is_current=True).select_related("session"):
        # The car drew what the plan gave it: the profile limits were the plan.
        assert abs(schedule.session.energy_delivered_kwh - schedule.planned_energy_kwh) <= Decimal("0.01")

    # f: statements; each total is the sum of its settlements, each settlement the sum of its lines.
    assert figures["statements"] == Statement.objects.count() > 0
    for statement in Statement.objects.all():
        settlements = OrderSettlement.objects.filter(statement=statement)
        assert statement.total_eur == settlements.aggregate(t=Sum("total_eur"))["t"]
        for settlement in settlements:
            assert settlement.total_eur == settlement.lines.aggregate(t=Sum("paid_eur"))["t"]
            assert settlement.lines.count() == settlement.flex_order.isps.count()
    assert Decimal(figures["settled_eur"]) == Statement.objects.aggregate(t=Sum("total_eur"))["t"] > 0
    assert figures["delivered_kwh"] > 0

    # Delivery followed the orders: realised reduction within 15 % of what was ordered, summed over the day.
    ordered_w = -sum(line.ordered_w for line in SettlementLine.objects.all())
    delivered_w = sum(line.delivered_w for line in SettlementLine.objects.all())
    assert abs(delivered_w - ordered_w) <= 0.15 * ordered_w

    # Every transition of the day left an audit event; orders name the DSO user who accepted in the portal.
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"flex_request.created", "flex_request.opened", "d_prognosis.accepted", "flex_offer.submitted",
            "flex_offer.accepted", "flex_order.placed", "flex_order.dispatched", "flex_order.schedule_computed",
            "flex_order.settled"} <= actions
    dso_user_events = AuditEvent.objects.filter(action="flex_order.placed", actor__username="dso")
    assert dso_user_events.count() == FlexOrder.objects.count()

    # The progress display names each step.
    for step in ("a. ", "b. ", "c. ", "d. ", "e. ", "f. "):
        assert any(line.startswith(step) for line in lines), step
