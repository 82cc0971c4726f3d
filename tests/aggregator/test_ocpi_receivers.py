"""Our OCPI 2.2.1 receiver side: the credentials handshake with the CPO registering at us (token A -> B -> C, rotation,
unregister, 3001/3002/3003), Sessions and Locations pushed to us (the official example JSON files from
../shared/specs/ocpi), pagination as server (sandbox CPO sessions) and as client (resync following Link), routing
and id headers, and credentials encrypted at rest."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from aggregator import services
from aggregator.adapters.ocpi import next_page_url, token_header
from aggregator.models import ChargePoint, ChargePointOperator, ChargingSession, OcpiEvse, OcpiLocation, OcpiSession
from aggregator.ocpi import receivers, registration
from aggregator.ocpi.receivers import connector_power_w
from sandbox.models import SandboxCpoClient
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory
from tests.support.stub_server import StubServer

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "specs" / "ocpi" / "examples-2.2.1-d2"
needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"official OCPI examples not found at {EXAMPLES}")
Registration = ChargePointOperator.Registration


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": token_header(token), **headers}


def envelope(data: object) -> dict:
    return {"data": data, "status_code": 1000, "timestamp": "2026-03-01T16:00:00Z"}


# --- the CPO registers at us ------------------------------------------------------------------------------------


@pytest.fixture
def cpo_platform():
    """The CPO's versions and version details, served by a real local HTTP server."""
    with StubServer() as server:
        server.respond("/cpo/versions", json=envelope([{"version": "2.2.1", "url": server.url("/cpo/2.2.1")}]))
        server.respond("/cpo/2.2.1", json=envelope({"version": "2.2.1", "endpoints": [
            {"identifier": "credentials", "role": "RECEIVER", "url": server.url("/cpo/2.2.1/credentials")},
            {"identifier": "sessions", "role": "SENDER", "url": server.url("/cpo/2.2.1/sessions")},
            {"identifier": "chargingprofiles", "role": "RECEIVER", "url": server.url("/cpo/2.2.1/chargingprofiles")},
        ]}))
        yield server


@pytest.fixture
def pending_cpo(world, settings) -> tuple[ChargePointOperator, str]:
    settings.PUBLIC_BASE_URL = "https://agg.example"
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex, country_code="NL", party_id="CPX", token_for_cpo="",
                                     token_from_cpo="", chargingprofiles_url="",
                                     registration=Registration.UNREGISTERED)
    return cpo, registration.token_a_issue(cpo=cpo)


def credentials_body(server: StubServer, token_b: str = "token-b-from-cpo") -> dict:  # noqa: S107
    return {"token": token_b, "url": server.url("/cpo/versions"),
            "roles": [{"role": "CPO", "party_id": "CPX", "country_code": "NL",
                       "business_details": {"name": "CPX Charging"}}]}


def post_credentials(client, token: str, body: object, method: str = "post"):
    return getattr(client, method)(reverse("ocpi:credentials"), data=json.dumps(body),
                                   content_type="application/json", headers=auth(token))


