"""Estimates for unknown departures and energies (aggregator.estimates) and the safety margins the plan keeps
(aggregator.portfolio.planned_departure / planned_energy_kwh)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import numpy as np
import pytest

from aggregator import estimates, portfolio, services
from aggregator.models import ChargePoint, ChargingSession
from common import isp as isp_time
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory

pytestmark = pytest.mark.django_db

TZ = isp_time.MARKET_TZ
Source = ChargingSession.Source


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


@pytest.fixture
def charger(world) -> ChargePoint:
    return ChargePointFactory(cpo=ChargePointOperatorFactory(aggregator=world.voltflex),
                              connection=world.voltflex_connections[0], location_type=ChargePoint.LocationType.HOME)


@pytest.fixture
def driver(world):
    return services.driver_create(aggregator=world.voltflex, reference="D1", token_uids=["RFID-1"])


def past_session(charger, driver, *, day: date, arrive: tuple[int, int], leave_after: timedelta, kwh: str):
    arrival = local(day, *arrive)
    return ChargingSessionFactory(
        charge_point=charger, driver=driver, arrival_at=arrival, expected_departure_at=arrival + leave_after,
        ended_at=arrival + leave_after, energy_delivered_kwh=Decimal(kwh), energy_requested_kwh=Decimal("99"),
        status=ChargingSession.Status.COMPLETED)


class TestPopulationDefault:
    def test_a_home_arrival_at_18_stays_the_elaadnl_mean_for_its_slot(self, charger):
        arrival = local(date(2027, 1, 12), 18, 10)
        estimate = estimates.session_estimate(arrival=arrival, charge_point=charger, driver=None)
        # ElaadNL mean session length, home, arrivals 18:00-18:30: 13.9 h; mean energy 24.4 kWh.
        assert estimate.departure == arrival + timedelta(hours=13.9)
        assert estimate.energy_kwh == Decimal("24.4")
        assert (estimate.departure_source, estimate.energy_source) == (Source.POPULATION, Source.POPULATION)

    def test_work_arrivals_without_data_fall_back_to_the_public_curve(self, charger):
        charger.location_type = ChargePoint.LocationType.WORK
        arrival = local(date(2027, 1, 12), 21)
        estimate = estimates.session_estimate(arrival=arrival, charge_point=charger, driver=None)
        assert estimate.departure == arrival + timedelta(hours=11.2)  # public, 21:00-21:30
        assert estimate.energy_kwh == Decimal("20.3")

    def test_a_driver_with_too_little_history_gets_the_population_default(self, charger, driver):
        past_session(charger, driver, day=date(2027, 1, 5), arrive=(18, 0), leave_after=timedelta(hours=13),
                     kwh="10")
        estimate = estimates.session_estimate(arrival=local(date(2027, 1, 12), 18), charge_point=charger,
                                              driver=driver)
        assert (estimate.departure_source, estimate.energy_source) == (Source.POPULATION, Source.POPULATION)


class TestDriverHistory:
    def test_the_median_departure_time_and_energy_of_recent_sessions(self, charger, driver):
        for days, leave_h, kwh in ((1, 13.0, "18"), (2, 13.5, "22"), (3, 12.5, "30")):  # 07:00, 07:30, 06:30
            past_session(charger, driver, day=date(2027, 1, 12) - timedelta(days=days), arrive=(18, 0),
                         leave_after=timedelta(hours=leave_h), kwh=kwh)
        arrival = local(date(2027, 1, 12), 17, 40)
        estimate = estimates.session_estimate(arrival=arrival, charge_point=charger, driver=driver)
        assert estimate.departure == local(date(2027, 1, 13), 7)
        assert estimate.energy_kwh == Decimal("22.000")
        assert (estimate.departure_source, estimate.energy_source) == (Source.HISTORY, Source.HISTORY)

    def test_departures_around_midnight_give_a_median_around_midnight(self, charger, driver):
        for days, leave_h in ((1, 5.5), (2, 6.5), (3, 6.0)):  # from 18:00: 23:30, 00:30, 00:00
            past_session(charger, driver, day=date(2027, 1, 12) - timedelta(days=days), arrive=(18, 0),
                         leave_after=timedelta(hours=leave_h), kwh="10")
        arrival = local(date(2027, 1, 12), 19)
        estimate = estimates.session_estimate(arrival=arrival, charge_point=charger, driver=driver)
        assert estimate.departure == local(date(2027, 1, 13), 0)

    def test_other_drivers_sessions_do_not_count(self, charger, driver, world):
        other = services.driver_create(aggregator=world.voltflex, reference="D2")
        for days in (1, 2, 3):
            past_session(charger, other, day=date(2027, 1, 12) - timedelta(days=days), arrive=(18, 0),
                         leave_after=timedelta(hours=2), kwh="5")
        estimate = estimates.session_estimate(arrival=local(date(2027, 1, 12), 18), charge_point=charger,
                                              driver=driver)
        assert estimate.departure_source == Source.POPULATION

    def test_the_history_window_is_configurable(self, charger, driver, settings):
        settings.AGGREGATOR_HISTORY_MIN_SESSIONS = 1
        past_session(charger, driver, day=date(2027, 1, 11), arrive=(18, 0), leave_after=timedelta(hours=13),
                     kwh="12.5")
        estimate = estimates.session_estimate(arrival=local(date(2027, 1, 12), 18), charge_point=charger,
                                              driver=driver)
        assert (estimate.departure, estimate.energy_kwh) == (local(date(2027, 1, 13), 7), Decimal("12.500"))

    def test_the_usual_departure_preference_beats_the_history(self, charger, driver):
        driver.usual_departure_time = time(8, 15)
        for days in (1, 2, 3):
            past_session(charger, driver, day=date(2027, 1, 12) - timedelta(days=days), arrive=(18, 0),
                         leave_after=timedelta(hours=2), kwh="5")
        estimate = estimates.session_estimate(arrival=local(date(2027, 1, 12), 18), charge_point=charger,
                                              driver=driver)
        assert estimate.departure == local(date(2027, 1, 13), 8, 15)
        assert estimate.departure_source == Source.DRIVER


class TestSessionCreate:
    def test_unknown_values_are_estimated_and_recorded_as_such(self, charger, driver):
        arrival = local(date(2027, 1, 12), 18, 10)
        session = services.charging_session_create(charge_point=charger, cpo_session_id="S1", arrival_at=arrival,
                                                   max_power_w=11_000, token_uid="rfid-1")
        assert session.driver == driver
        assert session.estimated_values == ["expected_departure_at", "energy_requested_kwh"]
        assert session.expected_departure_at == arrival + timedelta(hours=13.9)

    def test_given_values_are_kept_and_the_preferences_applied(self, charger, driver):
        driver.flex_opt_out, driver.min_energy_kwh, driver.min_energy_by_time = True, Decimal("10"), time(6, 30)
        driver.save()
        arrival = local(date(2027, 1, 12), 18)
        session = services.charging_session_create(
            charge_point=charger, cpo_session_id="S1", arrival_at=arrival, max_power_w=11_000, token_uid="RFID-1",
            expected_departure_at=local(date(2027, 1, 13), 7), energy_requested_kwh=Decimal("25"))
        assert session.estimated_values == []
        assert session.flex_opt_out and not session.is_flexible
        assert (session.min_energy_kwh, session.min_energy_by) == (Decimal("10.000"), local(date(2027, 1, 13), 6, 30))

    def test_a_minimum_due_after_the_departure_is_not_applied(self, charger, driver):
        driver.min_energy_kwh, driver.min_energy_by_time = Decimal("10"), time(9, 0)
        driver.save()
        arrival = local(date(2027, 1, 12), 18)
        session = services.charging_session_create(
            charge_point=charger, cpo_session_id="S1", arrival_at=arrival, max_power_w=11_000, token_uid="RFID-1",
            expected_departure_at=local(date(2027, 1, 13), 7), energy_requested_kwh=Decimal("25"))
        assert session.min_energy_kwh is None


class TestSafetyMargin:
    def session(self, charger, **fields) -> ChargingSession:
        arrival = local(date(2027, 1, 12), 18)
        defaults = {"charge_point": charger, "arrival_at": arrival,
                    "expected_departure_at": local(date(2027, 1, 13), 7), "energy_requested_kwh": Decimal("20")}
        return ChargingSessionFactory.build(**{**defaults, **fields})

    def test_an_estimated_departure_is_planned_an_hour_early(self, charger):
        session = self.session(charger, departure_source=Source.HISTORY)
        assert portfolio.planned_departure(session) == local(date(2027, 1, 13), 6)

    def test_a_given_departure_is_planned_15_minutes_early_and_a_measured_one_not(self, charger):
        assert portfolio.planned_departure(self.session(charger)) == local(date(2027, 1, 13), 6, 45)
        measured = self.session(charger, departure_source=Source.MEASURED)
        assert portfolio.planned_departure(measured) == local(date(2027, 1, 13), 7)

    def test_the_margin_never_takes_more_than_half_a_short_stay(self, charger):
        session = self.session(charger, departure_source=Source.POPULATION, energy_requested_kwh=Decimal("2"),
                               expected_departure_at=local(date(2027, 1, 12), 18, 40))
        assert portfolio.planned_departure(session) == local(date(2027, 1, 12), 18, 20)

    def test_an_estimated_energy_is_planned_10_percent_higher_but_never_above_the_battery(self, charger):
        assert portfolio.planned_energy_kwh(self.session(charger, energy_source=Source.HISTORY)) == pytest.approx(22)
        assert portfolio.planned_energy_kwh(self.session(charger)) == pytest.approx(20)
        small = self.session(charger, energy_source=Source.POPULATION, battery_capacity_kwh=Decimal("21"))
        assert portfolio.planned_energy_kwh(small) == pytest.approx(21)

    def test_the_margins_come_from_settings(self, charger, settings):
        settings.AGGREGATOR_ESTIMATED_DEPARTURE_MARGIN_MINUTES = 90
        settings.AGGREGATOR_ESTIMATED_ENERGY_MARGIN_PCT = 0
        session = self.session(charger, departure_source=Source.POPULATION, energy_source=Source.POPULATION)
        assert portfolio.planned_departure(session) == local(date(2027, 1, 13), 5, 30)
        assert portfolio.planned_energy_kwh(session) == pytest.approx(20)

    def test_the_optimiser_works_to_the_planned_departure(self, charger):
        session_input = portfolio.session_input(self.session(charger, departure_source=Source.HISTORY))
        assert session_input.departure == local(date(2027, 1, 13), 6).astimezone(UTC)

    def test_the_margin_shrinks_so_full_power_can_still_deliver_the_energy(self, charger):
        session = self.session(charger, departure_source=Source.HISTORY, max_power_w=3_700,
                               expected_departure_at=local(date(2027, 1, 12), 23))  # 20 kWh at 3.7 kW: 5.4 h
        assert portfolio.planned_departure(session) == local(date(2027, 1, 12), 23)
        session.energy_requested_kwh = Decimal("16.65")  # 4.5 h at full power: due 22:30, not 22:00
        assert portfolio.planned_departure(session) == local(date(2027, 1, 12), 22, 30)

    def test_the_margin_finishes_the_plan_early_yet_never_costs_the_driver_energy(self, charger):
        """Dispatch with the margin: a long stay is full an hour early; a short one still gets all that fits."""
        from aggregator.optimiser import Horizon, dispatch_optimise

        long_stay = self.session(charger, departure_source=Source.HISTORY)  # 18:00-07:00, 20 kWh, due 06:00
        short_stay = self.session(charger, departure_source=Source.HISTORY, max_power_w=3_700,
                                  expected_departure_at=local(date(2027, 1, 12), 21))  # 3 h x 3.7 = 11.1 kWh
        inputs = [portfolio.session_input(long_stay), portfolio.session_input(short_stay)]
        horizon = Horizon.covering(start=local(date(2027, 1, 12), 18), sessions=inputs)
        result = dispatch_optimise(horizon=horizon, sessions=inputs, ordered_reduction_kw={},
                                   base_load_kw=np.zeros(horizon.slots))
        due_slot = horizon.slot_of(local(date(2027, 1, 13), 6))
        assert result.schedule_kw[0, :due_slot].sum() * isp_time.ISP_HOURS == pytest.approx(20, abs=0.01)
        assert result.schedule_kw[1].sum() * isp_time.ISP_HOURS == pytest.approx(11.1, abs=0.01)


class TestLocalTimes:
    def test_the_next_local_time_is_at_least_half_an_hour_away(self):
        after = local(date(2027, 1, 12), 7, 10)
        assert estimates.next_local_time(after=after, at=time(7, 30)) == local(date(2027, 1, 13), 7, 30)
        assert estimates.next_local_time(after=after, at=time(7, 45)) == local(date(2027, 1, 12), 7, 45)

    def test_across_the_spring_dst_night_the_wall_clock_time_is_kept(self):
        spring = date(2027, 3, 28)  # 02:00 -> 03:00
        after = local(spring - timedelta(days=1), 22)
        departure = estimates.next_local_time(after=after, at=time(7, 0))
        assert departure == local(spring, 7)
        assert departure.astimezone(UTC) - after.astimezone(UTC) == timedelta(hours=8)  # one hour less elapsed
