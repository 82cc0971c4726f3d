"""Re-optimisation (services.congestion_point_reoptimise, charging_session_changed, charging_session_boost):
only the affected congestion point is re-planned, from the current ISP on, honouring the orders placed there."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from unittest.mock import patch

import numpy as np
import pytest

from aggregator import services
from aggregator.adapters.ocpi import parse_ocpi_datetime
from aggregator.models import ChargePointOperator, ChargingProfileCommand, ChargingSession, SessionSchedule
from aggregator.portfolio import portfolio_snapshot
from common import isp as isp_time
from common.exceptions import TransitionError
from common.models import AuditEvent
from market import services as market_services
from market.models import CongestionPoint, FlexOrder
from market.services import OfferOptionInput
from tests.builders import make_request
from tests.factories import (
    AggregatorConnectionFactory,
    ChargePointFactory,
    ChargePointOperatorFactory,
    ChargingSessionFactory,
    ConnectionFactory,
)

pytestmark = pytest.mark.django_db

TZ = isp_time.MARKET_TZ
Command = ChargingProfileCommand
DAY = date(2027, 1, 12)
AUTUMN_DST = date(2027, 10, 31)  # 100 ISPs: the clock goes back at 03:00


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


def at(instant: datetime):
    return patch("common.time.now", return_value=instant)


def evening_cars(cpo: ChargePointOperator, connections, day: date) -> list[ChargingSession]:
    morning = day + timedelta(days=1)
    specs = [(0, local(day, 17), local(morning, 7), "20", 11_000),
             (1, local(day, 17, 30), local(morning, 6, 30), "30", 7_400),
             (2 % len(connections), local(day, 18, 7), local(morning, 8), "12", 3_700)]
    sessions = []
    for index, arrival, departure, kwh, max_w in specs:
        point = ChargePointFactory(cpo=cpo, connection=connections[index], max_power_w=max_w)
        sessions.append(ChargingSessionFactory(charge_point=point, arrival_at=arrival, expected_departure_at=departure,
                                               energy_requested_kwh=Decimal(kwh), max_power_w=max_w))
    return sessions


def order_and_dispatch(world, point: CongestionPoint, day: date) -> FlexOrder:
    """The DSO asks for the evening, we offer what the optimiser proposes, the DSO orders, we dispatch."""
    request = make_request(dso=world.gridco, point=point, day=day, reduction_w=8_000)
    proposal = services.flex_offer_propose(aggregator=world.voltflex, flex_request=request)
    assert not proposal.is_empty
    market_services.d_prognosis_submit(aggregator=world.voltflex, congestion_point=point, period=day,
                                       isps=proposal.d_prognosis_isps)
    offer = market_services.flex_offer_submit(
        aggregator=world.voltflex, congestion_point=point, period=day,
        options=[OfferOptionInput(option_reference="1", price_eur=proposal.price_eur, isps=proposal.offer_isps,
                                  min_activation_factor=proposal.min_activation_factor)],
        expires_at=proposal.expires_at, flex_request=request)
    order = market_services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
    services.flex_order_dispatch(flex_order=order)
    return order


@dataclass
class TwoPoints:
    north: list[ChargingSession]
    south: list[ChargingSession]
    north_order: FlexOrder
    south_order: FlexOrder


def two_dispatched_points(world, day: date) -> TwoPoints:
    """Voltflex has evening cars behind cp_north and cp_south, each point with a dispatched evening order."""
    south_connections = [ConnectionFactory(congestion_point=world.cp_south) for _ in range(2)]
    for connection in south_connections:
        AggregatorConnectionFactory(aggregator=world.voltflex, connection=connection)
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
    north = evening_cars(cpo, world.voltflex_connections, day)
    south = evening_cars(cpo, south_connections, day)
    with at(local(day - timedelta(days=1), 12)):
        north_order = order_and_dispatch(world, world.cp_north, day)
        south_order = order_and_dispatch(world, world.cp_south, day)
    return TwoPoints(north=north, south=south, north_order=north_order, south_order=south_order)


def state_of(sessions: list[ChargingSession]) -> dict[str, object]:
    ids = [s.pk for s in sessions]
    return {
        "schedules": sorted((str(s.session_id), s.pk, s.is_current, s.start, tuple(s.slot_power_w))
                            for s in SessionSchedule.objects.filter(session_id__in=ids)),
        "commands": sorted((str(c.pk), c.status, str(c.request_body)) for c in Command.objects.filter(session_id__in=ids)),
    }


def current(session: ChargingSession) -> SessionSchedule:
    return SessionSchedule.objects.get(session=session, is_current=True)


def limits_from(body: dict, instant: datetime) -> float:
    """The W limit a charging profile sets at `instant`."""
    profile = body["charging_profile"]
    offset = (instant - parse_ocpi_datetime(profile["start_date_time"])).total_seconds()
    periods = profile["charging_profile_period"]
    limit = periods[0]["limit"]
    for period in periods:
        if period["start_period"] <= offset:
            limit = period["limit"]
    return limit


class TestBoostReoptimisesOnlyItsPoint:
    def test_a_boost_replans_the_north_point_and_leaves_the_south_point_alone(self, world):
        portfolio = two_dispatched_points(world, DAY)
        south_before = state_of(portfolio.south)
        boosted = portfolio.north[1]  # 7.4 kW car, 30 kWh, arrived 17:30
        old_schedule = current(boosted)
        now = local(DAY, 18, 10)
        with at(now):
            services.charging_session_boost(session=boosted)
            summary = services.congestion_point_reoptimise(aggregator=world.voltflex,
                                                           congestion_point=world.cp_north, reason="boost")

        assert state_of(portfolio.south) == south_before
        assert summary.sessions_scheduled == 3
        assert summary.schedules_written == 3
        for session in portfolio.north:  # every north session got a new current plan, the old one kept
            assert SessionSchedule.objects.filter(session=session).count() == 2
            assert SessionSchedule.objects.filter(session=session, is_current=True).count() == 1
        new_schedule = current(boosted)
        assert new_schedule.pk != old_schedule.pk
        assert not SessionSchedule.objects.get(pk=old_schedule.pk).is_current
        # The past and the ISP in progress are fixed: every slot up to 18:15 is the old plan's.
        current_isp = isp_time.floor_to_isp(now)
        next_slot = int((current_isp + isp_time.ISP - old_schedule.start) / isp_time.ISP)
        assert new_schedule.start == old_schedule.start
        assert new_schedule.slot_power_w[:next_slot] == old_schedule.slot_power_w[:next_slot]
        # Boosted: full power from the next ISP on until the energy is in (the old plan held it back at 18:15).
        assert old_schedule.slot_power_w[next_slot] < 7_400
        assert new_schedule.slot_power_w[next_slot] == 7_400
        # And a new SET command that lets the car take its full power at once, in the ISP in progress too.
        command = Command.objects.filter(session=boosted, status=Command.Status.PENDING).get()
        assert limits_from(command.request_body, now) == 7_400
        assert limits_from(command.request_body, current_isp + isp_time.ISP) == 7_400
        event = AuditEvent.objects.filter(action="portfolio.reoptimised", object_id=str(world.cp_north.pk)).get()
        assert event.after["reason"] == "boost"
        assert not AuditEvent.objects.filter(action="portfolio.reoptimised", object_id=str(world.cp_south.pk))

    def test_the_other_sessions_make_up_for_the_boost_to_keep_the_order(self, world):
        portfolio = two_dispatched_points(world, DAY)
        now = local(DAY, 18, 10)
        with at(now):
            services.charging_session_boost(session=portfolio.north[1])
            summary = services.congestion_point_reoptimise(aggregator=world.voltflex,
                                                           congestion_point=world.cp_north, reason="boost")
        assert summary.status == "Optimal"
        assert summary.shortfall_kwh == 0
        # The other north sessions still get all their energy by departure.
        for session in (portfolio.north[0], portfolio.north[2]):
            planned = current(session).planned_energy_kwh
            # At least the request; the min-current rule (0 or >= 6 A) may round a slot up.
            assert session.energy_requested_kwh - Decimal("0.01") <= planned
            assert planned <= session.energy_requested_kwh + Decimal(session.min_power_w) / 4000

    def test_a_car_arriving_unannounced_is_planned_so_the_order_still_holds(self, world):
        portfolio = two_dispatched_points(world, DAY)
        late = ChargingSessionFactory(
            charge_point=ChargePointFactory(cpo=portfolio.north[0].charge_point.cpo,
                                            connection=world.voltflex_connections[1], max_power_w=11_000),
            arrival_at=local(DAY, 18, 20), expected_departure_at=local(DAY + timedelta(days=1), 7),
            energy_requested_kwh=Decimal("15"), max_power_w=11_000, status=ChargingSession.Status.ACTIVE)
        now = local(DAY, 18, 25)
        with at(now):
            summary = services.congestion_point_reoptimise(aggregator=world.voltflex,
                                                           congestion_point=world.cp_north, reason="session_started")
        assert summary.sessions_scheduled == 4
        assert summary.deficiency_kw_max == 0 and summary.shortfall_kwh == 0
        # The order is a reduction below the uncontrolled baseline of every session, the new one included.
        snapshot = portfolio_snapshot(aggregator=world.voltflex, congestion_point=world.cp_north, period=DAY)
        baseline_w = snapshot.uncontrolled_kw.sum(axis=0) * 1000
        planned_w = np.zeros(snapshot.horizon.slots)
        for schedule in SessionSchedule.objects.filter(session__in=[*portfolio.north, late], is_current=True):
            offset = snapshot.horizon.slot_of(schedule.start)
            for index, power_w in enumerate(schedule.slot_power_w):
                if 0 <= offset + index < snapshot.horizon.slots:
                    planned_w[offset + index] += power_w
        first_replanned = snapshot.horizon.slot_of(isp_time.ceil_to_isp(now))
        for row in portfolio.north_order.isps.all():
            slot = snapshot.slot_of_isp(row.isp)
            if slot >= first_replanned:
                assert planned_w[slot] <= baseline_w[slot] + row.power_w + 4, f"ISP {row.isp}"
        assert current(late).planned_energy_kwh >= Decimal("15") - Decimal("0.01")
        assert Command.objects.filter(session=late, status=Command.Status.PENDING).exists()

    def test_a_running_session_plans_only_its_remaining_energy(self, world):
        portfolio = two_dispatched_points(world, DAY)
        car = portfolio.north[0]  # 20 kWh at 11 kW, arrived 17:00
        ChargingSession.objects.filter(pk=car.pk).update(energy_delivered_kwh=Decimal("15"),
                                                         status=ChargingSession.Status.ACTIVE)
        now = local(DAY, 19)
        with at(now):
            services.congestion_point_reoptimise(aggregator=world.voltflex, congestion_point=world.cp_north,
                                                 reason="session_update")
        schedule = current(car)
        first_new = int((now - schedule.start) / isp_time.ISP)
        remaining_kwh = sum(schedule.slot_power_w[first_new:]) / 1000 * isp_time.ISP_HOURS
        assert remaining_kwh == pytest.approx(5, abs=0.01)

    def test_nothing_is_sent_to_cars_never_steered_when_no_order_is_live(self, world):
        cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
        sessions = evening_cars(cpo, world.voltflex_connections, DAY)
        with at(local(DAY, 18, 30)):
            summary = services.congestion_point_reoptimise(aggregator=world.voltflex,
                                                           congestion_point=world.cp_north, reason="arrival")
        assert summary.sessions_scheduled == 3
        assert summary.commands_created == 0
        assert not Command.objects.filter(session__in=sessions).exists()

    def test_an_unchanged_plan_sends_no_new_commands(self, world):
        portfolio = two_dispatched_points(world, DAY)
        with at(local(DAY, 18, 10)):
            services.congestion_point_reoptimise(aggregator=world.voltflex, congestion_point=world.cp_north,
                                                 reason="first")
            pending = Command.objects.filter(session__in=portfolio.north, status=Command.Status.PENDING).count()
            again = services.congestion_point_reoptimise(aggregator=world.voltflex, congestion_point=world.cp_north,
                                                         reason="again")
        assert again.commands_created == 0
        assert Command.objects.filter(session__in=portfolio.north, status=Command.Status.PENDING).count() == pending


    def test_a_boosted_car_is_not_capped_even_after_its_expected_energy(self, world):
        portfolio = two_dispatched_points(world, DAY)
        boosted = portfolio.north[0]  # 20 kWh at 11 kW: expected to be full by about 19:00
        with at(local(DAY, 17, 20)):
            services.charging_session_boost(session=boosted)
            services.congestion_point_reoptimise(aggregator=world.voltflex, congestion_point=world.cp_north,
                                                 reason="boost")
        command = Command.objects.filter(session=boosted, status=Command.Status.PENDING).get()
        assert limits_from(command.request_body, local(DAY, 17, 20)) == 11_000
        assert limits_from(command.request_body, local(DAY, 23)) == 11_000

    def test_a_point_without_sessions_reoptimises_to_nothing(self, world):
        with at(local(DAY, 18, 10)):
            summary = services.congestion_point_reoptimise(aggregator=world.voltflex,
                                                           congestion_point=world.cp_north, reason="session_ended")
        assert (summary.sessions_scheduled, summary.commands_created) == (0, 0)


class TestTriggers:
    def test_boost_enqueues_the_reoptimisation_of_its_point_after_commit(self, world, django_capture_on_commit_callbacks):
        portfolio = two_dispatched_points(world, DAY)
        with at(local(DAY, 18, 10)), patch("aggregator.tasks.reoptimise_congestion_point_task.delay") as delay, \
                django_capture_on_commit_callbacks(execute=True):
            services.charging_session_boost(session=portfolio.north[0])
            assert delay.call_count == 0  # not before the boost is committed
        delay.assert_called_once_with(str(world.cp_north.pk), str(world.voltflex.pk), "boost")

    def test_the_task_runs_the_reoptimisation(self, world):
        from aggregator.tasks import reoptimise_congestion_point_task

        portfolio = two_dispatched_points(world, DAY)
        with at(local(DAY, 18, 10)):
            result = reoptimise_congestion_point_task.delay(str(world.cp_north.pk), str(world.voltflex.pk),
                                                            "session_arrived").get()
        assert result["sessions_scheduled"] == len(portfolio.north)
        assert result["reason"] == "session_arrived"

    def test_a_boosted_session_is_no_longer_flexible_and_a_second_boost_changes_nothing(self, world):
        portfolio = two_dispatched_points(world, DAY)
        session = portfolio.north[0]
        with at(local(DAY, 18, 10)):
            first = services.charging_session_boost(session=session)
        with at(local(DAY, 18, 20)):
            second = services.charging_session_boost(session=session)
        assert not first.is_flexible
        assert second.boosted_at == first.boosted_at == local(DAY, 18, 10)
        assert AuditEvent.objects.filter(action="charging_session.boosted", object_id=str(session.pk)).count() == 1

    def test_a_session_that_has_left_cannot_be_boosted(self, world):
        portfolio = two_dispatched_points(world, DAY)
        session = portfolio.north[2]
        ChargingSession.objects.filter(pk=session.pk).update(status=ChargingSession.Status.COMPLETED)
        with at(local(DAY, 18, 10)), pytest.raises(TransitionError) as refused:
            services.charging_session_boost(session=session)
        assert refused.value.code == "session_not_open"


class TestDstDay:
    def test_the_repeated_autumn_hour_counts_as_charging_time(self, world):
        """01:30 CEST to 04:30 CET is 4 elapsed hours (02:00-03:00 happens twice): 16 slots of 3.7 kW."""
        cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
        point = ChargePointFactory(cpo=cpo, connection=world.voltflex_connections[0], max_power_w=3_700)
        arrival, departure = local(AUTUMN_DST, 1, 30), local(AUTUMN_DST, 4, 30)
        assert departure.astimezone(UTC) - arrival.astimezone(UTC) == timedelta(hours=4)  # aware, same tz: wall clock
        session = ChargingSessionFactory(charge_point=point, arrival_at=arrival, expected_departure_at=departure,
                                         departure_source=ChargingSession.Source.MEASURED,
                                         energy_requested_kwh=Decimal("14.8"), max_power_w=3_700, flex_opt_out=True)
        with at(arrival):
            summary = services.congestion_point_reoptimise(aggregator=world.voltflex,
                                                           congestion_point=world.cp_north, reason="arrival")
        schedule = current(session)
        assert schedule.start == arrival
        assert schedule.slot_power_w == [3_700] * 16
        assert summary.shortfall_kwh == 0
        assert schedule.planned_energy_kwh == Decimal("14.800")

    def test_the_missing_spring_hour_is_not_charging_time(self, world):
        """01:30 CET to 04:30 CEST is 2 elapsed hours (02:00-03:00 does not exist): 8 slots, not 12."""
        cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
        point = ChargePointFactory(cpo=cpo, connection=world.voltflex_connections[0], max_power_w=3_700)
        spring = date(2027, 3, 28)
        arrival, departure = local(spring, 1, 30), local(spring, 4, 30)
        session = ChargingSessionFactory(charge_point=point, arrival_at=arrival, expected_departure_at=departure,
                                         departure_source=ChargingSession.Source.MEASURED,
                                         energy_requested_kwh=Decimal("10"), max_power_w=3_700, flex_opt_out=True)
        with at(arrival):
            summary = services.congestion_point_reoptimise(aggregator=world.voltflex,
                                                           congestion_point=world.cp_north, reason="arrival")
        assert current(session).slot_power_w == [3_700] * 8
        assert summary.shortfall_kwh == pytest.approx(10 - 7.4)  # the car cannot get 10 kWh in 2 h
