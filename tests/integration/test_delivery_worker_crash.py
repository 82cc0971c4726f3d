"""A dispatch worker killed with SIGKILL mid-batch (real Celery worker processes on Redis, PostgreSQL).

Worker A sends an order's commands to a slow fake CPO and is killed -9 while a chunk is in flight. Worker B (with
beat, so the sweeper runs) takes over: the sweeper reclaims the commands A had claimed once their lease ends and
re-queues the ones A's lost task never reached. Every command ends ACCEPTED at the CPO, none is lost, and none is
applied twice (counted at the fake CPO): the in-doubt re-sends of A's last chunk repeat a profile the charger
already has, which a PUT replaces with itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from django.db import connection, transaction

from aggregator import delivery
from aggregator.adapters.ocpi import set_charging_profile_body
from aggregator.models import ChargingProfileCommand
from config.celery import app as celery_app
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory
from tests.integration.test_celery_worker_dispatch import _test_database_url
from tests.support.fake_cpo import FakeCpo

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = 240
Status = ChargingProfileCommand.Status


def start_worker(tmp_path: Path, name: str, *, beat: bool) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"{name}.log"
    env = {**os.environ, "DATABASE_URL": _test_database_url(), "DJANGO_SETTINGS_MODULE": "config.settings",
           "DISPATCH_LEASE_S": "4", "DISPATCH_SWEEP_INTERVAL_S": "1", "DISPATCH_CONCURRENCY": "8",
           "DISPATCH_BATCH_SIZE": "60", "HTTP_READ_TIMEOUT_S": "10"}
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "dispatch", "-P", "solo",
               "-n", f"{name}-{uuid.uuid4().hex[:6]}@localhost", "-l", "INFO", "--without-gossip",
               "--without-mingle", "--prefetch-multiplier", "1"]
    if beat:
        command += ["-B", "-s", str(tmp_path / "beat-schedule")]
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)  # noqa: S603
    return process, log


@pytest.fixture
def fake_cpo() -> Iterator[FakeCpo]:
    with FakeCpo() as running:
        running.apply_delay_s = 0.15  # a chunk of 16 takes ~0.3 s: the kill lands mid-batch
        yield running


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen]]:
    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).flushdb()
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    connection.close()


def test_a_worker_killed_mid_batch_loses_nothing_and_applies_nothing_twice(world, fake_cpo, workers, tmp_path):
    assert celery_app.conf.task_always_eager is False
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex, chargingprofiles_url=fake_cpo.base_url)
    arrival = datetime.now(tz=UTC).replace(microsecond=0)
    commands = []
    for index in range(COMMANDS):
        point = ChargePointFactory(cpo=cpo, connection=world.voltflex_connections[index % 3])
        session = ChargingSessionFactory(charge_point=point, arrival_at=arrival,
                                         expected_departure_at=arrival + timedelta(hours=8))
        command = ChargingProfileCommand(kind=ChargingProfileCommand.Kind.SET, cpo=cpo, session=session)
        command.request_body = set_charging_profile_body(start=arrival, limits_w=[7400, 3700],
                                                         response_url=delivery.response_url_for(command.id))
        commands.append(command)

    worker_a, log_a = start_worker(tmp_path, "a", beat=False)
    workers.append(worker_a)
    with transaction.atomic():
        delivery.outbox_put(commands)  # queued on commit: 4 tasks of 60
    deadline = time.monotonic() + 60
    while sum(fake_cpo.applied.values()) < 40:
        assert worker_a.poll() is None, log_a.read_text()
        assert time.monotonic() < deadline, f"worker A sent nothing:\n{log_a.read_text()}"
        time.sleep(0.05)
    os.kill(worker_a.pid, signal.SIGKILL)
    worker_a.wait(timeout=10)
    applied_before = sum(fake_cpo.applied.values())
    stranded = ChargingProfileCommand.objects.filter(status=Status.SENDING).count()
    assert applied_before < COMMANDS, "the kill came after the whole batch: make the CPO slower"

    worker_b, log_b = start_worker(tmp_path, "b", beat=True)
    workers.append(worker_b)
    deadline = time.monotonic() + 120
    while ChargingProfileCommand.objects.filter(status__in=[Status.PENDING, Status.SENDING]).exists():
        assert worker_b.poll() is None, log_b.read_text()
        assert time.monotonic() < deadline, (
            f"not final: {list(ChargingProfileCommand.objects.values_list('status', flat=True))}\n{log_b.read_text()}")
        time.sleep(0.3)

    statuses = set(ChargingProfileCommand.objects.values_list("status", flat=True))
    assert statuses <= {Status.ACCEPTED, Status.TIMED_OUT}  # all delivered (the fake CPO posts no results)
    urls = [body["response_url"] for body in ChargingProfileCommand.objects.values_list("request_body", flat=True)]
    assert {url: fake_cpo.applied[url] for url in urls} == dict.fromkeys(urls, 1)  # none lost, none applied twice
    resent = sum(count - 1 for count in fake_cpo.receipts.values() if count > 1)
    assert resent <= max(stranded, 16)  # only A's in-doubt chunk went out twice
    assert "dispatch_sweep_task" in log_b.read_text()
