"""OSCP over real HTTP between our Capacity Provider (pytest's live server) and the sandbox Flexibility Provider
(sandbox/oscp.py, same server): registration started by either side, handshake both ways, heartbeats both ways,
forecasts arriving at the FP, measurements and compliance errors arriving at us, and a flaky FP."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest

from aggregator.models import ComplianceError, GroupMeasurement, OscpOutboundMessage, OscpPeer
from aggregator.models.oscp import token_digest
from aggregator.oscp import services as oscp_services
from common import isp as isp_time
from common import time as clock
from common.exceptions import AdapterError
from sandbox import oscp as fp
from tests.peers.oscp.support import (
    blocks_per_isp,
    make_group,
    make_peer,
    send_spy_fixture,  # noqa: F401 - fixture "send_spy"
)

pytestmark = [pytest.mark.django_db(transaction=True)]
Status = OscpOutboundMessage.Status


@pytest.fixture
def cp(live_server, settings):
    settings.PUBLIC_BASE_URL = live_server.url
    return live_server.url


def fp_base(cp_url: str, name: str) -> str:
    return f"{cp_url}/sandbox/oscp/{name}/fp/2.0"


def test_we_register_at_the_fp_then_handshake_and_publish_forecasts(world, cp, send_spy):
    sandbox, token_a = fp.fp_setup(name="cpo-a", base_url=fp_base(cp, "cpo-a"), groups=["site-1"],
                                   heartbeat_interval_s=45)
    peer = make_peer(world, base_url=sandbox.base_url, handshake=OscpPeer.Handshake.NONE, heartbeat_interval=None)
    OscpPeer.objects.filter(pk=peer.pk).update(registration_status=OscpPeer.Registration.NEW, token_for_peer=token_a,
                                               token_from_peer_digest="", peer_required_behaviour=None)
    group = make_group(world, peer, group_id="site-1")
    peer.refresh_from_db()

    oscp_services.peer_register(peer=peer, peer_token=token_a)  # sends after commit (eager Celery: right away)

    peer.refresh_from_db()
    state = fp.fp_get("cpo-a")
    assert peer.registration_status == OscpPeer.Registration.REGISTERED
    assert peer.handshake_status == OscpPeer.Handshake.COMPLETE
    # Tokens: we called with A, gave it B; it answered with C, which we use from now on; A is dead at the FP.
    register = send_spy.to("register")[0]
    assert register.token == token_a
    assert token_digest(state.token_out) == peer.token_from_peer_digest  # B
    assert peer.token_for_peer == state.tokens_in[0] and token_a not in state.tokens_in  # C
    assert state.received[0]["body"]["version_url"] == [{"version": "2.0", "base_url": f"{cp}/oscp/cp/2.0"}]
    # The FP's Register answer carried X-Correlation-ID = our Register's X-Request-ID.
    # (The FP's sent log is in completion order: its inline follow-ups finish inside the Register call.)
    fp_register = next(sent for sent in state.sent if sent["endpoint"] == "register")
    assert fp_register["headers"]["X-Correlation-ID"] == register.request_id
    # Handshake: ours to the FP, its acknowledge back with its required behaviour (heartbeat every 45 s).
    handshake = send_spy.to("handshake")[0]
    assert handshake.token == peer.token_for_peer
    assert state.cp_required_behaviour == handshake.body["required_behaviour"]
    ack = next(sent for sent in state.sent if sent["endpoint"] == "handshake_acknowledge")
    assert ack["headers"]["X-Correlation-ID"] == handshake.request_id
    assert peer.heartbeat_interval_s == 45
    # Forecasts for today and tomorrow reached the FP.
    today = isp_time.market_day_of(clock.now())
    assert set(state.forecasts) == {"site-1|CONSUMPTION", "site-1|FALLBACK_CONSUMPTION"}
    received = [r for r in state.received if r["endpoint"] == "update_group_capacity_forecast"]
    assert len(received) == 4
    tomorrow_forecast = blocks_per_isp(state.forecasts["site-1|CONSUMPTION"])
    assert len(tomorrow_forecast) == isp_time.isp_count(today + timedelta(days=1))
    assert OscpOutboundMessage.objects.filter(group=group).exclude(status=Status.SENT).count() == 0


def test_the_fp_registers_at_us_and_both_sides_handshake(world, cp, send_spy):
    sandbox, _ = fp.fp_setup(name="cpo-b", base_url=fp_base(cp, "cpo-b"))
    peer = make_peer(world, base_url="", handshake=OscpPeer.Handshake.NONE, heartbeat_interval=None)
    OscpPeer.objects.filter(pk=peer.pk).update(registration_status=OscpPeer.Registration.NEW, token_for_peer="",
                                               token_from_peer_digest="")
    token_a = oscp_services.peer_initial_token_issue(peer=peer)

    assert fp.fp_register_at_cp("cpo-b", cp_base_url=f"{cp}/oscp/cp/2.0", cp_token=token_a) == 204

    peer.refresh_from_db()
    state = fp.fp_get("cpo-b")
    assert peer.registration_status == OscpPeer.Registration.REGISTERED and peer.base_url == sandbox.base_url
    assert peer.initial_token_digest == ""  # token A is dead once our Register was delivered
    assert token_digest(state.token_out) == peer.token_from_peer_digest
    ours = send_spy.to("register")[0]
    fp_register = next(sent for sent in state.sent if sent["endpoint"] == "register")
    assert ours.correlation_id == fp_register["headers"]["X-Request-ID"]
    assert peer.handshake_status == OscpPeer.Handshake.COMPLETE  # we handshook after registering
    with pytest.raises(AdapterError) as refused:
        fp._post("cpo-b", "heartbeat", {"offline_mode_at": "2030-01-01T00:00:00Z"}, token=token_a)
    assert refused.value.status_code == 401

    # The FP handshakes too: we store what it asks and acknowledge with X-Correlation-ID = its X-Request-ID.
    assert fp.fp_handshake("cpo-b") == 204
    peer.refresh_from_db()
    assert peer.peer_required_behaviour == state.required_behaviour
    handshake_request_id = fp.fp_get("cpo-b").sent[-1]["headers"]["X-Request-ID"]
    ack = send_spy.to("handshake_acknowledge")[-1]
    assert ack.correlation_id == handshake_request_id
    assert fp.fp_get("cpo-b").received[-1]["correlation_id"] == handshake_request_id


def test_heartbeats_measurements_and_compliance_errors_flow_both_ways(world, cp, send_spy):
    sandbox, token_a = fp.fp_setup(name="cpo-c", base_url=fp_base(cp, "cpo-c"), heartbeat_interval_s=20)
    peer = make_peer(world, base_url=sandbox.base_url, handshake=OscpPeer.Handshake.NONE, heartbeat_interval=None)
    OscpPeer.objects.filter(pk=peer.pk).update(registration_status=OscpPeer.Registration.NEW, token_for_peer=token_a,
                                               token_from_peer_digest="")
    make_group(world, peer, group_id="site-c")
    peer.refresh_from_db()
    oscp_services.peer_register(peer=peer, peer_token=token_a)

    assert fp.fp_send_heartbeat("cpo-c", interval_s=20) == 204
    peer.refresh_from_db()
    assert peer.is_peer_online
    assert oscp_services.heartbeats_due_send() == 1  # every 20 s, as the FP asked
    assert fp.fp_get("cpo-c").cp_offline_mode_at is not None

    now = clock.now()
    assert fp.fp_send_measurements("cpo-c", group_id="site-c",
                                   readings=[(now - timedelta(minutes=15), 10.0), (now, 12.5)]) == 204
    assert sorted(GroupMeasurement.objects.values_list("value_kwh", flat=True)) == [10, 12.5]

    forecast = OscpOutboundMessage.objects.filter(group__group_id="site-c", status=Status.SENT).first()
    assert fp.fp_send_compliance_error("cpo-c", message="charger offline", forecast_request_id=str(forecast.pk)) == 204
    error = ComplianceError.objects.get()
    assert error.forecast == forecast and error.group.group_id == "site-c"


def test_a_flaky_fp_gets_every_forecast_in_the_end(world, cp, send_spy):
    sandbox, token_a = fp.fp_setup(name="cpo-d", base_url=fp_base(cp, "cpo-d"))
    peer = make_peer(world, base_url=sandbox.base_url, handshake=OscpPeer.Handshake.NONE, heartbeat_interval=None)
    OscpPeer.objects.filter(pk=peer.pk).update(registration_status=OscpPeer.Registration.NEW, token_for_peer=token_a,
                                               token_from_peer_digest="")
    group = make_group(world, peer, group_id="site-d")
    peer.refresh_from_db()
    fp.fp_fault_set("cpo-d", status=500, count=1)  # the first Register fails: HTTP 500
    oscp_services.peer_register(peer=peer, peer_token=token_a)
    register = OscpOutboundMessage.objects.get(endpoint="register")
    assert register.status == Status.PENDING and register.http_status == 500
    with mock.patch("common.time.now", return_value=register.next_attempt_at):
        oscp_services.outbox_sweep()
    peer.refresh_from_db()
    assert peer.handshake_status == OscpPeer.Handshake.COMPLETE

    # Now the FP answers garbage, then hangs, then recovers: the day-ahead forecast still arrives, once.
    day = isp_time.market_day_of(clock.now()) + timedelta(days=2)
    fp.fp_fault_set("cpo-d", mode="garbage", count=1)
    from aggregator import oscp_dispatch

    messages = oscp_dispatch.group_forecast_queue(group=group, day=day)
    statuses = {OscpOutboundMessage.objects.get(pk=m.pk).status for m in messages}
    assert Status.PENDING in statuses  # the one that met the fault
    instant = clock.now()
    for _ in range(10):
        pending = OscpOutboundMessage.objects.filter(status=Status.PENDING)
        if not pending.exists():
            break
        instant = max([instant] + [m.next_attempt_at for m in pending if m.next_attempt_at])
        with mock.patch("common.time.now", return_value=instant):
            oscp_services.outbox_sweep()
    assert {OscpOutboundMessage.objects.get(pk=m.pk).status for m in messages} == {Status.SENT}
    received = [r for r in fp.fp_get("cpo-d").received if r["endpoint"] == "update_group_capacity_forecast"
                and r["body"]["forecasted_blocks"][0]["start_time"].startswith(
                    isp_time.day_start(day).strftime("%Y-%m-%d"))]
    assert len(received) == 2  # CONSUMPTION and FALLBACK_CONSUMPTION, each delivered exactly once


def test_a_forecast_for_an_unknown_group_is_refused_for_good(world, cp, send_spy):
    sandbox, token_a = fp.fp_setup(name="cpo-e", base_url=fp_base(cp, "cpo-e"), groups=["known"])
    peer = make_peer(world, base_url=sandbox.base_url, handshake=OscpPeer.Handshake.NONE, heartbeat_interval=None)
    OscpPeer.objects.filter(pk=peer.pk).update(registration_status=OscpPeer.Registration.NEW, token_for_peer=token_a,
                                               token_from_peer_digest="")
    make_group(world, peer, group_id="not-agreed")
    peer.refresh_from_db()
    oscp_services.peer_register(peer=peer, peer_token=token_a)
    forecasts = OscpOutboundMessage.objects.filter(group__group_id="not-agreed")
    assert forecasts.count() == 4 and {m.status for m in forecasts} == {Status.FAILED}
    assert {m.http_status for m in forecasts} == {400}


