"""aggregator.ocpi.result_wsgi: the WSGI front for the CPO's asynchronous results answers the usual result exactly as
the Django stack does, and hands everything else to Django with the request intact."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.wsgi import get_wsgi_application

from aggregator.adapters.ocpi import token_header
from aggregator.models import ChargingProfileCommand
from aggregator.ocpi.result_wsgi import ResultFastPath
from common import time as clock
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory

Status = ChargingProfileCommand.Status
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def django_app() -> Any:
    return get_wsgi_application()


class Counting:
    """The Django application, counting the requests handed to it."""

    def __init__(self, app: Any) -> None:
        self.app, self.calls = app, 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.calls += 1
        return self.app(environ, start_response)


@pytest.fixture
def behind(django_app) -> Counting:
    return Counting(django_app)


@pytest.fixture
def front(behind) -> ResultFastPath:
    return ResultFastPath(behind)


@pytest.fixture
def commands(world) -> list[ChargingProfileCommand]:
    """Two commands our worker sent, ACCEPTED by the CPO and awaiting its result."""
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
    point = ChargePointFactory(cpo=cpo, connection=world.voltflex_connections[0])
    now = clock.now()
    session = ChargingSessionFactory(charge_point=point, cpo_session_id="SES-1", arrival_at=now,
                                     expected_departure_at=now + timedelta(hours=6))
    return [ChargingProfileCommand.objects.create(cpo=cpo, session=session, status=Status.ACCEPTED)
            for _ in range(2)]


def result_environ(command: ChargingProfileCommand, body: bytes, *, token: str | None = None,
                   method: str = "POST", host: str = "testserver") -> dict[str, Any]:
    return {
        "REQUEST_METHOD": method, "PATH_INFO": f"/ocpi/2.2.1/chargingprofiles/results/{command.pk}",
        "QUERY_STRING": "", "SCRIPT_NAME": "", "SERVER_NAME": "testserver", "SERVER_PORT": "80", "HTTP_HOST": host,
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(),
        "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
        "HTTP_AUTHORIZATION": token_header(token if token is not None else command.cpo.token_from_cpo),
        "HTTP_X_REQUEST_ID": "req-1", "HTTP_X_CORRELATION_ID": "corr-1",
        "HTTP_OCPI_FROM_COUNTRY_CODE": "NL", "HTTP_OCPI_FROM_PARTY_ID": "CPO",
        "HTTP_OCPI_TO_COUNTRY_CODE": "NL", "HTTP_OCPI_TO_PARTY_ID": "FLX",
    }


def call(app: Any, environ: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started["status"], started["headers"] = int(status.split()[0]), dict(headers)

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    payload = json.loads(body)
    payload.pop("timestamp", None)
    return started["status"], started["headers"], payload


def status_of(command: ChargingProfileCommand) -> str:
    return ChargingProfileCommand.objects.values_list("status", flat=True).get(pk=command.pk)


ACCEPTED = json.dumps({"result": "ACCEPTED"}).encode()


def test_the_usual_result_is_recorded_and_answered_as_django_answers_it(front, behind, django_app, commands):
    first, second = commands
    fast = call(front, result_environ(first, ACCEPTED))
    slow = call(django_app, result_environ(second, ACCEPTED))

    assert behind.calls == 0  # answered by the front
    assert fast == slow
    assert fast[0] == 200
    assert fast[2] == {"status_code": 1000}
    assert (fast[1]["X-Request-ID"], fast[1]["OCPI-to-party-id"], fast[1]["OCPI-from-party-id"]) == (
        "req-1", "CPO", "FLX")
    assert status_of(first) == status_of(second) == Status.RESULT_ACCEPTED
    assert ChargingProfileCommand.objects.get(pk=first.pk).result_body == {"result": "ACCEPTED"}


def test_a_rejected_result_is_recorded(front, commands):
    status, _, payload = call(front, result_environ(commands[0], json.dumps({"result": "REJECTED"}).encode()))
    assert (status, payload["status_code"]) == (200, 1000)
    assert status_of(commands[0]) == Status.RESULT_REJECTED


def test_a_repeat_is_answered_by_django_as_always(front, behind, django_app, commands):
    command = commands[0]
    call(front, result_environ(command, ACCEPTED))
    assert call(front, result_environ(command, ACCEPTED)) == call(django_app, result_environ(command, ACCEPTED))
    assert behind.calls == 1
    conflicting = call(front, result_environ(command, json.dumps({"result": "REJECTED"}).encode()))
    assert conflicting[2]["status_code"] == 2000  # a different result for a finished command is refused
    assert status_of(command) == Status.RESULT_ACCEPTED


def test_an_unknown_token_gets_djangos_401_and_changes_nothing(front, commands):
    status, _, payload = call(front, result_environ(commands[0], ACCEPTED, token="not-a-token"))
    assert (status, payload["status_code"]) == (401, 2000)
    assert status_of(commands[0]) == Status.ACCEPTED


def test_a_bad_body_reaches_django_intact(front, commands):
    status, _, payload = call(front, result_environ(commands[0], b"{not json"))
    assert (status, payload["status_code"]) == (400, 2001)
    status, _, payload = call(front, result_environ(commands[0], json.dumps({"result": "MAYBE"}).encode()))
    assert (status, payload["status_code"]) == (200, 2001)
    assert status_of(commands[0]) == Status.ACCEPTED


def test_a_host_django_refuses_is_refused(front, commands):
    started: dict[str, Any] = {}
    chunks = front(result_environ(commands[0], ACCEPTED, host="evil.example"),
                   lambda status, headers, exc_info=None: started.update(status=status))
    b"".join(chunks)
    assert started["status"].startswith("400")
    assert status_of(commands[0]) == Status.ACCEPTED


def test_other_methods_go_to_django(front, commands):
    status, headers, payload = call(front, result_environ(commands[0], b"", method="GET"))
    assert (status, payload["status_code"]) == (405, 2000)
    assert headers["Allow"] == "POST"


def test_with_hsts_configured_django_answers(front, commands, settings):
    settings.SECURE_HSTS_SECONDS = 3600
    status, _, _ = call(front, result_environ(commands[0], ACCEPTED))
    assert status == 200
    assert status_of(commands[0]) == Status.RESULT_ACCEPTED


def test_a_body_without_a_length_is_left_to_django_unread(front, behind, commands):
    environ = result_environ(commands[0], ACCEPTED)
    del environ["CONTENT_LENGTH"]
    body = environ["wsgi.input"]
    status, _, payload = call(front, environ)
    assert behind.calls == 1
    assert environ["wsgi.input"] is body
    assert status_of(commands[0]) == Status.ACCEPTED  # Django reads no body without a length: nothing recorded


def test_with_a_referrer_policy_list_the_header_is_djangos(commands, settings):
    settings.SECURE_REFERRER_POLICY = "no-referrer, strict-origin"
    django_app = get_wsgi_application()  # its middleware reads the settings when it is made
    fast = call(ResultFastPath(django_app), result_environ(commands[0], ACCEPTED))
    slow = call(django_app, result_environ(commands[1], ACCEPTED))
    assert fast[1]["Referrer-Policy"] == slow[1]["Referrer-Policy"] == "no-referrer,strict-origin"


def test_the_served_application_is_django_behind_the_front():
    from django.core.handlers.wsgi import WSGIHandler

    from config import wsgi

    assert isinstance(wsgi.application, ResultFastPath)
    assert wsgi.application.app is wsgi.django_application and isinstance(wsgi.django_application, WSGIHandler)
