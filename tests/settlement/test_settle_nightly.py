"""The nightly job (Celery beat, 02:00 Europe/Amsterdam): idempotent, re-runnable for a date range by hand, and
late or corrected meter data issues a new statement version."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from io import StringIO
from unittest.mock import patch

import pytest
from celery.schedules import crontab
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from common import isp as isp_time
from market.models import FlexOrder
from settlement.models import LedgerEntry, OrderSettlement, SettlementLine, SettlementRun, Statement
from settlement.services import meter_readings_import
from settlement.tasks import settle_previous_day_task
from tests.conftest import World
from tests.settlement.test_settle import meter_flat, meter_row, order_isps, place_order

pytestmark = pytest.mark.django_db


def night_after(day: date, nights: int = 1) -> datetime:
    return isp_time.day_start(day + timedelta(days=nights)) + timedelta(hours=2)


def snapshot() -> tuple:
    return (list(Statement.objects.order_by("version").values_list("pk", "version", "status", "total_eur")),
            list(LedgerEntry.objects.values_list("entry_hash", flat=True)), OrderSettlement.objects.count(),
            SettlementLine.objects.count(), list(FlexOrder.objects.values_list("status", flat=True)))


def test_the_beat_schedule_runs_the_job_at_2_in_amsterdam() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["settlement-nightly"]
    assert entry["task"] == "settlement.tasks.settle_previous_day_task"
    schedule = entry["schedule"]
    assert isinstance(schedule, crontab)
    assert (schedule.hour, schedule.minute) == ({2}, {0})
    assert settings.CELERY_TIMEZONE == "Europe/Amsterdam"
    from config.celery import app

    assert str(app.conf.timezone) == "Europe/Amsterdam"
    assert settings.CELERY_TASK_ROUTES["settlement.tasks.*"] == {"queue": "settlement"}


def test_running_the_nightly_job_twice_changes_nothing(world: World, tomorrow: date) -> None:
    isps = order_isps(tomorrow)
    place_order(world, tomorrow, isps=isps)
    meter_flat(world.voltflex_connections, tomorrow, isps, "4.000")

    with patch("common.time.now", return_value=night_after(tomorrow)):
        first = settle_previous_day_task()
        before = snapshot()
        second = settle_previous_day_task()

    assert first == {"period": tomorrow.isoformat(), "statements": 1, "settled_orders": 1, "waiting_orders": 0}
    assert second == {"period": tomorrow.isoformat(), "statements": 0, "settled_orders": 0, "waiting_orders": 0}
    assert snapshot() == before
    assert SettlementRun.objects.filter(period=tomorrow).count() == 2  # both runs are logged


def test_a_corrected_reading_after_settlement_issues_a_new_version(world: World, tomorrow: date) -> None:
    isps = order_isps(tomorrow)
    place_order(world, tomorrow, isps=isps)
    meter_flat(world.voltflex_connections, tomorrow, isps, "4.000")  # 48 kW: full delivery, EUR 24.00
    with patch("common.time.now", return_value=night_after(tomorrow)):
        settle_previous_day_task()
    with patch("common.time.now", return_value=night_after(tomorrow) + timedelta(hours=5)):
        # The meter company corrects one reading: 6 kWh, so 56 kW in the last ISP (4 kW delivered: EUR 2.00, not 6.00).
        meter_readings_import(rows=[meter_row(world.voltflex_connections[0], tomorrow, isps[3], "6.000")])

    with patch("common.time.now", return_value=night_after(tomorrow, 2)):
        result = settle_previous_day_task()  # "yesterday" is now the day after: the correction is found anyway

    assert result["statements"] == 1 and result["settled_orders"] == 1
    v1, v2 = Statement.objects.order_by("version")
    assert (v1.status, v1.total_eur, v2.status, v2.total_eur) == ("superseded", Decimal("24.00"), "issued",
                                                                  Decimal("20.00"))
    assert v2.reason == f"meter data for {tomorrow.isoformat()} changed after its settlement"
    assert LedgerEntry.objects.count() == 2
    with patch("common.time.now", return_value=night_after(tomorrow, 3)):
        assert settle_previous_day_task()["statements"] == 0


def test_the_settle_command_reruns_a_date_range(world: World, tomorrow: date) -> None:
    days = [tomorrow, tomorrow + timedelta(days=1)]
    for day in days:
        isps = order_isps(day)
        place_order(world, day, isps=isps)
        meter_flat(world.voltflex_connections, day, isps, "4.000")
    out = StringIO()

    call_command("settle", "--from", days[0].isoformat(), "--to", days[1].isoformat(), stdout=out)
    before = snapshot()
    again = StringIO()
    call_command("settle", "--from", days[0].isoformat(), "--to", days[1].isoformat(), stdout=again)

    assert "2 statement versions issued, 2 orders settled, 0 waiting" in out.getvalue()
    assert "0 statement versions issued, 0 orders settled, 0 waiting" in again.getvalue()
    assert snapshot() == before
    assert set(FlexOrder.objects.values_list("status", flat=True)) == {"settled"}
    with pytest.raises(CommandError):
        call_command("settle", "--from", days[1].isoformat(), "--to", days[0].isoformat())
    with pytest.raises(CommandError):
        call_command("settle", "--from", "yesterday")


def test_waiting_orders_are_listed_by_the_command(world: World, tomorrow: date) -> None:
    isps = order_isps(tomorrow)
    order = place_order(world, tomorrow, isps=isps)
    meter_flat(world.voltflex_connections[:2], tomorrow, isps, "4.000")
    out = StringIO()

    call_command("settle", "--from", tomorrow.isoformat(), stdout=out)

    assert "0 statement versions issued, 0 orders settled, 1 waiting" in out.getvalue()
    assert f"{order.order_reference} waits: Meter data incomplete" in out.getvalue()
    assert Statement.objects.count() == 0


def test_an_order_is_paid_through_one_statement_only(world: World, tomorrow: date) -> None:
    from settlement.services import settle_day, statement_issue

    isps = order_isps(tomorrow)
    order = place_order(world, tomorrow, isps=isps)
    meter_flat(world.voltflex_connections, tomorrow, isps, "4.000")
    by_hand = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow)
    assert by_hand.issued

    [nightly] = settle_day(period=tomorrow)  # the monthly statement must not pay it again

    assert (nightly.statement, nightly.settled_orders) == (None, 0)
    assert nightly.waiting_orders == {order.order_reference: f"Settled in the statement starting {tomorrow}."}
    assert OrderSettlement.objects.filter(statement__status="issued").count() == 1
