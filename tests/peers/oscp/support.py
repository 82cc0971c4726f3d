"""Shared helpers for the OSCP tests: a registered peer with a capacity group, and a spy that holds every body
we send against the OSCP 2.0 schemas (so each test that sends anything checks what it sent)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest

from aggregator.adapters import oscp as protocol
from aggregator.models import CapacityGroup, ChargePoint, OscpPeer
from aggregator.models.operators import DispatchMode
from aggregator.models.oscp import token_digest
from common import isp as isp_time
from tests.factories import ChargePointFactory, ChargePointOperatorFactory
from tests.peers.oscp.schemas import assert_valid, schemas_available
from tests.support.stub_server import StubServer

TOKEN_FROM_PEER = "peer-calls-us-with-this-token-0001"  # the token we issued (stored as a digest)
TOKEN_FOR_PEER = "we-call-the-peer-with-this-token-0002"
TZ = isp_time.MARKET_TZ


@dataclass
class SentMessage:
    method: str
    url: str
    token: str
    request_id: str
    correlation_id: str
    body: Any

    @property
    def endpoint(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass
class SendSpy:
    """Wraps aggregator.adapters.oscp.send: records each outbound message and validates its body."""

    sent: list[SentMessage] = field(default_factory=list)

    def to(self, endpoint: str) -> list[SentMessage]:
        return [message for message in self.sent if message.endpoint == endpoint]


@pytest.fixture(name="send_spy")
def send_spy_fixture(monkeypatch) -> SendSpy:
    spy = SendSpy()
    real_send = protocol.send

    def send(*, method: str, url: str, token: str, request_id: str, body: Any, correlation_id: str = ""):
        message = SentMessage(method=method, url=url, token=token, request_id=request_id,
                              correlation_id=correlation_id, body=body)
        spy.sent.append(message)
        if body is not None and schemas_available():
            assert_valid(message.endpoint, body)
        return real_send(method=method, url=url, token=token, request_id=request_id, body=body,
                         correlation_id=correlation_id)

    monkeypatch.setattr(protocol, "send", send)
    return spy


@pytest.fixture(name="fp_stub")
def fp_stub_fixture():
    """A StubServer standing in for a Flexibility Provider."""
    with StubServer() as server:
        yield server


@pytest.fixture(name="async_outbox")
def async_outbox_fixture(monkeypatch):
    """Send outbox messages from a background thread shortly after commit, as a Celery worker would, instead of
    eagerly inside the request that queued them (pyoscp deadlocks on an answer that arrives before its 204)."""
    import threading
    import time

    from django.db import connections

    from aggregator.oscp import services as oscp_services

    class Outbox(list):
        """The sender threads; set `ready` to a callable that returns True once sending may start."""

        ready = staticmethod(lambda: True)

    threads = Outbox()

    def send_later(message_id: str) -> None:
        def run() -> None:
            try:
                for _ in range(120):  # the worker's "queue latency": until the peer is ready (at most ~60 s)
                    if threads.ready():
                        break
                    time.sleep(0.5)
                oscp_services.message_send(message_id=message_id)
            finally:
                connections.close_all()

        timer = threading.Timer(0.5, run)
        timer.daemon = True
        threads.append(timer)
        timer.start()

    monkeypatch.setattr(oscp_services, "_enqueue_send", send_later)
    yield threads
    for thread in threads:
        thread.join(timeout=90)


def make_peer(world, *, base_url: str = "http://127.0.0.1:9/oscp/fp/2.0", mode: str = DispatchMode.OSCP,
              handshake: str = OscpPeer.Handshake.COMPLETE, heartbeat_interval: int | None = 30) -> OscpPeer:
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex, dispatch_mode=mode)
    behaviour = {"measurement_configuration": ["CONTINUOUS"]}
    if heartbeat_interval:
        behaviour["heartbeat_interval"] = heartbeat_interval
    return OscpPeer.objects.create(
        cpo=cpo, base_url=base_url, token_for_peer=TOKEN_FOR_PEER, token_from_peer_digest=token_digest(TOKEN_FROM_PEER),
        registration_status=OscpPeer.Registration.REGISTERED, handshake_status=handshake,
        peer_required_behaviour=behaviour, measurement_configuration=["CONTINUOUS"],
    )


def make_group(world, peer: OscpPeer, *, group_id: str = "site-ams-042", charge_points: int = 3,
               max_power_w: int = 11_000, peak: str = "60", offpeak: str = "150", fallback: str = "40"
               ) -> CapacityGroup:
    group = CapacityGroup.objects.create(
        peer=peer, group_id=group_id, congestion_point=world.cp_north, offpeak_capacity_kw=Decimal(offpeak),
        peak_capacity_kw=Decimal(peak), fallback_capacity_kw=Decimal(fallback), peak_start=time(17), peak_end=time(21))
    points = [ChargePointFactory(cpo=peer.cpo, connection=world.voltflex_connections[i % 3], max_power_w=max_power_w)
              for i in range(charge_points)]
    group.charge_points.set(points)
    return group


def group_points(group: CapacityGroup) -> list[ChargePoint]:
    return list(group.charge_points.all())


def blocks_per_isp(body: dict[str, Any]) -> dict[datetime, float]:
    """Expand a forecast's blocks into {ISP start (UTC): capacity}, checking they are ISP-aligned and contiguous."""
    per_isp: dict[datetime, float] = {}
    previous_end = None
    for block in body["forecasted_blocks"]:
        start = protocol.parse_oscp_datetime(block["start_time"], field="start_time")
        end = protocol.parse_oscp_datetime(block["end_time"], field="end_time")
        assert isp_time.is_isp_aligned(start) and isp_time.is_isp_aligned(end), block
        assert previous_end is None or start == previous_end, "blocks must be contiguous"
        previous_end = end
        cursor = start
        while cursor < end:
            per_isp[cursor] = block["capacity"]
            cursor += isp_time.ISP
    return per_isp


def local_hour(instant: datetime) -> float:
    local = instant.astimezone(TZ)
    return local.hour + local.minute / 60


def day_before(day: date) -> datetime:
    """Noon the day before `day` (Amsterdam): a 'now' from which the whole day lies ahead."""
    return datetime(day.year, day.month, day.day, 12, tzinfo=TZ) - timedelta(days=1)
