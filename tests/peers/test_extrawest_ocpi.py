"""Our OCPI 2.2.1 side against an independent implementation: the `extrawest-ocpi` package from PyPI as the CPO.

The peer runs from its own virtualenv (var/peers/extrawest-ocpi, created on first use and kept between runs; it
pins FastAPI 0.101 / pydantic 1, so it never enters our dependencies) as a separate process on loopback
(tests/peers/extrawest_cpo.py), and talks to our live_server over real HTTP.

Checked with the peer: the credentials handshake with us as sender (token A -> our token B -> its token C, both
sides reading each other's versions and version details) and unregister; a Session pushed by the peer into our
sessions receiver (and into the portfolio); SetChargingProfile to its chargingprofiles receiver, its synchronous
answer and its asynchronous result on our response_url; the first page of its paginated sessions list; ClearProfile with its async result.
Where the peer falls short of the spec the tests pin the gap (README, OCPI section, lists them); those parts are
tested against the official examples in tests/aggregator/test_ocpi_receivers.py.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from aggregator import delivery, services
from aggregator.adapters.ocpi import ocpi_get_all, set_charging_profile_body
from aggregator.models import ChargePointOperator, ChargingProfileCommand, ChargingSession, OcpiSession
from aggregator.ocpi import registration
from common.exceptions import AdapterError
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory

ROOT = Path(__file__).resolve().parents[2]
PEER_DIR = ROOT / "var" / "peers" / "extrawest-ocpi"
PEER_PACKAGES = ["extrawest-ocpi==2025.7.16", "uvicorn"]
TOKEN_A = "extrawest-token-a"
PUSH_TOKEN = "extrawest-push-token"

pytestmark = [pytest.mark.django_db(transaction=True)]


def _peer_python() -> Path:
    """The peer's virtualenv, created and filled on first use (pip from PyPI); skip with the reason if that fails."""
    python = PEER_DIR / "bin" / "python"
    marker = PEER_DIR / ".installed"
    if marker.exists():
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_DIR)], check=True)  # noqa: S603
    completed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES],  # noqa: S603
                               capture_output=True, text=True, timeout=600)
    if completed.returncode != 0:
        pytest.skip(f"could not pip install {' '.join(PEER_PACKAGES)} into {PEER_DIR}: "
                    f"{(completed.stderr or completed.stdout).strip()[-500:]}")
    marker.write_text(" ".join(PEER_PACKAGES))
    return python


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def b64(token: str) -> str:
    return base64.b64encode(token.encode()).decode()


@pytest.fixture(scope="module")
def peer() -> Iterator[str]:
    python = _peer_python()
    port = _free_port()
    log = (ROOT / "var" / "peers" / "extrawest-cpo.log").open("w")
    process = subprocess.Popen([str(python), str(Path(__file__).with_name("extrawest_cpo.py")), str(port)],  # noqa: S603
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                               env={k: v for k, v in os.environ.items() if not k.startswith("DJANGO")})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/ocpi/versions", headers={"Authorization": f"Token {b64(TOKEN_A)}"},
                             timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"extrawest-ocpi peer did not start; see {log.name}")
            time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def peer_state(peer: str) -> dict:
    return httpx.get(f"{peer}/peer/state", timeout=5).json()


@pytest.fixture
def registered(world, peer, live_server, settings) -> ChargePointOperator:
    """We register at the peer CPO with the token A it gave us out of band."""
    settings.PUBLIC_BASE_URL = live_server.url
    cpo = ChargePointOperatorFactory(
        aggregator=world.voltflex, country_code="NL", party_id="EXW", chargingprofiles_url="", token_for_cpo="",
        token_from_cpo="", registration=ChargePointOperator.Registration.UNREGISTERED)
    return registration.register_with_cpo(cpo=cpo, versions_url=f"{peer}/ocpi/versions", token_a=TOKEN_A)


