"""Dispatch through a real Celery worker process on Redis against PostgreSQL (CI's second leg).

The order is placed in this process; the worker (a separate OS process) computes the schedule and PUTs the
profiles over HTTP to the sandbox CPO served by pytest's live server; the CPO's async results travel back
through Redis and the worker to our OCPI result endpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from django.db import connection

from aggregator.models import ChargingProfileCommand
from aggregator.services import flex_offer_propose
from common import isp as isp_time
from config.celery import app as celery_app
from market import services as market_services
from market.models import FlexOrder
from market.services import OfferOptionInput
from sandbox.models import SandboxCpoClient
from tests.builders import make_request
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


def _test_database_url() -> str:
    """DATABASE_URL pointing at the test database pytest-django created."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


@pytest.fixture
def celery_worker_process(live_server, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    broker = os.environ["CELERY_BROKER_URL"]
    redis.Redis.from_url(broker).flushdb()  # no stale tasks from earlier runs
    name = f"test-{uuid.uuid4().hex[:8]}@localhost"
    log = tmp_path / "worker.log"
    env = {**os.environ, "DATABASE_URL": _test_database_url(), "CELERY_BROKER_URL": broker,
           "PUBLIC_BASE_URL": live_server.url, "DJANGO_SETTINGS_MODULE": "config.settings"}
    with log.open("w") as handle:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "dispatch,default,market,settlement",
             "-P", "solo", "-n", name, "-l", "INFO", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not (celery_app.control.ping(destination=[name], timeout=1.0) or []):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text()}")
        yield process, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        connection.close()


def test_a_placed_order_is_dispatched_by_a_real_worker(world, tomorrow, live_server, settings,
                                                        celery_worker_process):
    process, log = celery_worker_process
    settings.PUBLIC_BASE_URL = live_server.url
    assert celery_app.conf.task_always_eager is False
    cpo = ChargePointOperatorFactory(
        aggregator=world.voltflex, chargingprofiles_url=f"{live_server.url}/sandbox/cpo/ocpi/2.2.1/chargingprofiles")
    SandboxCpoClient.objects.create(name="voltflex", token_from_client=cpo.token_for_cpo,
                                    token_for_client=cpo.token_from_cpo)
    evening = isp_time.isp_start(tomorrow, 69)  # 17:00 local on a 96-ISP day (earlier on a DST day: fine)
    for index, connection_ in enumerate(world.voltflex_connections):
        point = ChargePointFactory(cpo=cpo, connection=connection_, max_power_w=11_000)
        ChargingSessionFactory(charge_point=point, arrival_at=evening + timedelta(minutes=20 * index),
                               expected_departure_at=evening + timedelta(hours=14), max_power_w=11_000,
                               energy_requested_kwh=Decimal("25"))

    request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow, reduction_w=10_000)
    proposal = flex_offer_propose(aggregator=world.voltflex, flex_request=request)
    assert not proposal.is_empty
    prognosis = market_services.d_prognosis_submit(aggregator=world.voltflex, congestion_point=world.cp_north,
                                                   period=tomorrow, isps=proposal.d_prognosis_isps)
    offer = market_services.flex_offer_submit(
        aggregator=world.voltflex, congestion_point=world.cp_north, period=tomorrow,
        options=[OfferOptionInput(option_reference="1", price_eur=proposal.price_eur, isps=proposal.offer_isps,
                                  min_activation_factor=proposal.min_activation_factor)],
        expires_at=proposal.expires_at, flex_request=request, d_prognosis=prognosis)
    order = market_services.flex_offer_accept(flex_offer=offer, dso=world.gridco, actor=world.gridco_user)

    deadline = time.monotonic() + 90
    while True:
        statuses = list(ChargingProfileCommand.objects.values_list("status", flat=True))
        if len(statuses) == 3 and set(statuses) == {ChargingProfileCommand.Status.RESULT_ACCEPTED}:
            break
        assert process.poll() is None, f"worker died:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"commands {statuses} not final; worker log:\n{log.read_text()}"
        time.sleep(0.3)

    order.refresh_from_db()
    assert order.status == FlexOrder.Status.DISPATCHED
    worker_log = log.read_text()
    # The work happened in the worker process, not eagerly in ours.
    assert "aggregator.tasks.dispatch_order_task" in worker_log
    assert "aggregator.tasks.send_commands_task" in worker_log
    assert "sandbox.tasks.post_profile_result_task" in worker_log
    assert settings.CELERY_BROKER_URL
