"""The aggregator API: drivers and their preferences, sessions, and the boost button (/api/v1/aggregator/)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from unittest.mock import patch

import pytest
from rest_framework.test import APIClient

from aggregator import services
from aggregator.models import ChargingSession, Driver, DriverToken
from common import isp as isp_time
from common.models import AuditEvent
from market.apikeys import api_key_create
from market.authentication import KEYWORD
from tests.conftest import api_client_for
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory

pytestmark = pytest.mark.django_db

TZ = isp_time.MARKET_TZ
API = "/api/v1/aggregator"
DAY = date(2027, 1, 12)


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


@pytest.fixture
def voltflex(world):
    return api_client_for(world.voltflex_user)


@pytest.fixture
def chargeco(world):
    return api_client_for(world.chargeco_user)


@pytest.fixture
def evening_session(world) -> ChargingSession:
    """A Voltflex car behind cp_north, 18:00 to 07:00, with a driver holding token RFID-9."""
    driver = services.driver_create(aggregator=world.voltflex, reference="EMSP-9", token_uids=["RFID-9"])
    point = ChargePointFactory(cpo=ChargePointOperatorFactory(aggregator=world.voltflex),
                               connection=world.voltflex_connections[0])
    return ChargingSessionFactory(charge_point=point, driver=driver, arrival_at=local(DAY, 18),
                                  expected_departure_at=local(DAY + timedelta(days=1), 7),
                                  status=ChargingSession.Status.ACTIVE)


def error(response) -> tuple[int, str, str | None]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["field"]


class TestDriverCreate:
    def test_it_registers_a_driver_with_preferences_and_tokens(self, voltflex, world):
        response = voltflex.post(f"{API}/drivers/create/", {
            "reference": "EMSP-1", "usual_departure_time": "07:30", "min_energy_kwh": "15",
            "min_energy_by_time": "07:00", "token_uids": ["nl-flx-c1", "RFID-2"]}, format="json")
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["usual_departure_time"] == "07:30"
        assert body["min_energy_kwh"] == "15.00"
        assert body["token_uids"] == ["NL-FLX-C1", "RFID-2"]
        driver = Driver.objects.get(pk=body["id"])
        assert driver.aggregator == world.voltflex
        assert AuditEvent.objects.filter(action="driver.created", object_id=str(driver.pk)).exists()

    def test_a_retry_with_the_same_idempotency_key_creates_one_driver(self, voltflex):
        payload = {"reference": "EMSP-1", "flex_opt_out": True}
        first = voltflex.post(f"{API}/drivers/create/", payload, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        again = voltflex.post(f"{API}/drivers/create/", payload, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert Driver.objects.filter(reference="EMSP-1").count() == 1

    def test_without_a_key_a_second_create_is_a_duplicate(self, voltflex):
        voltflex.post(f"{API}/drivers/create/", {"reference": "EMSP-1"}, format="json")
        response = voltflex.post(f"{API}/drivers/create/", {"reference": "EMSP-1"}, format="json")
        assert error(response) == (400, "duplicate_reference", "reference")

    @pytest.mark.parametrize(("payload", "code", "field"), [
        ({"reference": "D", "min_energy_kwh": "10"}, "invalid_preferences", "min_energy_by_time"),
        ({"reference": "D", "min_energy_kwh": "-1", "min_energy_by_time": "07:00"}, "min_value", "min_energy_kwh"),
        ({"reference": "D", "usual_departure_time": "25:00"}, "invalid", "usual_departure_time"),
        ({"reference": "D", "battery_capacity_kwh": "0"}, "min_value", "battery_capacity_kwh"),
        ({"reference": "D", "token_uids": ["x" * 37]}, "max_length", "token_uids[0]"),
        ({"usual_departure_time": "07:00"}, "required", "reference"),
    ])
    def test_bad_input_gets_a_clear_code(self, voltflex, payload, code, field):
        response = voltflex.post(f"{API}/drivers/create/", payload, format="json")
        assert error(response) == (400, code, field)
        assert not Driver.objects.exists()

    def test_a_token_of_another_of_our_drivers_is_refused(self, voltflex, evening_session):
        response = voltflex.post(f"{API}/drivers/create/", {"reference": "EMSP-2", "token_uids": ["rfid-9"]},
                                 format="json")
        assert error(response) == (400, "token_in_use", "token_uids")
        assert not Driver.objects.filter(reference="EMSP-2").exists()  # the whole create rolled back

    def test_another_aggregator_may_use_the_same_reference_and_token(self, chargeco, evening_session, world):
        response = chargeco.post(f"{API}/drivers/create/", {"reference": "EMSP-9", "token_uids": ["RFID-9"]},
                                 format="json")
        assert response.status_code == 201
        assert DriverToken.objects.filter(uid="RFID-9").count() == 2

    def test_a_dso_may_not(self, world):
        response = api_client_for(world.gridco_user).post(f"{API}/drivers/create/", {"reference": "X"}, format="json")
        assert response.status_code == 403


class TestPreferences:
    def test_an_opt_out_applies_to_the_open_session_and_reoptimises_its_point(
        self, voltflex, evening_session, world, django_capture_on_commit_callbacks
    ):
        with patch("common.time.now", return_value=local(DAY, 19)), \
                patch("aggregator.tasks.reoptimise_congestion_point_task.delay") as reoptimise, \
                django_capture_on_commit_callbacks(execute=True):
            response = voltflex.post(f"{API}/drivers/{evening_session.driver_id}/preferences/",
                                     {"flex_opt_out": True}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["flex_opt_out"] is True
        evening_session.refresh_from_db()
        assert evening_session.flex_opt_out and not evening_session.is_flexible
        reoptimise.assert_called_once_with(str(world.cp_north.pk), str(world.voltflex.pk), "driver_preferences")

    def test_a_minimum_energy_lands_on_the_open_session(self, voltflex, evening_session):
        with patch("common.time.now", return_value=local(DAY, 19)):
            response = voltflex.post(f"{API}/drivers/{evening_session.driver_id}/preferences/",
                                     {"min_energy_kwh": "12.5", "min_energy_by_time": "06:00"}, format="json")
        assert response.status_code == 200
        evening_session.refresh_from_db()
        assert evening_session.min_energy_kwh == Decimal("12.500")
        assert evening_session.min_energy_by == local(DAY + timedelta(days=1), 6)

    def test_a_change_that_does_not_touch_a_session_reoptimises_nothing(
        self, voltflex, evening_session, django_capture_on_commit_callbacks
    ):
        with patch("common.time.now", return_value=local(DAY, 19)), \
                patch("aggregator.tasks.reoptimise_congestion_point_task.delay") as reoptimise, \
                django_capture_on_commit_callbacks(execute=True):
            response = voltflex.post(f"{API}/drivers/{evening_session.driver_id}/preferences/",
                                     {"v2g_allowed": True, "token_uids": ["APP-9"]}, format="json")
        assert response.status_code == 200
        assert response.json()["token_uids"] == ["APP-9", "RFID-9"]
        reoptimise.assert_not_called()

    def test_v2g_consent_reoptimises_a_v2g_capable_session(
        self, voltflex, evening_session, world, django_capture_on_commit_callbacks
    ):
        ChargingSession.objects.filter(pk=evening_session.pk).update(v2g_capable=True, max_discharge_power_w=7_000)
        with patch("common.time.now", return_value=local(DAY, 19)), \
                patch("aggregator.tasks.reoptimise_congestion_point_task.delay") as reoptimise, \
                django_capture_on_commit_callbacks(execute=True):
            response = voltflex.post(f"{API}/drivers/{evening_session.driver_id}/preferences/",
                                     {"v2g_allowed": True}, format="json")
        assert response.status_code == 200
        reoptimise.assert_called_once_with(str(world.cp_north.pk), str(world.voltflex.pk), "driver_preferences")

    def test_the_usual_departure_replaces_an_estimated_one(self, voltflex, evening_session):
        ChargingSession.objects.filter(pk=evening_session.pk).update(departure_source=ChargingSession.Source.POPULATION)
        with patch("common.time.now", return_value=local(DAY, 19)):
            voltflex.post(f"{API}/drivers/{evening_session.driver_id}/preferences/",
                          {"usual_departure_time": "06:45"}, format="json")
        evening_session.refresh_from_db()
        assert evening_session.expected_departure_at == local(DAY + timedelta(days=1), 6, 45)
        assert evening_session.departure_source == ChargingSession.Source.DRIVER

    def test_clearing_half_of_a_minimum_is_refused(self, voltflex, evening_session):
        driver = evening_session.driver
        driver.min_energy_kwh, driver.min_energy_by_time = Decimal("10"), time(6)
        driver.save()
        response = voltflex.post(f"{API}/drivers/{driver.pk}/preferences/", {"min_energy_by_time": None},
                                 format="json")
        assert error(response) == (400, "invalid_preferences", "min_energy_by_time")

    def test_another_aggregator_gets_404(self, chargeco, evening_session):
        response = chargeco.post(f"{API}/drivers/{evening_session.driver_id}/preferences/", {"flex_opt_out": True},
                                 format="json")
        assert response.status_code == 404
        evening_session.driver.refresh_from_db()
        assert not evening_session.driver.flex_opt_out


class TestBoost:
    def test_boost_takes_the_session_out_of_flexibility_and_reoptimises_its_point(
        self, voltflex, evening_session, world, django_capture_on_commit_callbacks
    ):
        with patch("common.time.now", return_value=local(DAY, 19, 5)), \
                patch("aggregator.tasks.reoptimise_congestion_point_task.delay") as reoptimise, \
                django_capture_on_commit_callbacks(execute=True):
            response = voltflex.post(f"{API}/sessions/{evening_session.pk}/boost/")
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["flexible"] is False
        assert datetime.fromisoformat(body["boosted_at"]) == local(DAY, 19, 5)
        reoptimise.assert_called_once_with(str(world.cp_north.pk), str(world.voltflex.pk), "boost")

    def test_a_retried_boost_replays_and_acts_once(self, voltflex, evening_session):
        with patch("common.time.now", return_value=local(DAY, 19, 5)):
            first = voltflex.post(f"{API}/sessions/{evening_session.pk}/boost/", HTTP_IDEMPOTENCY_KEY="b-1")
            again = voltflex.post(f"{API}/sessions/{evening_session.pk}/boost/", HTTP_IDEMPOTENCY_KEY="b-1")
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert AuditEvent.objects.filter(action="charging_session.boosted").count() == 1

    def test_a_session_that_ended_cannot_be_boosted(self, voltflex, evening_session):
        ChargingSession.objects.filter(pk=evening_session.pk).update(status=ChargingSession.Status.COMPLETED)
        with patch("common.time.now", return_value=local(DAY, 19, 5)):
            response = voltflex.post(f"{API}/sessions/{evening_session.pk}/boost/")
        assert error(response) == (409, "session_not_open", "status")

    def test_another_aggregator_gets_404_and_the_session_stays_flexible(self, chargeco, evening_session):
        response = chargeco.post(f"{API}/sessions/{evening_session.pk}/boost/")
        assert response.status_code == 404
        evening_session.refresh_from_db()
        assert evening_session.boosted_at is None

    def test_an_api_key_without_the_write_scope_may_read_but_not_boost(self, world, evening_session):
        _, raw = api_key_create(participant=world.voltflex, name="reader", scopes=["portfolio:read"])
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"{KEYWORD} {raw}")
        assert client.get(f"{API}/sessions/{evening_session.pk}/").status_code == 200
        assert client.post(f"{API}/sessions/{evening_session.pk}/boost/").status_code == 403


class TestReads:
    def test_the_session_says_which_values_are_estimates_and_shows_its_plan(self, voltflex, evening_session):
        ChargingSession.objects.filter(pk=evening_session.pk).update(energy_source=ChargingSession.Source.HISTORY)
        body = voltflex.get(f"{API}/sessions/{evening_session.pk}/").json()
        assert body["estimated"] == ["energy_requested_kwh"]
        assert body["energy_source"] == "HISTORY"
        assert body["min_power_w"] == 4_140
        assert body["schedule"] is None

    def test_lists_filter_and_stay_inside_the_wall(self, voltflex, chargeco, evening_session, world):
        other = ChargingSessionFactory(
            charge_point=ChargePointFactory(cpo=ChargePointOperatorFactory(aggregator=world.chargeco),
                                            connection=world.chargeco_connections[0]),
            arrival_at=local(DAY, 18), expected_departure_at=local(DAY, 22))
        ours = voltflex.get(f"{API}/sessions/").json()["results"]
        assert [row["id"] for row in ours] == [str(evening_session.pk)]
        active = voltflex.get(f"{API}/sessions/", {"status": "ACTIVE", "driver": str(evening_session.driver_id)})
        assert [row["id"] for row in active.json()["results"]] == [str(evening_session.pk)]
        assert voltflex.get(f"{API}/sessions/", {"status": "PENDING"}).json()["results"] == []
        assert [row["id"] for row in chargeco.get(f"{API}/sessions/").json()["results"]] == [str(other.pk)]
        by_token = voltflex.get(f"{API}/drivers/", {"token_uid": "rfid-9"}).json()["results"]
        assert [row["reference"] for row in by_token] == ["EMSP-9"]
        assert chargeco.get(f"{API}/drivers/", {"token_uid": "rfid-9"}).json()["results"] == []

    def test_a_naive_time_filter_is_refused(self, voltflex):
        response = voltflex.get(f"{API}/sessions/", {"arrival_after": "2027-01-12T18:00:00"})
        assert response.status_code == 400


class TestTargets:
    def test_the_driver_sets_departure_and_target_soc_and_the_point_is_reoptimised(
        self, voltflex, evening_session, world, django_capture_on_commit_callbacks
    ):
        ChargingSession.objects.filter(pk=evening_session.pk).update(
            departure_source=ChargingSession.Source.POPULATION, energy_source=ChargingSession.Source.HISTORY)
        with patch("common.time.now", return_value=local(DAY, 19)), \
                patch("aggregator.tasks.reoptimise_congestion_point_task.delay") as reoptimise, \
                django_capture_on_commit_callbacks(execute=True):
            response = voltflex.post(f"{API}/sessions/{evening_session.pk}/targets/", {
                "expected_departure_at": "2027-01-13T07:15:00+01:00", "target_soc_pct": "80",
                "arrival_soc_pct": "30", "battery_capacity_kwh": "60"}, format="json")
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["energy_requested_kwh"] == "30.000"  # 60 kWh x (80 - 30) %
        assert body["estimated"] == []
        assert (body["departure_source"], body["energy_source"]) == ("DRIVER", "DRIVER")
        assert datetime.fromisoformat(body["expected_departure_at"]) == local(DAY + timedelta(days=1), 7, 15)
        reoptimise.assert_called_once_with(str(world.cp_north.pk), str(world.voltflex.pk), "driver_targets")

    @pytest.mark.parametrize(("payload", "code", "field"), [
        ({}, "invalid", "expected_departure_at"),
        ({"expected_departure_at": "2027-01-12T18:30:00+01:00"}, "departure_in_past", "expected_departure_at"),
        ({"expected_departure_at": "2027-01-13T07:00:00"}, "naive", "expected_departure_at"),
        ({"target_soc_pct": "80"}, "soc_incomplete", "target_soc_pct"),
        ({"target_soc_pct": "80", "energy_requested_kwh": "10", "arrival_soc_pct": "20",
          "battery_capacity_kwh": "50"}, "energy_twice", "target_soc_pct"),
        ({"target_soc_pct": "101"}, "max_value", "target_soc_pct"),
    ])
    def test_bad_targets_get_a_clear_code(self, voltflex, evening_session, payload, code, field):
        with patch("common.time.now", return_value=local(DAY, 19)):
            response = voltflex.post(f"{API}/sessions/{evening_session.pk}/targets/", payload, format="json")
        assert error(response) == (400, code, field)
        evening_session.refresh_from_db()
        assert evening_session.energy_requested_kwh == Decimal("20.000")

    def test_a_smaller_energy_caps_the_drivers_minimum(self, voltflex, evening_session):
        driver = evening_session.driver
        driver.min_energy_kwh, driver.min_energy_by_time = Decimal("15"), time(6)
        driver.save()
        with patch("common.time.now", return_value=local(DAY, 19)):
            response = voltflex.post(f"{API}/sessions/{evening_session.pk}/targets/", {"energy_requested_kwh": "8"},
                                     format="json")
        assert response.status_code == 200
        assert response.json()["min_energy_kwh"] == "8.000"

    def test_another_aggregator_gets_404(self, chargeco, evening_session):
        response = chargeco.post(f"{API}/sessions/{evening_session.pk}/targets/", {"energy_requested_kwh": "5"},
                                 format="json")
        assert response.status_code == 404
