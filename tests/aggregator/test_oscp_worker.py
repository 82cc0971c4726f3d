"""OSCP through a real Celery worker process on Redis against PostgreSQL (the CI services leg).

The worker (a separate OS process) sends our outbox messages to the sandbox Flexibility Provider served by pytest's
live server; the FP fails the first requests with HTTP 500, so the worker's own backoff-and-retry carries the
registration, handshake and forecasts through: every message ends SENT, each exactly once at the FP.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from django.db import connection

from aggregator.models import OscpOutboundMessage, OscpPeer
from aggregator.oscp import services as oscp_services
from config.celery import app as celery_app
from sandbox import oscp as fp
from tests.peers.oscp.support import make_group, make_peer

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
Status = OscpOutboundMessage.Status


@pytest.fixture
def worker(live_server, tmp_path):
    broker = os.environ["CELERY_BROKER_URL"]
    redis.Redis.from_url(broker).flushdb()
    parts = urlsplit(os.environ["DATABASE_URL"])
    database_url = urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))
    name = f"oscp-{uuid.uuid4().hex[:8]}@localhost"
    log = tmp_path / "worker.log"
    env = {**os.environ, "DATABASE_URL": database_url, "PUBLIC_BASE_URL": live_server.url,
           "DJANGO_SETTINGS_MODULE": "config.settings"}
    with log.open("w") as handle:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "dispatch,default", "-P", "solo",
             "-n", name, "-l", "INFO", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
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


def test_a_real_worker_retries_through_a_failing_fp_and_delivers_everything_once(world, live_server, settings,
                                                                                  worker):
    process, log = worker
    settings.PUBLIC_BASE_URL = live_server.url
    assert celery_app.conf.task_always_eager is False
    sandbox, token_a = fp.fp_setup(name="worker-fp", base_url=f"{live_server.url}/sandbox/oscp/worker-fp/fp/2.0")
    peer = make_peer(world, base_url=sandbox.base_url, handshake=OscpPeer.Handshake.NONE, heartbeat_interval=None)
    OscpPeer.objects.filter(pk=peer.pk).update(registration_status=OscpPeer.Registration.NEW, token_for_peer=token_a,
                                               token_from_peer_digest="")
    make_group(world, peer, group_id="site-w")
    peer.refresh_from_db()
    fp.fp_fault_set("worker-fp", status=500, count=2)

    oscp_services.peer_register(peer=peer, peer_token=token_a)

    deadline = time.monotonic() + 120
    while True:
        statuses = Counter(OscpOutboundMessage.objects.values_list("status", flat=True))
        peer.refresh_from_db()
        if peer.handshake_status == OscpPeer.Handshake.COMPLETE and statuses.get(Status.SENT, 0) >= 6 \
                and set(statuses) == {Status.SENT}:
            break
        assert process.poll() is None, f"worker died:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"messages {dict(statuses)} not all sent; worker log:\n{log.read_text()}"
        time.sleep(0.5)

    register = OscpOutboundMessage.objects.get(endpoint="register")
    assert register.attempts == 3 and register.status == Status.SENT  # two 500s, then through
    received = Counter((r["endpoint"], r["request_id"]) for r in fp.fp_get("worker-fp").received)
    assert all(count == 1 for count in received.values())  # nothing delivered twice
    forecasts = [r for r in fp.fp_get("worker-fp").received if r["endpoint"] == "update_group_capacity_forecast"]
    assert len(forecasts) == 4  # today and tomorrow, CONSUMPTION and FALLBACK_CONSUMPTION
    assert "aggregator.oscp.tasks.oscp_message_send_task" in log.read_text()
