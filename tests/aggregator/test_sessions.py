"""Charging sessions: completion once with the energy the CPO reports, and the model's invariants (energy vs
state of charge, the IEC 61851 minimum current, V2G limits, flexibility) as the optimiser sees them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from aggregator import portfolio, services
from aggregator.models import ChargingSession, Driver
from aggregator.services import charging_session_complete
from common import isp as isp_time
from common.exceptions import ApplicationError, TransitionError
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(tomorrow):
    arrival = isp_time.isp_start(tomorrow, 70)
    return ChargingSessionFactory(arrival_at=arrival, expected_departure_at=arrival + timedelta(hours=10))


def test_a_pending_session_completes_with_its_energy(session):
    ended = session.expected_departure_at
    charging_session_complete(session=session, ended_at=ended, energy_delivered_kwh=Decimal("18.250"))
    session.refresh_from_db()
    assert session.status == ChargingSession.Status.COMPLETED
    assert (session.ended_at, session.energy_delivered_kwh) == (ended, Decimal("18.250"))


def test_a_session_completes_only_once(session):
    charging_session_complete(session=session, ended_at=session.expected_departure_at,
                              energy_delivered_kwh=Decimal("1"))
    with pytest.raises(TransitionError):
        charging_session_complete(session=session, ended_at=session.expected_departure_at,
                                  energy_delivered_kwh=Decimal("2"))
    session.refresh_from_db()
    assert session.energy_delivered_kwh == Decimal("1.000")


def test_an_invalid_session_cannot_complete(session):
    ChargingSession.objects.filter(pk=session.pk).update(status=ChargingSession.Status.INVALID)
    with pytest.raises(TransitionError):
        charging_session_complete(session=session, ended_at=session.expected_departure_at,
                                  energy_delivered_kwh=Decimal("1"))


# --- the session model's invariants ---------------------------------------------------------------------


def valid_session(**overrides):
    """An unsaved session at a fresh 3-phase 11 kW charge point, valid unless `overrides` break it."""
    point = ChargePointFactory(max_power_w=11_000, phases=3)
    arrival = datetime(2027, 1, 12, 18, tzinfo=isp_time.MARKET_TZ)
    fields = {"charge_point": point, "cpo_session_id": "S1", "arrival_at": arrival,
              "expected_departure_at": arrival + timedelta(hours=12), "energy_requested_kwh": Decimal("20"),
              "max_power_w": 11_000}
    fields.update(overrides)
    return ChargingSession(**fields)


def refusal(session) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as refused:
        session.full_clean()
    return refused.value.message_dict


class TestEnergyAndStateOfCharge:
    def test_energy_follows_from_battery_and_states_of_charge(self):
        energy = ChargingSession.energy_for_soc(battery_capacity_kwh=Decimal("60"), arrival_soc_pct=Decimal("20"),
                                                target_soc_pct=Decimal("80"))
        assert energy == Decimal("36.000")

    def test_a_car_already_at_its_target_needs_nothing(self):
        assert ChargingSession.energy_for_soc(battery_capacity_kwh=Decimal("60"), arrival_soc_pct=Decimal("80"),
                                              target_soc_pct=Decimal("80")) == 0

    def test_a_target_soc_must_match_the_energy_requested(self):
        session = valid_session(battery_capacity_kwh=Decimal("60"), arrival_soc_pct=Decimal("20"),
                                target_soc_pct=Decimal("80"), energy_requested_kwh=Decimal("20"))
        assert "36.000 kWh" in refusal(session)["energy_requested_kwh"][0]
        session.energy_requested_kwh = Decimal("36")
        session.full_clean()

    def test_a_target_soc_needs_the_battery_and_the_arrival_soc(self):
        assert "target_soc_pct" in refusal(valid_session(target_soc_pct=Decimal("80")))

    def test_a_target_below_the_arrival_soc_is_refused(self):
        session = valid_session(battery_capacity_kwh=Decimal("60"), arrival_soc_pct=Decimal("70"),
                                target_soc_pct=Decimal("50"), energy_requested_kwh=Decimal("0"))
        assert "target_soc_pct" in refusal(session)

    def test_create_derives_the_energy_from_the_drivers_battery(self, world):
        driver = services.driver_create(aggregator=world.voltflex, reference="D1", token_uids=["tok-1"],
                                        battery_capacity_kwh=Decimal("75"))
        point = ChargePointFactory(cpo=ChargePointOperatorFactory(aggregator=world.voltflex))
        arrival = datetime(2027, 1, 12, 18, tzinfo=isp_time.MARKET_TZ)
        session = services.charging_session_create(
            charge_point=point, cpo_session_id="S1", arrival_at=arrival, max_power_w=11_000, token_uid="TOK-1",
            expected_departure_at=arrival + timedelta(hours=13), arrival_soc_pct=Decimal("30"),
            target_soc_pct=Decimal("90"))
        assert session.driver == driver
        assert session.energy_requested_kwh == Decimal("45.000")
        assert session.energy_source == ChargingSession.Source.DRIVER
        assert session.estimated_values == []

    def test_create_refuses_a_target_soc_without_battery_data(self, world):
        point = ChargePointFactory(cpo=ChargePointOperatorFactory(aggregator=world.voltflex))
        arrival = datetime(2027, 1, 12, 18, tzinfo=isp_time.MARKET_TZ)
        with pytest.raises(ApplicationError) as refused:
            services.charging_session_create(charge_point=point, cpo_session_id="S1", arrival_at=arrival,
                                             max_power_w=11_000, target_soc_pct=Decimal("90"))
        assert (refused.value.code, refused.value.field) == ("soc_incomplete", "target_soc_pct")


class TestMinimumCurrent:
    def test_three_phases_at_6_a_is_4140_w(self):
        assert valid_session(phases=3).min_power_w == 4_140

    def test_one_phase_at_6_a_is_1380_w(self):
        assert valid_session(phases=1, max_power_w=3_700).min_power_w == 1_380

    def test_unknown_phases_follow_the_car_power(self):
        assert valid_session(max_power_w=3_700).charging_phases == 1  # a 3.7 kW car on a 3-phase EVSE
        assert valid_session(max_power_w=7_400).charging_phases == 1
        assert valid_session(max_power_w=11_000).charging_phases == 3

    def test_a_minimum_power_above_the_maximum_is_refused(self):
        assert "min_current_a" in refusal(valid_session(phases=3, max_power_w=4_000))
        assert "min_current_a" in refusal(valid_session(phases=1, max_power_w=3_700, min_current_a=Decimal("20")))

    def test_the_optimiser_gets_the_minimum_power(self):
        assert portfolio.session_input(valid_session(phases=3)).min_power_kw == pytest.approx(4.14)


class TestV2g:
    def test_discharge_needs_a_v2g_capable_car(self):
        assert "max_discharge_power_w" in refusal(valid_session(max_discharge_power_w=5_000))

    def test_the_database_refuses_discharge_without_v2g_too(self):
        session = valid_session(max_discharge_power_w=5_000)
        with pytest.raises(IntegrityError):
            session.save()

    def test_the_floor_may_not_lie_above_the_target(self):
        session = valid_session(v2g_capable=True, max_discharge_power_w=5_000, battery_capacity_kwh=Decimal("60"),
                                arrival_soc_pct=Decimal("50"), target_soc_pct=Decimal("80"),
                                energy_requested_kwh=Decimal("18"), v2g_min_soc_pct=Decimal("90"))
        assert "v2g_min_soc_pct" in refusal(session)

    def test_only_a_consenting_driver_above_the_floor_discharges(self, world):
        driver = Driver.objects.create(aggregator=world.voltflex, reference="D", v2g_allowed=False)
        session = valid_session(v2g_capable=True, max_discharge_power_w=5_000, battery_capacity_kwh=Decimal("60"),
                                arrival_soc_pct=Decimal("50"), v2g_min_soc_pct=Decimal("30"), driver=driver)
        assert session.v2g_floor_kwh == pytest.approx(-12.0)  # may give back 20 % of 60 kWh
        assert portfolio.session_input(session).max_discharge_kw == 0  # no consent
        driver.v2g_allowed = True
        assert portfolio.session_input(session).max_discharge_kw == pytest.approx(5.0)
        session.arrival_soc_pct = Decimal("25")  # arrived below its floor: charges only
        assert portfolio.session_input(session).max_discharge_kw == 0


class TestFlexibility:
    def test_an_opted_out_or_boosted_session_is_not_flexible(self):
        assert portfolio.session_input(valid_session()).flexible
        assert not portfolio.session_input(valid_session(flex_opt_out=True)).flexible
        boosted = valid_session(boosted_at=datetime(2027, 1, 12, 19, tzinfo=isp_time.MARKET_TZ))
        assert not portfolio.session_input(boosted).flexible

    def test_a_minimum_energy_becomes_an_optimiser_deadline(self):
        due = datetime(2027, 1, 13, 5, tzinfo=isp_time.MARKET_TZ)
        session = valid_session(min_energy_kwh=Decimal("10"), min_energy_by=due)
        assert portfolio.session_input(session).min_energy_by == ((due.astimezone(UTC), 10.0),)

    def test_a_deadline_at_departure_moves_forward_with_the_safety_margin(self):
        departure = datetime(2027, 1, 13, 6, tzinfo=isp_time.MARKET_TZ)  # given by the driver: 15 min margin
        session = valid_session(min_energy_kwh=Decimal("10"), min_energy_by=departure)
        margin_due = departure.astimezone(UTC) - timedelta(minutes=15)
        assert portfolio.session_input(session).min_energy_by == ((margin_due, 10.0),)
        assert portfolio.session_input(session).departure == margin_due

    def test_a_minimum_energy_needs_its_time_and_may_not_exceed_the_request(self):
        assert "min_energy_by" in refusal(valid_session(min_energy_kwh=Decimal("10")))
        due = datetime(2027, 1, 13, 6, tzinfo=isp_time.MARKET_TZ)
        assert "min_energy_kwh" in refusal(valid_session(min_energy_kwh=Decimal("30"), min_energy_by=due))