@pytest.mark.django_db
class TestCredentialsAsReceiver:
    def test_token_a_opens_versions_and_credentials_only(self, client, pending_cpo):
        _, token_a = pending_cpo
        assert client.get(reverse("ocpi:versions"), headers=auth(token_a)).status_code == 200
        assert client.get(reverse("ocpi:version-details"), headers=auth(token_a)).status_code == 200
        session_url = reverse("ocpi:session", kwargs={"country_code": "NL", "party_id": "CPX", "session_id": "1"})
        assert client.get(session_url, headers=auth(token_a)).status_code == 401

    def test_the_handshake_reads_the_cpo_with_token_b_and_answers_token_c(self, client, pending_cpo, cpo_platform):
        cpo, token_a = pending_cpo
        response = post_credentials(client, token_a, credentials_body(cpo_platform))
        assert response.status_code == 200
        payload = response.json()
        assert payload["status_code"] == 1000
        token_c = payload["data"]["token"]
        assert payload["data"]["url"] == "https://agg.example/ocpi/versions"
        assert payload["data"]["roles"][0] | {"business_details": None} == {
            "role": "SCSP", "party_id": "FLX", "country_code": "NL", "business_details": None}
        # We read the CPO's versions and details with its token B, Base64-encoded.
        expected = "Token " + base64.b64encode(b"token-b-from-cpo").decode()
        assert [r.headers["authorization"] for r in cpo_platform.requests] == [expected, expected]
        cpo.refresh_from_db()
        assert (cpo.registration, cpo.token_for_cpo, cpo.token_from_cpo) == (
            Registration.REGISTERED, "token-b-from-cpo", token_c)
        assert cpo.chargingprofiles_url == cpo_platform.url("/cpo/2.2.1/chargingprofiles")
        # Token A is dead; token C works.
        assert client.get(reverse("ocpi:versions"), headers=auth(token_a)).status_code == 401
        assert client.get(reverse("ocpi:versions"), headers=auth(token_c)).status_code == 200
        assert client.get(reverse("ocpi:credentials"), headers=auth(token_c)).json()["data"]["token"] == token_c

    def test_post_when_registered_is_405_put_rotates_delete_unregisters(self, client, pending_cpo, cpo_platform):
        _, token_a = pending_cpo
        token_c = post_credentials(client, token_a, credentials_body(cpo_platform)).json()["data"]["token"]
        assert post_credentials(client, token_c, credentials_body(cpo_platform)).status_code == 405
        rotated = post_credentials(client, token_c, credentials_body(cpo_platform, "token-b2"), method="put")
        assert rotated.status_code == 200
        new_c = rotated.json()["data"]["token"]
        assert new_c != token_c
        assert client.get(reverse("ocpi:versions"), headers=auth(token_c)).status_code == 401
        deleted = client.delete(reverse("ocpi:credentials"), headers=auth(new_c))
        assert (deleted.status_code, deleted.json()["status_code"]) == (200, 1000)
        assert client.get(reverse("ocpi:versions"), headers=auth(new_c)).status_code == 401

    def test_unreachable_versions_answer_3001(self, client, pending_cpo):
        _, token_a = pending_cpo
        body = {"token": "b", "url": "http://127.0.0.1:9/versions",
                "roles": [{"role": "CPO", "party_id": "CPX", "country_code": "NL"}]}
        assert post_credentials(client, token_a, body).json()["status_code"] == 3001

    def test_no_2_2_1_answers_3002_and_no_credentials_endpoint_3003(self, client, pending_cpo, cpo_platform):
        _, token_a = pending_cpo
        cpo_platform.respond("/cpo/versions", json=envelope([{"version": "2.1.1", "url": cpo_platform.url("/x")}]))
        assert post_credentials(client, token_a, credentials_body(cpo_platform)).json()["status_code"] == 3002
        cpo_platform.respond("/cpo/versions", json=envelope([{"version": "2.2.1", "url": cpo_platform.url("/d")}]))
        cpo_platform.respond("/d", json=envelope({"version": "2.2.1", "endpoints": [
            {"identifier": "sessions", "role": "SENDER", "url": cpo_platform.url("/s")}]}))
        assert post_credentials(client, token_a, credentials_body(cpo_platform)).json()["status_code"] == 3003

    def test_a_malformed_credentials_object_is_2001(self, client, pending_cpo):
        _, token_a = pending_cpo
        response = post_credentials(client, token_a, {"token": "has space", "url": "x", "roles": []})
        assert (response.status_code, response.json()["status_code"]) == (200, 2001)

    def test_after_a_401_with_base64_the_raw_token_is_tried(self, client, pending_cpo, cpo_platform):
        _, token_a = pending_cpo
        cpo_platform.respond("/cpo/versions", status=401, json={"status_code": 2000, "timestamp": "x"})
        response = post_credentials(client, token_a, credentials_body(cpo_platform))
        assert response.json()["status_code"] == 3001  # 401 both ways
        tried = [r.headers["authorization"] for r in cpo_platform.requests_to("/cpo/versions")]
        assert tried == ["Token " + base64.b64encode(b"token-b-from-cpo").decode(), "Token token-b-from-cpo"]


