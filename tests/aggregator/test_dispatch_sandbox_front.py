"""The sandbox CPO as bench.dispatch runs it: profile PUTs answered straight from WSGI (sandbox.cpo_wsgi), results
posted from its own threads over keep-alive connections (sandbox.cpo, results=thread)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from aggregator.adapters.ocpi import set_charging_profile_body, token_header
from aggregator.delivery import response_url_for
from aggregator.models import ChargingProfileCommand, ChargingSession
from common import time as clock
from common.exceptions import AdapterError
from sandbox import cpo as sandbox_cpo
from sandbox.models import SandboxChargingProfile, SandboxCpoClient
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory
from tests.support.stub_server import serving

Status = ChargingProfileCommand.Status
PREFIX = "/sandbox/cpo/ocpi/2.2.1/chargingprofiles/"


@pytest.fixture
def threaded_cpo() -> Iterator[None]:
    sandbox_cpo.reset()
    sandbox_cpo.configure(results="thread")
    yield
    sandbox_cpo.reset()


@pytest.fixture
def accepted_command(world, live_server, settings, sandbox_enabled, threaded_cpo) -> ChargingProfileCommand:
    """A command our worker sent (ACCEPTED, awaiting the result) to a CPO that is the sandbox."""
    if not sandbox_enabled:
        pytest.skip("SANDBOX_ENABLED is off, so the sandbox CPO is not served")
    settings.PUBLIC_BASE_URL = live_server.url
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
    SandboxCpoClient.objects.create(name="Voltflex", token_from_client=cpo.token_for_cpo,
                                    token_for_client=cpo.token_from_cpo)
    point = ChargePointFactory(cpo=cpo, connection=world.voltflex_connections[0])
    now = clock.now()
    session = ChargingSessionFactory(charge_point=point, cpo_session_id="SBX-1", arrival_at=now,
                                     expected_departure_at=now + timedelta(hours=6))
    command = ChargingProfileCommand(cpo=cpo, session=session, status=Status.ACCEPTED)
    command.request_body = set_charging_profile_body(start=now, limits_w=[11_000, 3_700],
                                                     response_url=response_url_for(command.pk))
    command.save()
    return command


def wsgi_call(environ: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    from sandbox import cpo_wsgi

    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started["status"], started["headers"] = int(status.split()[0]), dict(headers)

    body = b"".join(cpo_wsgi.application(environ, start_response))
    return started["status"], started["headers"], body


def put_environ(session_id: str, body: bytes, token: str, **headers: str) -> dict[str, Any]:
    environ = {"REQUEST_METHOD": "PUT", "PATH_INFO": PREFIX + session_id, "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": "application/json", "wsgi.input": io.BytesIO(body), "SERVER_NAME": "127.0.0.1",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "HTTP_AUTHORIZATION": token_header(token)}
    environ.update({"HTTP_" + name.upper(): value for name, value in headers.items()})
    return environ


def wait_for(condition: Any, timeout_s: float = 20.0) -> None:
    """Poll until the CPO's threads have done their part (not a timing assertion: the bound is generous)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the sandbox CPO's result never arrived")
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
class TestWsgiFront:
    def test_a_profile_put_is_answered_applied_and_its_result_posted(self, accepted_command):
        raw = json.dumps(accepted_command.request_body).encode()
        status, headers, body = wsgi_call(put_environ(
            "SBX-1", raw, accepted_command.cpo.token_for_cpo, X_REQUEST_ID="req-1", X_CORRELATION_ID="corr-1",
            OCPI_FROM_PARTY_ID="FLX", OCPI_TO_PARTY_ID="SBX"))

        assert status == 200
        assert headers["Content-Type"] == "application/json"
        assert (headers["X-Request-ID"], headers["X-Correlation-ID"]) == ("req-1", "corr-1")
        assert (headers["OCPI-to-party-id"], headers["OCPI-from-party-id"]) == ("FLX", "SBX")
        payload = json.loads(body)
        assert payload["status_code"] == 1000
        assert payload["data"]["result"] == "ACCEPTED"
        profile = SandboxChargingProfile.objects.get()
        assert (profile.session_id, profile.sync_result, profile.is_active) == ("SBX-1", "ACCEPTED", True)
        assert profile.charging_profile == accepted_command.request_body["charging_profile"]
        # The ChargingProfileResult reaches our OCPI endpoint from the CPO's thread, and is marked posted there.
        wait_for(lambda: ChargingProfileCommand.objects.get(pk=accepted_command.pk).status == Status.RESULT_ACCEPTED)
        wait_for(lambda: SandboxChargingProfile.objects.get().async_result == "ACCEPTED")
        assert SandboxChargingProfile.objects.get().result_posted_at is not None

    def test_the_same_command_again_is_not_applied_twice(self, accepted_command):
        raw = json.dumps(accepted_command.request_body).encode()
        token = accepted_command.cpo.token_for_cpo
        first = wsgi_call(put_environ("SBX-1", raw, token))
        again = wsgi_call(put_environ("SBX-1", raw, token))

        assert json.loads(first[2])["data"]["result"] == json.loads(again[2])["data"]["result"] == "ACCEPTED"
        assert SandboxChargingProfile.objects.count() == 1
        assert sandbox_cpo._stats["repeats"] == 1

    def test_verdicts_follow_the_client_and_the_session_as_they_are_now(self, accepted_command):
        # The first PUT loads the CPO's session map; later ones take the one-statement path on PostgreSQL.
        token = accepted_command.cpo.token_for_cpo
        first = dict(accepted_command.request_body)
        assert json.loads(wsgi_call(put_environ("SBX-1", json.dumps(first).encode(), token))[2])["data"]["result"] \
            == "ACCEPTED"
        SandboxCpoClient.objects.update(reject_all=True)
        refused = {**first, "response_url": first["response_url"] + "-2"}
        assert json.loads(wsgi_call(put_environ("SBX-1", json.dumps(refused).encode(), token))[2])["data"]["result"] \
            == "REJECTED"
        SandboxCpoClient.objects.update(reject_all=False)
        ChargingSession.objects.filter(pk=accepted_command.session_id).update(status=ChargingSession.Status.INVALID)
        gone = {**first, "response_url": first["response_url"] + "-3"}
        assert json.loads(wsgi_call(put_environ("SBX-1", json.dumps(gone).encode(), token))[2])["data"]["result"] \
            == "UNKNOWN_SESSION"
        rows = SandboxChargingProfile.objects.order_by("id")
        assert [(row.sync_result, row.is_active) for row in rows] == [
            ("ACCEPTED", True), ("REJECTED", False), ("UNKNOWN_SESSION", False)]

    def test_an_unknown_token_is_401_and_a_bad_body_2001(self, accepted_command):
        raw = json.dumps(accepted_command.request_body).encode()
        status, _, body = wsgi_call(put_environ("SBX-1", raw, "not-a-token"))
        assert status == 401
        assert json.loads(body)["status_code"] == 2000
        status, _, body = wsgi_call(put_environ("SBX-1", b'{"charging_profile": {}}',
                                                accepted_command.cpo.token_for_cpo))
        assert status == 200
        assert json.loads(body)["status_code"] == 2001
        assert not SandboxChargingProfile.objects.exists()

    def test_an_unknown_session_is_answered_unknown_session(self, accepted_command):
        raw = json.dumps(accepted_command.request_body).encode()
        status, _, body = wsgi_call(put_environ("NOPE-9", raw, accepted_command.cpo.token_for_cpo))
        assert status == 200
        assert json.loads(body)["data"]["result"] == "UNKNOWN_SESSION"

    def test_everything_else_goes_to_django(self, accepted_command):
        status, headers, body = wsgi_call({
            "REQUEST_METHOD": "GET", "PATH_INFO": "/sandbox/cpo/faults", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "QUERY_STRING": ""})
        assert status == 200
        assert json.loads(body)["results"] == "thread"