def test_credentials_handshake_we_register_at_the_peer(registered, peer, live_server):
    cpo = ChargePointOperator.objects.get(pk=registered.pk)
    assert cpo.registration == ChargePointOperator.Registration.REGISTERED
    assert cpo.token_for_cpo.startswith("extrawest-token-c-")  # the peer's token C: what we call it with
    assert cpo.chargingprofiles_url == f"{peer}/ocpi/cpo/2.2.1/chargingprofiles/"
    assert cpo.endpoint_url("sessions", "SENDER") == f"{peer}/ocpi/cpo/2.2.1/sessions/"
    assert {role["party_id"].upper() for role in cpo.ocpi_roles} == {"EXW"}  # the peer lower-cases CiStrings
    client = peer_state(peer)["client"]
    # The peer received our token B and, with it, read our versions and version details before answering.
    assert client["credentials"]["token"] == cpo.token_from_cpo
    assert client["credentials"]["url"] == f"{live_server.url}/ocpi/versions"
    assert client["credentials"]["roles"][0]["role"] == "SCSP"
    published = {(e["identifier"], e["role"]) for e in client["endpoints"]["endpoints"]}
    assert {("sessions", "RECEIVER"), ("chargingprofiles", "SENDER"), ("credentials", "SENDER")} <= published
    answer = httpx.get(f"{peer}/ocpi/versions", headers={"Authorization": f"Token {b64(cpo.token_for_cpo)}"})
    assert answer.status_code == 200


def test_a_session_pushed_by_the_peer_lands_in_our_receiver_and_portfolio(registered, peer, live_server, world,
                                                                         monkeypatch):
    changed: list[str] = []
    monkeypatch.setattr(services, "charging_session_changed", lambda *, session, reason: changed.append(reason))
    ChargePointFactory(cpo=registered, connection=world.voltflex_connections[0], evse_uid="NL*EXW*E1")
    answer = httpx.post(f"{peer}/push/2.2.1", headers={"Authorization": f"Token {b64(PUSH_TOKEN)}"}, timeout=30,
                        json={"module_id": "sessions", "object_id": "EXW-SES-1",
                              "receivers": [{"endpoints_url": f"{live_server.url}/ocpi/2.2.1",
                                             "auth_token": registered.token_from_cpo}]})
    assert answer.status_code == 200, answer.text
    [receiver] = answer.json()["receiver_responses"]
    assert receiver["status_code"] in (200, 201)
    stored = OcpiSession.objects.get(cpo=registered, session_id__iexact="EXW-SES-1")  # the peer lower-cases ids
    assert (stored.status, stored.evse_uid.upper(), float(stored.kwh)) == ("ACTIVE", "NL*EXW*E1", 1.5)
    session = ChargingSession.objects.get(cpo_session_id__iexact="EXW-SES-1")
    assert session.status == ChargingSession.Status.ACTIVE
    assert changed == ["session_started"]


def _command(cpo: ChargePointOperator, session: ChargingSession, kind: str) -> ChargingProfileCommand:
    command = ChargingProfileCommand(kind=kind, cpo=cpo, session=session)
    if kind == ChargingProfileCommand.Kind.SET:
        command.request_body = set_charging_profile_body(
            start=datetime(2026, 3, 1, 18, tzinfo=UTC), limits_w=[7400, 3700],
            response_url=delivery.response_url_for(command.id))
    command.save()
    return command


@pytest.fixture
def peer_session(registered, world, monkeypatch) -> ChargingSession:
    monkeypatch.setattr(services, "charging_session_changed", lambda **kwargs: None)
    point = ChargePointFactory(cpo=registered, connection=world.voltflex_connections[0], evse_uid="NL*EXW*E2")
    return ChargingSessionFactory(charge_point=point, cpo_session_id="EXW-SES-2",
                                  arrival_at=datetime(2026, 3, 1, 17, tzinfo=UTC),
                                  expected_departure_at=datetime(2026, 3, 2, 7, tzinfo=UTC))