@pytest.mark.django_db
def test_tokens_are_encrypted_at_rest_and_found_by_digest(world):
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex, token_for_cpo="secret-we-send",
                                     token_from_cpo="secret-they-send")
    with connection.cursor() as cursor:
        cursor.execute("SELECT token_for_cpo, token_from_cpo FROM aggregator_chargepointoperator WHERE id = %s",
                       [cpo.pk.hex if connection.vendor == "sqlite" else cpo.pk])
        stored = cursor.fetchone()
    assert all(value.startswith("fernet:") for value in stored)
    assert "secret" not in "".join(stored)
    reloaded = ChargePointOperator.objects.get(pk=cpo.pk)
    assert (reloaded.token_for_cpo, reloaded.token_from_cpo) == ("secret-we-send", "secret-they-send")


# --- sessions receiver ------------------------------------------------------------------------------------------


@pytest.fixture
def stk(world, settings) -> ChargePointOperator:
    """The CPO of the official examples (NL*STK), registered; EVSE 3256 is in our portfolio."""
    settings.OCPI_COUNTRY_CODE, settings.OCPI_PARTY_ID = "NL", "FLX"
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex, country_code="NL", party_id="STK",
                                     token_from_cpo="stk-calls-us")
    ChargePointFactory(cpo=cpo, connection=world.voltflex_connections[0], evse_uid="3256", max_power_w=11_000)
    return cpo