class _Receiver(BaseHTTPRequestHandler):
    """Answers POSTs with the status named by the path ("/204" -> 204), over HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"
    connections: set[int] = set()
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        type(self).connections.add(id(self.connection))
        type(self).bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        status = int(self.path.strip("/"))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.connections, _Receiver.bodies = set(), []
    with serving(_Receiver) as base_url:
        yield base_url


class TestResultPosting:
    def test_results_share_one_keep_alive_connection(self, receiver):
        for _ in range(3):
            sandbox_cpo._send_result(f"{receiver}/200", "token", {"result": "ACCEPTED"})
        assert len(_Receiver.connections) == 1
        assert [json.loads(body) for body in _Receiver.bodies] == [{"result": "ACCEPTED"}] * 3

    @pytest.mark.parametrize(("status", "permanent"), [(404, True), (400, True), (429, False), (503, False)])
    def test_refusals_are_classified_like_common_http(self, receiver, status, permanent):
        with pytest.raises(AdapterError) as caught:
            sandbox_cpo._send_result(f"{receiver}/{status}", "token", {"result": "ACCEPTED"})
        assert caught.value.permanent is permanent
        assert caught.value.status_code == status

    def test_a_server_that_is_gone_is_a_transient_failure(self, receiver):
        sandbox_cpo._send_result(f"{receiver}/200", "token", {"result": "ACCEPTED"})
        with pytest.raises(AdapterError) as caught:
            sandbox_cpo._send_result("http://127.0.0.1:9/200", "token", {"result": "ACCEPTED"})
        assert caught.value.permanent is False