def test_gap_the_peer_refuses_a_spec_conformant_set_charging_profile(registered, peer, peer_session):
    command = _command(registered, peer_session, ChargingProfileCommand.Kind.SET)
    delivery.send_batch([str(command.pk)])
    command.refresh_from_db()
    # Gap: the peer's SetChargingProfile model requires `min_charge_rate` (the spec's field is the optional
    # `min_charging_rate`) and types `charging_profile_period` as one object instead of a list, so it answers
    # HTTP 422 to the spec's own shape. A 4xx that will not change: our command fails at once, no retries.
    assert (command.status, command.attempts) == (ChargingProfileCommand.Status.FAILED, 1)
    assert "HTTP 422" in command.last_error
    assert "min_charge_rate" in command.last_error and "charging_profile_period" in command.last_error
    assert peer_state(peer)["profiles"] == []


def test_clear_profile_round_trip_with_the_async_result(registered, peer, peer_session):
    # GET ActiveChargingProfile is not exercised against this peer: it answered without a `result` and then
    # stopped answering (README, OCPI section: peer gaps); our GET is tested against a stub CPO instead.
    command = _command(registered, peer_session, ChargingProfileCommand.Kind.CLEAR)
    delivery.send_batch([str(command.pk)])
    command.refresh_from_db()
    assert command.attempts == 1
    assert command.status in (ChargingProfileCommand.Status.ACCEPTED,
                              ChargingProfileCommand.Status.RESULT_ACCEPTED), command.last_error
    received = peer_state(peer)["profiles"][-1]
    assert received["action"].endswith("delete_chargingprofile")
    assert received["response_url"] == delivery.response_url_for(command.pk)  # the URL names the command
    # The peer POSTs its ClearProfileResult to that response_url with our token B.
    deadline = time.monotonic() + 20
    while command.status == ChargingProfileCommand.Status.ACCEPTED and time.monotonic() < deadline:
        time.sleep(0.2)
        command.refresh_from_db()
    assert command.status == ChargingProfileCommand.Status.RESULT_ACCEPTED
    assert command.result_body["result"] == "ACCEPTED"


def test_the_peers_sessions_list_first_page_and_its_link_gap(registered, peer):
    pages = ocpi_get_all(registered.endpoint_url("sessions", "SENDER") or "", token=registered.token_for_cpo,
                         params={"limit": "2"})
    first_two = [next(pages)["id"].upper(), next(pages)["id"].upper()]
    assert first_two == ["EXW-SES-1", "EXW-SES-2"]
    # Gap: the peer's Link rel="next" is always https://{OCPI_HOST}/... whatever its PROTOCOL setting, so a client
    # that follows it verbatim (as OCPI says) cannot reach a plain-http peer.
    with pytest.raises(AdapterError, match="https://127.0.0.1"):
        next(pages)
    answer = httpx.get(registered.endpoint_url("sessions", "SENDER") or "", params={"limit": 2},
                       headers={"Authorization": f"Token {b64(registered.token_for_cpo)}"})
    assert answer.headers["X-Total-Count"] == "3"
    assert answer.headers["Link"].startswith("<https://")


def test_unregister_at_the_peer(registered, peer):
    cpo = registration.unregister_at_cpo(cpo=ChargePointOperator.objects.get(pk=registered.pk))
    assert cpo.registration == ChargePointOperator.Registration.UNREGISTERED
    assert (cpo.token_for_cpo, cpo.token_from_cpo) == ("", "")
    assert peer_state(peer)["client"] is None


def test_the_management_command_registers_at_the_peer(world, peer, live_server, settings):
    from io import StringIO

    from django.core.management import call_command

    settings.PUBLIC_BASE_URL = live_server.url
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex, country_code="NL", party_id="EXW", token_for_cpo="",
                                     token_from_cpo="", registration=ChargePointOperator.Registration.UNREGISTERED)
    out = StringIO()
    call_command("ocpi_register", str(cpo.pk), f"{peer}/ocpi/versions", TOKEN_A, stdout=out)
    assert "modules chargingprofiles, credentials, locations, sessions" in out.getvalue()
    assert ChargePointOperator.objects.get(pk=cpo.pk).registration == ChargePointOperator.Registration.REGISTERED