@pytest.fixture
def changed(monkeypatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(services, "charging_session_changed",
                        lambda *, session, reason: calls.append((session.cpo_session_id, reason)))
    return calls


def session_url(session_id: str = "101", party: str = "STK") -> str:
    return reverse("ocpi:session", kwargs={"country_code": "NL", "party_id": party, "session_id": session_id})


def push(client, method: str, url: str, body: object, **headers: str):
    return getattr(client, method)(url, data=json.dumps(body), content_type="application/json",
                                   headers=auth("stk-calls-us", **headers))


@needs_examples
@pytest.mark.django_db
class TestSessionsReceiver:
    def test_the_official_start_example_is_stored_and_joins_the_portfolio(self, client, stk, changed):
        response = push(client, "put", session_url(), example("session_example_1_simple_start.json"),
                        **{"X-Request-ID": "r1", "X-Correlation-ID": "c1", "OCPI-from-country-code": "NL",
                           "OCPI-from-party-id": "STK", "OCPI-to-country-code": "NL", "OCPI-to-party-id": "FLX"})
        assert response.status_code == 201
        payload = response.json()
        assert payload["status_code"] == 1000 and "data" not in payload
        assert (response["X-Request-ID"], response["X-Correlation-ID"]) == ("r1", "c1")
        assert (response["OCPI-to-party-id"], response["OCPI-from-party-id"]) == ("STK", "FLX")
        stored = OcpiSession.objects.get(cpo=stk, session_id="101")
        assert (stored.status, stored.evse_uid) == ("PENDING", "3256")
        session = ChargingSession.objects.get(cpo_session_id="101")
        assert session.status == ChargingSession.Status.PENDING
        assert changed == []  # not plugged in yet
        assert push(client, "put", session_url(), example("session_example_1_simple_start.json")).status_code == 200
        assert client.get(session_url(), headers=auth("stk-calls-us")).json()["data"]["id"] == "101"

    def test_turning_active_and_ending_early_trigger_reoptimisation(self, client, stk, changed):
        start = example("session_example_1_simple_start.json")
        push(client, "put", session_url(), start)
        push(client, "patch", session_url(), {"status": "ACTIVE", "last_updated": "2020-03-09T10:20:00Z"})
        session = ChargingSession.objects.get(cpo_session_id="101")
        assert session.status == ChargingSession.Status.ACTIVE
        push(client, "patch", session_url(), {"status": "COMPLETED", "kwh": 4.2, "end_date_time": "2020-03-09T10:40:00Z",
                                              "last_updated": "2020-03-09T10:40:00Z"})
        session.refresh_from_db()
        assert (session.status, session.energy_delivered_kwh) == (ChargingSession.Status.COMPLETED, Decimal("4.200"))
        assert changed == [("101", "session_started"), ("101", "session_ended_early")]

    def test_a_patch_appends_charging_periods_and_needs_last_updated(self, client, stk, changed):
        start = example("session_example_1_simple_start.json")
        start["last_updated"] = "2019-06-23T08:00:00Z"
        push(client, "put", session_url(), start)
        patch = example("session_patch_example_charging_period.json")
        assert push(client, "patch", session_url(), patch).json()["status_code"] == 1000
        assert push(client, "patch", session_url(), patch | {"last_updated": "2019-06-23T09:00:00Z"}).json()[
            "status_code"] == 1000
        stored = OcpiSession.objects.get(session_id="101")
        assert len(stored.data["charging_periods"]) == 2
        assert float(stored.kwh) == 15.0
        missing = {key: value for key, value in patch.items() if key != "last_updated"}
        assert push(client, "patch", session_url(), missing).json()["status_code"] == 2001

    def test_out_of_order_updates_are_dropped(self, client, stk, changed):
        start = example("session_example_1_simple_start.json")
        push(client, "put", session_url(), start | {"status": "ACTIVE", "last_updated": "2020-03-09T11:00:00Z"})
        push(client, "put", session_url(), start)  # older: dropped
        assert OcpiSession.objects.get(session_id="101").status == "ACTIVE"

    def test_mismatched_ids_and_foreign_parties_are_refused(self, client, stk, changed):
        start = example("session_example_1_simple_start.json")
        response = push(client, "put", session_url("999"), start)
        assert (response.status_code, response.json()["status_code"]) == (200, 2001)
        assert push(client, "put", session_url(party="XXX"), start).status_code == 404
        assert push(client, "patch", session_url("nope"), {"last_updated": "2020-03-09T10:17:09Z"}).status_code == 404
        bad_json = client.put(session_url(), data="{not json", content_type="application/json",
                              headers=auth("stk-calls-us"))
        assert (bad_json.status_code, bad_json.json()["status_code"]) == (400, 2001)
        assert client.put(session_url(), data="{}", content_type="application/json").status_code == 401

    def test_the_second_official_example_completed_session(self, client, stk, changed):
        body = example("session_example_2_short_finished.json")
        url = session_url(body["id"], party=body["party_id"])
        if (body["country_code"], body["party_id"]) != ("NL", "STK"):
            stk.ocpi_roles = [{"role": "CPO", "country_code": body["country_code"], "party_id": body["party_id"]}]
            stk.save()
            url = reverse("ocpi:session", kwargs={"country_code": body["country_code"], "party_id": body["party_id"],
                                                  "session_id": body["id"]})
        assert push(client, "put", url, body).json()["status_code"] == 1000
        assert OcpiSession.objects.get(session_id=body["id"]).status == "COMPLETED"


# --- locations receiver -----------------------------------------------------------------------------------------


@needs_examples
@pytest.mark.django_db
class TestLocationsReceiver:
    @pytest.fixture
    def bec(self, world) -> ChargePointOperator:
        return ChargePointOperatorFactory(aggregator=world.voltflex, country_code="BE", party_id="BEC",
                                          token_from_cpo="bec-calls-us")

    def url(self, *parts: str) -> str:
        names = {1: "ocpi:location", 2: "ocpi:location-evse", 3: "ocpi:location-connector"}
        keys = ["location_id", "evse_uid", "connector_id"][:len(parts)]
        return reverse(names[len(parts)], kwargs={"country_code": "BE", "party_id": "BEC", **dict(zip(keys, parts,
                                                                                                         strict=True))})

    def send(self, client, method: str, url: str, body: object):
        return getattr(client, method)(url, data=json.dumps(body), content_type="application/json",
                                       headers=auth("bec-calls-us"))

    def test_the_official_location_gives_evses_with_power_then_charge_points_once_linked(self, client, bec, world):
        body = example("location_example.json")
        assert self.send(client, "put", self.url("LOC1"), body).status_code == 201
        evses = {evse.evse_uid: evse for evse in OcpiEvse.objects.filter(cpo=bec)}
        assert set(evses) == {"3256", "3257"}
        assert (evses["3256"].max_power_w, evses["3256"].phases) == (220 * 16 * 3, 3)  # AC_3_PHASE, V line-neutral
        assert not ChargePoint.objects.filter(cpo=bec).exists()  # not linked to a grid connection yet
        OcpiLocation.objects.filter(cpo=bec).update(connection=world.voltflex_connections[1])
        assert self.send(client, "put", self.url("LOC1"), body).status_code == 200
        points = {point.evse_uid: point for point in ChargePoint.objects.filter(cpo=bec)}
        assert set(points) == {"3256", "3257"}
        assert points["3256"].max_power_w == 10_560
        assert client.get(self.url("LOC1", "3256", "2"), headers=auth("bec-calls-us")).json()["data"]["id"] == "2"

    def test_evse_and_connector_patches(self, client, bec):
        self.send(client, "put", self.url("LOC1"), example("location_example.json"))
        status = example("location_patch_example_status.json")
        assert self.send(client, "patch", self.url("LOC1", "3256"), status).json()["status_code"] == 1000
        assert OcpiEvse.objects.get(evse_uid="3256").status == status.get("status", "AVAILABLE")
        self.send(client, "patch", self.url("LOC1", "3256", "1"),
                  {"max_amperage": 32, "last_updated": "2026-01-01T00:00:00Z"})
        assert OcpiEvse.objects.get(evse_uid="3256").max_power_w == 220 * 32 * 3
        location = OcpiLocation.objects.get(location_id="LOC1")
        assert location.last_updated == datetime(2026, 1, 1, tzinfo=UTC)  # the parent's last_updated moves too

    def test_unknown_location_patch_is_404_with_2003(self, client, bec):
        response = self.send(client, "patch", self.url("NOPE"), {"last_updated": "2026-01-01T00:00:00Z"})
        assert (response.status_code, response.json()["status_code"]) == (404, 2003)

    @pytest.mark.parametrize(("connector", "expected"), [
        ({"power_type": "AC_1_PHASE", "max_voltage": 230, "max_amperage": 32}, (7360, 1)),
        ({"power_type": "AC_2_PHASE_SPLIT", "max_voltage": 230, "max_amperage": 16}, (7360, 2)),
        ({"power_type": "DC", "max_voltage": 500, "max_amperage": 100}, (50_000, 3)),
        ({"power_type": "AC_3_PHASE", "max_voltage": 230, "max_amperage": 16, "max_electric_power": 10000},
         (10_000, 3)),
    ])
    def test_connector_power(self, connector, expected):
        assert connector_power_w(connector) == expected


# --- pagination -------------------------------------------------------------------------------------------------


def test_next_page_url_reads_the_link_header():
    assert next_page_url('<https://cpo.example/s?offset=2&limit=2>; rel="next"') == "https://cpo.example/s?offset=2&limit=2"
    assert next_page_url(None) is None
    assert next_page_url('<https://cpo.example/x>; rel="prev"') is None


@pytest.mark.django_db(transaction=True)
def test_pagination_server_and_client_resync_after_an_outage(world, live_server, settings, monkeypatch):
    """The sandbox CPO serves its sessions in pages of 2 (Link, X-Total-Count, X-Limit); our resync follows Link."""
    import httpx

    from sandbox import cpo as sandbox_cpo

    monkeypatch.setattr(sandbox_cpo, "SESSIONS_PAGE_LIMIT", 2)
    monkeypatch.setattr(services, "charging_session_changed", lambda **kwargs: None)
    ours = ChargePointOperatorFactory(aggregator=world.voltflex, country_code="NL", party_id="SBX")
    SandboxCpoClient.objects.create(name="v", token_from_client=ours.token_for_cpo, token_for_client=ours.token_from_cpo)
    arrival = datetime(2026, 3, 1, 17, tzinfo=UTC)
    for index in range(5):
        point = ChargePointFactory(cpo=ours, connection=world.voltflex_connections[index % 3])
        ChargingSessionFactory(charge_point=point, arrival_at=arrival, expected_departure_at=arrival + timedelta(hours=9),
                               status=ChargingSession.Status.ACTIVE)
    sessions_url = f"{live_server.url}/sandbox/cpo/ocpi/2.2.1/sessions"
    first = httpx.get(sessions_url, params={"limit": 10}, headers={"Authorization": token_header(ours.token_for_cpo)})
    assert (first.headers["X-Total-Count"], first.headers["X-Limit"]) == ("5", "2")
    assert len(first.json()["data"]) == 2
    assert next_page_url(first.headers["Link"]).endswith("offset=2&limit=2")
    last = httpx.get(sessions_url, params={"offset": 4}, headers={"Authorization": token_header(ours.token_for_cpo)})
    assert "Link" not in last.headers and len(last.json()["data"]) == 1

    # Our copy of those sessions is gone (an outage): resync pulls every page again.
    ours.ocpi_endpoints = [{"identifier": "sessions", "role": "SENDER", "url": sessions_url}]
    ours.save()
    assert receivers.sessions_resync(cpo=ours, date_from=arrival - timedelta(days=1)) == 5
    assert OcpiSession.objects.filter(cpo=ours).count() == 5
    ours.refresh_from_db()
    assert ours.sessions_synced_until is not None
    fresh = copy.deepcopy(ours.sessions_synced_until)
    assert receivers.sessions_resync(cpo=ours) >= 1  # from the newest last_updated seen (inclusive)
    assert ours.sessions_synced_until == fresh


@pytest.mark.django_db
def test_we_rotate_our_credentials_at_the_cpo(world, cpo_platform, settings):
    settings.PUBLIC_BASE_URL = "https://agg.example"
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex, country_code="NL", party_id="CPX",
                                     token_for_cpo="old-token-c", token_from_cpo="old-token-b",
                                     versions_url=cpo_platform.url("/cpo/versions"))
    cpo_platform.respond("/cpo/2.2.1/credentials", method="PUT", json=envelope(
        {"token": "new-token-c", "url": cpo_platform.url("/cpo/versions"),
         "roles": [{"role": "CPO", "party_id": "CPX", "country_code": "NL"}]}))
    rotated = registration.rotate_at_cpo(cpo=cpo)
    assert rotated.token_for_cpo == "new-token-c"
    assert rotated.token_from_cpo not in ("", "old-token-b")
    [put] = cpo_platform.requests_to("/cpo/2.2.1/credentials")
    assert put.method == "PUT"
    assert put.headers["authorization"] == token_header("old-token-c")
    assert put.json()["token"] == rotated.token_from_cpo
    assert put.json()["url"] == "https://agg.example/ocpi/versions"


@pytest.mark.django_db
def test_a_refused_rotation_keeps_the_old_tokens_working(world, cpo_platform, settings):
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex, token_for_cpo="old-token-c",
                                     token_from_cpo="old-token-b", versions_url=cpo_platform.url("/cpo/versions"))
    cpo_platform.respond("/cpo/2.2.1/credentials", method="PUT", status=500, body="down")
    with pytest.raises(Exception, match="PUT credentials"):
        registration.rotate_at_cpo(cpo=cpo)
    cpo.refresh_from_db()
    assert (cpo.token_for_cpo, cpo.token_from_cpo) == ("old-token-c", "old-token-b")
