"""Named actors for every test: a DSO (Gridco) with two congestion points, two aggregators (Voltflex, Chargeco)
with connections on them, a third-party DSO (Otherdso), plus API clients authenticated as each.

    gridco (DSO) owns cp_north and cp_south; otherdso (DSO) owns cp_far.
    voltflex (AGR) represents 3 connections on cp_north; chargeco (AGR) represents 2 on cp_north and 2 on cp_south.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pytest
from django.conf import settings
from django.core.servers import basehttp
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from common import isp as isp_time
from market.models import CongestionPoint, Connection, Participant, User
from tests.factories import (
    AggregatorConnectionFactory,
    CongestionPointFactory,
    ConnectionFactory,
    ParticipantFactory,
    UserFactory,
)

# pytest-django's live server uses Django's request handler, which leaves Nagle on: every keep-alive request
# would wait out a ~40 ms delayed ACK (see sandbox/server.py).
basehttp.WSGIRequestHandler.disable_nagle_algorithm = True

REAL_SERVICES = bool(os.environ.get("DATABASE_URL") and os.environ.get("CELERY_BROKER_URL"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `services` need PostgreSQL + Redis; skip them, with the reason, when those are not configured."""
    if REAL_SERVICES:
        return
    skip = pytest.mark.skip(reason="needs DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis)")
    for item in items:
        if "services" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _eager_celery_by_default(request: pytest.FixtureRequest) -> None:
    """Tasks run in-process unless a test is marked `services` (which starts real workers)."""
    from config.celery import app

    eager = "services" not in request.keywords
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = eager
    yield
    app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def _fast_passwords(settings: pytest.FixtureRequest) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class World:
    gridco: Participant
    otherdso: Participant
    voltflex: Participant
    chargeco: Participant
    cp_north: CongestionPoint
    cp_south: CongestionPoint
    cp_far: CongestionPoint
    gridco_user: User
    otherdso_user: User
    voltflex_user: User
    chargeco_user: User
    voltflex_connections: list[Connection]
    chargeco_connections: list[Connection]


@pytest.fixture
def world(db: None) -> World:
    gridco = ParticipantFactory(name="Gridco", role=Participant.Role.DSO, domain="gridco.example.com")
    otherdso = ParticipantFactory(name="Otherdso", role=Participant.Role.DSO, domain="otherdso.example.com")
    voltflex = ParticipantFactory(name="Voltflex", role=Participant.Role.AGR, domain="voltflex.example.com")
    chargeco = ParticipantFactory(name="Chargeco", role=Participant.Role.AGR, domain="chargeco.example.com")
    cp_north = CongestionPointFactory(dso=gridco, name="North")
    cp_south = CongestionPointFactory(dso=gridco, name="South")
    cp_far = CongestionPointFactory(dso=otherdso, name="Far")
    voltflex_connections = [ConnectionFactory(congestion_point=cp_north) for _ in range(3)]
    chargeco_connections = [ConnectionFactory(congestion_point=cp_north) for _ in range(2)] + [
        ConnectionFactory(congestion_point=cp_south) for _ in range(2)
    ]
    for connection in voltflex_connections:
        AggregatorConnectionFactory(aggregator=voltflex, connection=connection)
    for connection in chargeco_connections:
        AggregatorConnectionFactory(aggregator=chargeco, connection=connection)
    ConnectionFactory(congestion_point=cp_far)
    return World(
        gridco=gridco,
        otherdso=otherdso,
        voltflex=voltflex,
        chargeco=chargeco,
        cp_north=cp_north,
        cp_south=cp_south,
        cp_far=cp_far,
        gridco_user=UserFactory(username="grace", participant=gridco),
        otherdso_user=UserFactory(username="oscar", participant=otherdso),
        voltflex_user=UserFactory(username="victor", participant=voltflex),
        chargeco_user=UserFactory(username="chloe", participant=chargeco),
        voltflex_connections=voltflex_connections,
        chargeco_connections=chargeco_connections,
    )


def api_client_for(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def tomorrow() -> date:
    """Tomorrow's market day (Europe/Amsterdam): far enough ahead that every ISP is in the future."""
    return isp_time.market_day_of(datetime.now(tz=isp_time.MARKET_TZ)) + timedelta(days=1)


@pytest.fixture
def sandbox_enabled() -> bool:
    return bool(settings.SANDBOX_ENABLED)
