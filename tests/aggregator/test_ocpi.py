"""OCPI 2.2.1 transport rules and the chargingprofiles sender (aggregator.adapters.ocpi), the latter against a real
local HTTP server standing in for the CPO."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from aggregator.adapters.base import ProfileSendResult
from aggregator.adapters.ocpi import (
    OcpiChargingProfiles,
    charging_profile_periods,
    ocpi_datetime,
    parse_ocpi_datetime,
    set_charging_profile_body,
    token_candidates,
    token_header,
)
from common.exceptions import AdapterError
from tests.factories import ChargePointOperatorFactory
from tests.support.stub_server import StubServer

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
PROFILES_PATH = "/ocpi/2.2.1/chargingprofiles"


# --- Authorization header ---------------------------------------------------------------------------


class TestTokenHeader:
    def test_it_base64_encodes_the_token_without_a_trailing_newline(self):
        # The spec's own example, ZXhhbXBsZS10b2tlbgo=, encodes "example-token\n" (OCPI-BRIEF 2.1).
        assert token_header("example-token") == "Token ZXhhbXBsZS10b2tlbg=="

    def test_it_sends_the_raw_token_to_peers_configured_without_base64(self):
        assert token_header("example-token", base64_encoded=False) == "Token example-token"


class TestTokenCandidates:
    def test_it_offers_the_decoded_token_first_then_the_raw_value(self):
        assert token_candidates("Token ZXhhbXBsZS10b2tlbg==") == ["example-token", "ZXhhbXBsZS10b2tlbg=="]

    def test_it_tolerates_the_trailing_newline_of_the_spec_example(self):
        assert token_candidates("Token ZXhhbXBsZS10b2tlbgo=")[0] == "example-token"

    def test_it_falls_back_to_the_raw_value_when_it_is_not_base64(self):
        assert token_candidates("Token example-token") == ["example-token"]

    def test_it_round_trips_what_token_header_sends(self):
        assert "s3cr3t-tøken" in token_candidates(token_header("s3cr3t-tøken"))
        assert "s3cr3t-token" in token_candidates(token_header("s3cr3t-token", base64_encoded=False))

    @pytest.mark.parametrize("value", [None, "", "Bearer ZXhhbXBsZS10b2tlbg==", "ZXhhbXBsZS10b2tlbg==", "Token"])
    def test_it_returns_nothing_without_the_token_prefix(self, value):
        assert token_candidates(value) == []


# --- DateTime ---------------------------------------------------------------------------------------


class TestOcpiDatetime:
    def test_it_writes_utc_with_second_precision_and_a_z(self):
        local = datetime(2026, 3, 1, 18, 0, 5, 123456, tzinfo=AMSTERDAM)  # CET, UTC+1
        assert ocpi_datetime(local) == "2026-03-01T17:00:05Z"

    def test_it_converts_summer_time_too(self):
        assert ocpi_datetime(datetime(2026, 7, 1, 0, 30, tzinfo=AMSTERDAM)) == "2026-06-30T22:30:00Z"

    def test_the_format_has_no_offset_and_no_fraction(self):
        text = ocpi_datetime(datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC))
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", text)


class TestParseOcpiDatetime:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-03-01T17:00:00Z", datetime(2026, 3, 1, 17, 0, tzinfo=UTC)),
            ("2026-03-01T17:00:00", datetime(2026, 3, 1, 17, 0, tzinfo=UTC)),
            ("2026-03-01T17:00:00.123Z", datetime(2026, 3, 1, 17, 0, 0, 123000, tzinfo=UTC)),
            ("2026-03-01T17:00:00.5", datetime(2026, 3, 1, 17, 0, 0, 500000, tzinfo=UTC)),
        ],
    )
    def test_it_reads_utc_with_or_without_z_and_fractions(self, text, expected):
        parsed = parse_ocpi_datetime(text)
        assert parsed == expected
        assert parsed.utcoffset() == timedelta(0)

    @pytest.mark.parametrize("text", ["2026-03-01T18:00:00+01:00", "2026-03-01T12:00:00-05:00",
                                      "2026-03-01T17:00:00+00:00"])
    def test_it_rejects_offsets(self, text):
        with pytest.raises(ValueError, match="UTC"):
            parse_ocpi_datetime(text)

    def test_it_round_trips_ocpi_datetime(self):
        instant = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)
        assert parse_ocpi_datetime(ocpi_datetime(instant)) == instant


# --- ChargingProfile objects ------------------------------------------------------------------------


class TestChargingProfilePeriods:
    def test_it_merges_equal_consecutive_limits_in_900_second_steps(self):
        periods = charging_profile_periods([11000, 11000, 0, 0, 0, 3700, 11000, 11000])
        assert periods == [
            {"start_period": 0, "limit": 11000.0},
            {"start_period": 1800, "limit": 0.0},
            {"start_period": 4500, "limit": 3700.0},
            {"start_period": 5400, "limit": 11000.0},
        ]

    def test_a_constant_profile_is_one_period(self):
        assert charging_profile_periods([7400] * 12) == [{"start_period": 0, "limit": 7400.0}]

    def test_no_limits_give_no_periods(self):
        assert charging_profile_periods([]) == []


class TestSetChargingProfileBody:
    def test_it_builds_a_set_charging_profile_in_watts(self):
        start = datetime(2026, 3, 1, 18, 0, tzinfo=AMSTERDAM)
        body = set_charging_profile_body(start=start, limits_w=[0, 0, 5000, 5000, 11000],
                                         response_url="https://agg.example/ocpi/2.2.1/chargingprofiles/results/x")
        assert body == {
            "charging_profile": {
                "start_date_time": "2026-03-01T17:00:00Z",
                "duration": 5 * 900,
                "charging_rate_unit": "W",
                "charging_profile_period": [
                    {"start_period": 0, "limit": 0.0},
                    {"start_period": 1800, "limit": 5000.0},
                    {"start_period": 3600, "limit": 11000.0},
                ],
            },
            "response_url": "https://agg.example/ocpi/2.2.1/chargingprofiles/results/x",
        }

    def test_it_never_sends_number_phases(self):
        body = set_charging_profile_body(start=datetime(2026, 3, 1, tzinfo=UTC), limits_w=[1000], response_url="u")
        assert "number_phases" not in str(body)


# --- our discovery endpoints -----------------------------------------------------------------------


@pytest.mark.django_db
class TestOcpiDiscoveryEndpoints:
    @pytest.fixture
    def peer(self, world):
        return ChargePointOperatorFactory(aggregator=world.voltflex, token_from_cpo="cpo-calls-us")

    def test_versions_needs_a_known_token(self, client, peer):
        response = client.get(reverse("ocpi:versions"))
        assert response.status_code == 401
        assert response.json()["status_code"] == 2000
        response = client.get(reverse("ocpi:versions"), headers={"Authorization": token_header("guess")})
        assert response.status_code == 401

    def test_versions_lists_2_2_1_at_our_public_address(self, client, peer, settings):
        settings.PUBLIC_BASE_URL = "https://agg.example"
        response = client.get(reverse("ocpi:versions"), headers={"Authorization": token_header("cpo-calls-us")})
        assert response.status_code == 200
        assert response.json()["data"] == [{"version": "2.2.1", "url": "https://agg.example/ocpi/2.2.1"}]

    def test_version_details_publish_the_chargingprofiles_sender_with_a_trailing_slash(self, client, peer, settings):
        settings.PUBLIC_BASE_URL = "https://agg.example"
        response = client.get(reverse("ocpi:version-details"),
                              headers={"Authorization": token_header("cpo-calls-us", base64_encoded=False),
                                       "X-Request-ID": "r-1", "X-Correlation-ID": "c-1"})
        assert response.status_code == 200
        payload = response.json()
        assert payload["status_code"] == 1000
        assert payload["data"]["endpoints"] == [
            {"identifier": "credentials", "role": "SENDER", "url": "https://agg.example/ocpi/2.2.1/credentials"},
            {"identifier": "sessions", "role": "RECEIVER", "url": "https://agg.example/ocpi/2.2.1/sessions/"},
            {"identifier": "locations", "role": "RECEIVER", "url": "https://agg.example/ocpi/2.2.1/locations/"},
            {"identifier": "chargingprofiles", "role": "SENDER",
             "url": "https://agg.example/ocpi/2.2.1/chargingprofiles/"}]
        assert (response["X-Request-ID"], response["X-Correlation-ID"]) == ("r-1", "c-1")


# --- OcpiChargingProfiles over HTTP -----------------------------------------------------------------


SESSION_ID = "SES-0001"
BODY = set_charging_profile_body(start=datetime(2026, 3, 1, 17, 0, tzinfo=UTC), limits_w=[3700, 3700, 11000],
                                 response_url="https://agg.example/ocpi/2.2.1/chargingprofiles/results/abc")


def ocpi_ok(data: object, status_code: int = 1000) -> dict[str, object]:
    return {"data": data, "status_code": status_code, "timestamp": "2026-03-01T16:00:00Z"}


@pytest.fixture
def server() -> Iterator[StubServer]:
    """A stand-in CPO: a real HTTP server on 127.0.0.1 with canned answers."""
    with StubServer() as running:
        yield running


@pytest.fixture
def cpo(server: StubServer):
    """A CPO (not saved: the adapter only reads its fields) whose chargingprofiles receiver is the stub server."""
    return ChargePointOperatorFactory.build(
        country_code="NL", party_id="CPX", chargingprofiles_url=server.url(PROFILES_PATH) + "/",
        token_for_cpo="token-we-send", auth_base64=True,
    )


def send(cpo, *, correlation_id: str = "corr-1") -> ProfileSendResult:
    return OcpiChargingProfiles().set_charging_profile(cpo=cpo, session_id=SESSION_ID, body=BODY,
                                                       correlation_id=correlation_id)


class TestSetChargingProfile:
    path = f"{PROFILES_PATH}/{SESSION_ID}"

    def test_an_accepted_response_returns_result_and_timeout(self, server, cpo):
        server.respond(self.path, json=ocpi_ok({"result": "ACCEPTED", "timeout": 30}))
        answer = send(cpo)
        assert answer.result == "ACCEPTED"
        assert answer.timeout_s == 30

    @pytest.mark.parametrize("result", ["REJECTED", "NOT_SUPPORTED", "TOO_OFTEN", "UNKNOWN_SESSION"])
    def test_every_charging_profile_response_type_is_passed_on(self, server, cpo, result):
        server.respond(self.path, json=ocpi_ok({"result": result, "timeout": 10}))
        assert send(cpo).result == result

    def test_it_puts_the_body_to_the_session_url_with_ocpi_headers(self, server, cpo, settings):
        settings.OCPI_COUNTRY_CODE = "NL"
        settings.OCPI_PARTY_ID = "FLX"
        server.respond(self.path, json=ocpi_ok({"result": "ACCEPTED", "timeout": 30}))
        send(cpo, correlation_id="8d3c6a7e-corr")
        [request] = server.requests
        assert request.method == "PUT"
        assert request.path == f"{PROFILES_PATH}/{SESSION_ID}"  # the trailing / of the base URL is not doubled
        assert request.json() == BODY
        headers = request.headers
        assert headers["authorization"] == "Token dG9rZW4td2Utc2VuZA=="  # base64("token-we-send")
        assert uuid.UUID(headers["x-request-id"])
        assert headers["x-correlation-id"] == "8d3c6a7e-corr"
        assert headers["ocpi-from-country-code"] == "NL"
        assert headers["ocpi-from-party-id"] == "FLX"
        assert headers["ocpi-to-country-code"] == "NL"
        assert headers["ocpi-to-party-id"] == "CPX"
        assert headers["content-type"].startswith("application/json")

    def test_each_request_gets_its_own_request_id(self, server, cpo):
        server.respond(self.path, json=ocpi_ok({"result": "ACCEPTED", "timeout": 30}))
        send(cpo, correlation_id="same")
        send(cpo, correlation_id="same")
        ids = {request.headers["x-request-id"] for request in server.requests}
        assert len(ids) == 2

    @pytest.mark.parametrize("session_id", ["SES#1", "SES?1", "LOC1/SES1", "SES%41"])
    def test_the_session_id_is_one_percent_encoded_path_segment(self, server, cpo, session_id):
        encoded = quote(session_id, safe="")
        server.respond(f"{PROFILES_PATH}/{encoded}", json=ocpi_ok({"result": "ACCEPTED", "timeout": 30}))
        with contextlib.suppress(AdapterError):  # a wrong path gets the stub's "not configured" answer
            OcpiChargingProfiles().set_charging_profile(cpo=cpo, session_id=session_id, body=BODY, correlation_id="c")
        [request] = server.requests
        assert request.path == f"{PROFILES_PATH}/{encoded}"
        assert unquote(request.path.rsplit("/", 1)[1]) == session_id

    def test_a_peer_without_base64_gets_the_raw_token(self, server, cpo):
        cpo.auth_base64 = False
        server.respond(self.path, json=ocpi_ok({"result": "ACCEPTED", "timeout": 30}))
        send(cpo)
        assert server.requests[0].headers["authorization"] == "Token token-we-send"

    def test_http_404_means_unknown_session(self, server, cpo):
        server.respond(self.path, status=404, json={"status_code": 2003, "timestamp": "2026-03-01T16:00:00Z"})
        assert send(cpo).result == "UNKNOWN_SESSION"

    def test_an_ocpi_2xxx_status_on_http_200_means_unknown_session(self, server, cpo):
        server.respond(self.path, json={"status_code": 2001, "status_message": "Unknown session",
                                             "timestamp": "2026-03-01T16:00:00Z"})
        assert send(cpo).result == "UNKNOWN_SESSION"

    def test_an_ocpi_3xxx_status_is_a_transient_error(self, server, cpo):
        server.respond(self.path, json={"status_code": 3000, "timestamp": "2026-03-01T16:00:00Z"})
        with pytest.raises(AdapterError) as caught:
            send(cpo)
        assert caught.value.permanent is False

    def test_http_500_is_a_transient_error(self, server, cpo):
        server.respond(self.path, status=500, body="boom")
        with pytest.raises(AdapterError) as caught:
            send(cpo)
        assert caught.value.permanent is False
        assert caught.value.status_code == 500

    def test_http_400_is_a_permanent_error(self, server, cpo):
        server.respond(self.path, status=400, json={"status_code": 2001, "timestamp": "2026-03-01T16:00:00Z"})
        with pytest.raises(AdapterError) as caught:
            send(cpo)
        assert caught.value.permanent is True
        assert caught.value.status_code == 400

    def test_a_non_json_answer_is_an_error(self, server, cpo):
        server.respond(self.path, body="<html>maintenance</html>", headers={"Content-Type": "text/html"})
        with pytest.raises(AdapterError, match="non-JSON"):
            send(cpo)

    def test_json_without_an_envelope_is_an_error(self, server, cpo):
        server.respond(self.path, json={"result": "ACCEPTED", "timeout": 30})
        with pytest.raises(AdapterError, match="envelope"):
            send(cpo)

    def test_an_unknown_result_value_is_an_error(self, server, cpo):
        server.respond(self.path, json=ocpi_ok({"result": "MAYBE", "timeout": 30}))
        with pytest.raises(AdapterError, match="MAYBE"):
            send(cpo)

    def test_a_missing_timeout_is_none(self, server, cpo):
        server.respond(self.path, json=ocpi_ok({"result": "ACCEPTED"}))
        assert send(cpo) == ProfileSendResult(result="ACCEPTED", timeout_s=None,
                                              detail=ocpi_ok({"result": "ACCEPTED"}))

    def test_a_server_slower_than_the_read_timeout_is_a_transient_error(self, server, cpo, settings):
        settings.HTTP_READ_TIMEOUT_S = 0.2
        server.respond(self.path, json=ocpi_ok({"result": "ACCEPTED", "timeout": 30}), delay_s=10)
        with pytest.raises(AdapterError, match="timed out") as caught:
            send(cpo)
        assert caught.value.permanent is False

    def test_a_refused_connection_is_a_transient_error(self, cpo):
        cpo.chargingprofiles_url = "http://127.0.0.1:9/ocpi/2.2.1/chargingprofiles"  # discard port: nothing listens
        with pytest.raises(AdapterError) as caught:
            send(cpo)
        assert caught.value.permanent is False

    def test_a_changed_read_timeout_applies_to_a_thread_that_already_sent(self, server, cpo, settings):
        # common.http pools one client per thread; the timeout must still follow the setting of the moment.
        server.respond(self.path, json=ocpi_ok({"result": "ACCEPTED", "timeout": 30}))
        send(cpo)  # this thread's client now exists
        settings.HTTP_READ_TIMEOUT_S = 0.2
        server.respond(self.path, json=ocpi_ok({"result": "ACCEPTED", "timeout": 30}), delay_s=1.0)
        with pytest.raises(AdapterError, match="timed out"):
            send(cpo)
