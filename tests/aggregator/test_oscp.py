"""OSCP 2.0 as Capacity Provider: capacity forecasts (Flexpower profile, orders, DST days), what peers send us
(measurements, compliance errors, adjustment requests, heartbeats, bad tokens and bodies), and the outbox
(retries with backoff, dead letter, permanent refusals, supersede, claim, sweep). Every body we send is held
against the OSCP 2.0 JSON schemas by the `send_spy` fixture."""

from __future__ import annotations

import json
import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.test import Client
from django.urls import reverse

from aggregator import oscp_dispatch, services
from aggregator.adapters import oscp as protocol
from aggregator.models import (
    CapacityAdjustment,
    ChargingProfileCommand,
    ComplianceError,
    GroupMeasurement,
    OscpInboundMessage,
    OscpOutboundMessage,
    OscpPeer,
    SessionSchedule,
)
from aggregator.models.operators import DispatchMode
from aggregator.models.oscp import token_digest
from aggregator.oscp import services as oscp_services
from common import isp as isp_time
from market import services as market_services
from market.models import FlexOrder
from market.services import OfferOptionInput
from tests.builders import make_request
from tests.factories import ChargingSessionFactory
from tests.peers.oscp.schemas import assert_valid, require_schemas, schema_errors
from tests.peers.oscp.support import (
    TOKEN_FOR_PEER,
    TOKEN_FROM_PEER,
    TZ,
    blocks_per_isp,
    day_before,
    fp_stub_fixture,  # noqa: F401 - fixture "fp_stub"
    make_group,
    make_peer,
    send_spy_fixture,  # noqa: F401 - fixture "send_spy"
)

Message = OscpOutboundMessage
Status = OscpOutboundMessage.Status
FORECAST = "update_group_capacity_forecast"
pytestmark = pytest.mark.django_db


def forecasts(group, forecast_type: str = "CONSUMPTION") -> list[Message]:
    return [m for m in Message.objects.filter(group=group, endpoint=FORECAST).order_by("created_at")
            if m.body["type"] == forecast_type]


def at(instant: datetime):
    return mock.patch("common.time.now", return_value=instant)


# --- schemas ------------------------------------------------------------------------------------------


def test_the_schema_check_itself_rejects_what_oscp_forbids():
    """The validator the tests rely on does fail: a pyoscp-style EUR unit and a date-time without zone."""
    require_schemas()
    errors = schema_errors(FORECAST, {"group_id": "g", "type": "CONSUMPTION", "forecasted_blocks": [
        {"capacity": 1, "phase": "ALL", "unit": "EUR", "start_time": "2026-03-01T17:00:00Z",
         "end_time": "2026-03-01 17:15:00"}]})
    assert len(errors) == 2


def test_every_kind_of_body_we_build_is_valid_oscp(world, settings):
    require_schemas()
    peer = make_peer(world)
    assert_valid("register", protocol.register_body(token="t" * 32, base_url=oscp_services.cp_base_url()))
    assert_valid("handshake", {"required_behaviour": oscp_services.our_required_behaviour(peer)})
    assert_valid("handshake_acknowledge", {"required_behaviour": oscp_services.our_required_behaviour(peer)})
    assert_valid("heartbeat", protocol.heartbeat_body(offline_mode_at=datetime(2026, 3, 1, 12, tzinfo=TZ)))
    group = make_group(world, peer)
    day = date(2026, 3, 2)
    with at(day_before(day)):
        messages = oscp_dispatch.group_forecast_queue(group=group, day=day)
    assert len(messages) == 2
    for message in messages:
        assert_valid(FORECAST, message.body)


# --- forecasts from the Flexpower profile ---------------------------------------------------------------


@pytest.mark.parametrize("day, isps", [(date(2026, 3, 2), 96), (date(2026, 10, 25), 100), (date(2027, 3, 28), 92)],
                         ids=["normal", "autumn-dst", "spring-dst"])
def test_the_profile_forecast_is_lower_from_17_to_21_local_on_every_day(world, day, isps):
    group = make_group(world, make_peer(world), peak="60", offpeak="150")
    with at(day_before(day)):
        oscp_dispatch.group_forecast_queue(group=group, day=day)
    (consumption,) = forecasts(group)
    per_isp = blocks_per_isp(consumption.body)
    assert len(per_isp) == isps == isp_time.isp_count(day)
    assert min(per_isp) == isp_time.day_start(day) and max(per_isp) == isp_time.day_end(day) - isp_time.ISP
    for start, capacity in per_isp.items():
        local = start.astimezone(TZ)
        assert capacity == (60 if 17 <= local.hour < 21 else 150), local
    assert sum(1 for capacity in per_isp.values() if capacity == 60) == 16
    # Blocks are merged: offpeak, peak, offpeak.
    assert [block["capacity"] for block in consumption.body["forecasted_blocks"]] == [150, 60, 150]
    assert consumption.body["forecasted_blocks"][1]["start_time"] == \
        isp_time.isp_start(day, isps - 27).strftime("%Y-%m-%dT%H:%M:%SZ")  # 17:00 local: 7 h before midnight
    (fallback,) = forecasts(group, "FALLBACK_CONSUMPTION")
    assert [block["capacity"] for block in fallback.body["forecasted_blocks"]] == [40]


def test_only_isps_not_yet_over_are_sent_and_nothing_before_the_handshake(world):
    day = date(2026, 3, 2)
    group = make_group(world, make_peer(world))
    with at(datetime(2026, 3, 2, 18, 7, tzinfo=TZ)):
        oscp_dispatch.group_forecast_queue(group=group, day=day)
    per_isp = blocks_per_isp(forecasts(group)[0].body)
    assert min(per_isp) == datetime(2026, 3, 2, 18, 0, tzinfo=TZ)  # the running ISP, not the past ones
    assert len(per_isp) == 24  # 18:00 .. 24:00

    quiet = make_group(world, make_peer(world, handshake=OscpPeer.Handshake.NONE), group_id="other")
    with at(day_before(day)):
        assert oscp_dispatch.group_forecast_queue(group=quiet, day=day) == []


def test_a_newer_forecast_supersedes_an_unsent_one_for_the_same_group_type_and_day(world):
    day = date(2026, 3, 2)
    group = make_group(world, make_peer(world))
    with at(day_before(day)), mock.patch("aggregator.oscp.services._enqueue_send"):
        first = oscp_dispatch.group_forecast_queue(group=group, day=day)
        second = oscp_dispatch.group_forecast_queue(group=group, day=day)
        other_day = oscp_dispatch.group_forecast_queue(group=group, day=day + timedelta(days=1))
    assert {Message.objects.get(pk=m.pk).status for m in first} == {Status.SUPERSEDED}
    assert {Message.objects.get(pk=m.pk).status for m in second + other_day} == {Status.PENDING}


# --- forecasts from orders ------------------------------------------------------------------------------


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


def place_order(world, day: date, group, capture) -> FlexOrder:
    """Evening cars on the group's charge points, a DSO request for the evening answered with our proposal, and
    the DSO's order (placed, not yet dispatched)."""
    morning = day + timedelta(days=1)
    specs = [(local(day, 17), local(morning, 7), "20"), (local(day, 17, 40), local(morning, 6, 30), "30"),
             (local(day, 18, 7), local(morning, 8), "12")]
    for point, (arrival, departure, kwh) in zip(group.charge_points.all(), specs, strict=True):
        ChargingSessionFactory(charge_point=point, arrival_at=arrival, expected_departure_at=departure,
                               energy_requested_kwh=Decimal(kwh), max_power_w=point.max_power_w)
    request = make_request(dso=world.gridco, point=world.cp_north, day=day, reduction_w=15_000)
    proposal = services.flex_offer_propose(aggregator=world.voltflex, flex_request=request)
    assert not proposal.is_empty
    market_services.d_prognosis_submit(aggregator=world.voltflex, congestion_point=world.cp_north, period=day,
                                       isps=proposal.d_prognosis_isps)
    offer = market_services.flex_offer_submit(
        aggregator=world.voltflex, congestion_point=world.cp_north, period=day,
        options=[OfferOptionInput(option_reference="1", price_eur=proposal.price_eur, isps=proposal.offer_isps,
                                  min_activation_factor=proposal.min_activation_factor)],
        expires_at=proposal.expires_at, flex_request=request)
    with capture(execute=False):
        return market_services.flex_offer_accept(flex_offer=offer, dso=world.gridco)


@pytest.mark.parametrize("mode, ocpi_commands, dst_day", [
    (DispatchMode.OSCP, False, None), (DispatchMode.OCPI_OSCP, True, None),
    (DispatchMode.OSCP, False, date(2027, 10, 31)), (DispatchMode.OSCP, False, date(2027, 3, 28)),
], ids=["oscp", "ocpi+oscp", "autumn-dst-100-isps", "spring-dst-92-isps"])
def test_a_dispatched_order_sends_the_group_what_its_schedules_allow_in_ordered_isps(
        world, tomorrow, django_capture_on_commit_callbacks, mode, ocpi_commands, dst_day):
    tomorrow = dst_day or tomorrow
    peer = make_peer(world, mode=mode)
    group = make_group(world, peer, peak="30", offpeak="150")
    order = place_order(world, tomorrow, group, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        services.flex_order_dispatch(flex_order=order)

    (consumption,) = forecasts(group)
    assert consumption.flex_order_id == order.pk
    per_isp = blocks_per_isp(consumption.body)
    assert len(per_isp) == isp_time.isp_count(tomorrow)  # the whole day ahead: 96, or 100 / 92 on DST days
    schedules = list(SessionSchedule.objects.filter(is_current=True, session__charge_point__capacity_groups=group))
    assert len(schedules) == 3
    ordered = {row.isp for row in order.isps.all() if row.power_w < 0}
    assert ordered
    for slot in isp_time.isp_slots(tomorrow):
        if slot.end <= isp_time.day_start(tomorrow):
            continue
        planned_kw = sum(s.slot_power_w[int((slot.start - s.start) / isp_time.ISP)] for s in schedules) / 1000
        profile = 30 if 17 <= slot.local_start.hour < 21 else 150
        expected = round(min(profile, planned_kw), 3) if slot.index in ordered else profile
        assert per_isp[slot.start] == pytest.approx(expected, abs=1e-6), slot.label
    # The order is delivered: in each ordered ISP the group's limit is below the uncontrolled profile.
    assert all(per_isp[isp_time.isp_start(tomorrow, isp)] <= 30 for isp in ordered)
    assert ChargingProfileCommand.objects.filter(flex_order=order).exists() is ocpi_commands


def test_an_order_for_a_cpo_in_ocpi_mode_sends_no_oscp(world, tomorrow, django_capture_on_commit_callbacks):
    group = make_group(world, make_peer(world, mode=DispatchMode.OCPI))
    order = place_order(world, tomorrow, group, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        services.flex_order_dispatch(flex_order=order)
    assert not Message.objects.exists()
    assert ChargingProfileCommand.objects.filter(flex_order=order).count() == 3


def test_a_dispatch_rolled_back_leaves_no_forecast(world, tomorrow, django_capture_on_commit_callbacks):
    """Outbox and decision share one transaction: no dispatch, no forecast."""
    group = make_group(world, make_peer(world))
    order = place_order(world, tomorrow, group, django_capture_on_commit_callbacks)
    with mock.patch("market.services.flex_order_mark_dispatched", side_effect=RuntimeError("boom")), \
            pytest.raises(RuntimeError):
        services.flex_order_dispatch(flex_order=order)
    assert not Message.objects.exists()


# --- inbound: authentication and bodies ---------------------------------------------------------------


def post(path: str, body: object, *, token: str | None = TOKEN_FROM_PEER, request_id: str | None = "req-1",
         correlation_id: str | None = None, method: str = "post"):
    headers = {}
    if token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Token {token}"
    if request_id is not None:
        headers["HTTP_X_REQUEST_ID"] = request_id
    if correlation_id:
        headers["HTTP_X_CORRELATION_ID"] = correlation_id
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return getattr(Client(), method)(path, data=data, content_type="application/json", **headers)


MEASUREMENTS_URL = "/oscp/cp/2.0/update_group_measurements"


def reading(value: float, when: str, unit: str = "KWH") -> dict:
    return {"value": value, "phase": "ALL", "unit": unit, "direction": "IMPORT", "measure_time": when}


def test_the_routes_are_where_the_brief_puts_them():
    assert reverse("oscp:register") == "/oscp/cp/2.0/register"
    assert reverse("oscp:handshake-acknowledgment") == "/oscp/cp/2.0/handshake_acknowledgment"


@pytest.mark.parametrize("token, status", [(None, 401), ("nobody-issued-this", 401)])
def test_a_missing_or_unknown_token_is_401(world, token, status):
    make_peer(world)
    response = post("/oscp/cp/2.0/heartbeat", {"offline_mode_at": "2026-03-01T12:00:00Z"}, token=token)
    assert response.status_code == status
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["message"]


def test_the_registration_token_opens_only_register(world):
    peer = make_peer(world)
    OscpPeer.objects.filter(pk=peer.pk).update(initial_token_digest=token_digest("token-a-out-of-band"))
    response = post("/oscp/cp/2.0/heartbeat", {"offline_mode_at": "2026-03-01T12:00:00Z"}, token="token-a-out-of-band")
    assert response.status_code == 403


def test_a_request_without_x_request_id_is_400(world):
    make_peer(world)
    response = post("/oscp/cp/2.0/heartbeat", {"offline_mode_at": "2026-03-01T12:00:00Z"}, request_id=None)
    assert response.status_code == 400
    assert "X-Request-ID" in response.json()["message"]


@pytest.mark.parametrize("body, reason", [
    ("{not json", "not valid JSON"),
    ({"group_id": "site-ams-042"}, "measurements: required"),
    ({"group_id": "site-ams-042", "measurements": [reading(1.0, "2026-03-01T12:00:00Z", unit="MWH")]},
     "measurements[0].unit: 'MWH' is not one of WH, KWH"),
    ({"group_id": "site-ams-042", "measurements": [reading(1.0, "2026-03-01 12:00:00")]},
     "measurements[0].measure_time: expected an RFC 3339 date-time"),
    ({"group_id": "site-ams-042", "measurements": [{**reading(1.0, "2026-03-01T12:00:00Z"), "value": "1"}]},
     "measurements[0].value: expected a number"),
])
def test_a_bad_body_is_400_with_the_reason(world, body, reason):
    make_group(world, make_peer(world))
    response = post(MEASUREMENTS_URL, body)
    assert response.status_code == 400
    assert reason in response.json()["message"]
    assert reason in response["X-Error-Message"]
    assert not OscpInboundMessage.objects.exists()  # refused requests are not logged as processed


def test_a_forecast_unit_outside_oscp_is_refused(world):
    """pyoscp allows EUR, EUR/KWH in ForecastedBlock.unit; OSCP does not."""
    make_group(world, make_peer(world))
    block = {"capacity": 10, "phase": "ALL", "unit": "EUR", "start_time": "2026-03-02T10:00:00Z",
             "end_time": "2026-03-02T10:15:00Z"}
    response = post("/oscp/cp/2.0/adjust_group_capacity_forecast",
                    {"group_id": "site-ams-042", "type": "CONSUMPTION", "forecasted_blocks": [block]})
    assert response.status_code == 400
    assert "unit: 'EUR'" in response.json()["message"]


def test_a_wrong_method_is_405(world):
    make_peer(world)
    assert Client().get("/oscp/cp/2.0/heartbeat", HTTP_AUTHORIZATION=f"Token {TOKEN_FROM_PEER}").status_code == 405


def test_capacity_messages_need_a_handshake_and_a_group_of_the_peer(world):
    make_group(world, make_peer(world, handshake=OscpPeer.Handshake.NONE))
    body = {"group_id": "site-ams-042", "measurements": [reading(1.0, "2026-03-01T12:00:00Z")]}
    assert post(MEASUREMENTS_URL, body).status_code == 403
    OscpPeer.objects.update(handshake_status=OscpPeer.Handshake.COMPLETE)
    assert post(MEASUREMENTS_URL, {**body, "group_id": "someone-elses"}, request_id="r2").status_code == 403
    assert post(MEASUREMENTS_URL, body, request_id="r3").status_code == 204


# --- inbound: measurements, compliance errors, heartbeats --------------------------------------------------


def test_group_measurements_are_stored_once_and_normalised_to_kwh(world):
    group = make_group(world, make_peer(world))
    body = {"group_id": "site-ams-042", "measurements": [
        reading(1500.5, "2026-03-01T12:00:00Z", unit="WH"),
        {**reading(3.25, "2026-03-01T12:15:00+01:00"), "energy_type": "FLEXIBLE",
         "initial_measure_time": "2026-03-01T08:00:00Z"},
    ]}
    response = post(MEASUREMENTS_URL, body, request_id="m-1")
    assert response.status_code == 204 and response.content == b""
    assert post(MEASUREMENTS_URL, body, request_id="m-1").status_code == 204  # the peer's retry
    assert post(MEASUREMENTS_URL, body, request_id="m-2").status_code == 204  # same readings, new message
    rows = {row.measure_time: row for row in GroupMeasurement.objects.filter(group=group)}
    assert len(rows) == 2
    first = rows[datetime(2026, 3, 1, 12, tzinfo=TZ).replace(tzinfo=None).replace(tzinfo=isp_time.UTC)]
    assert first.value_kwh == Decimal("1.5005") and first.unit == "WH" and first.energy_type == "TOTAL"
    second = rows[datetime(2026, 3, 1, 11, 15, tzinfo=isp_time.UTC)]
    assert second.energy_type == "FLEXIBLE" and second.initial_measure_time == datetime(2026, 3, 1, 8,
                                                                                       tzinfo=isp_time.UTC)


def test_a_compliance_error_is_stored_against_the_forecast_it_names_and_alerts(world, caplog):
    group = make_group(world, make_peer(world))
    with at(day_before(date(2026, 3, 2))), mock.patch("aggregator.oscp.services._enqueue_send"):
        forecast, _ = oscp_dispatch.group_forecast_queue(group=group, day=date(2026, 3, 2))
    blocks = forecast.body["forecasted_blocks"][1:2]
    with caplog.at_level(logging.ERROR, logger="aggregator.oscp.services"):
        response = post("/oscp/cp/2.0/group_capacity_compliance_error",
                        {"message": "site transformer maintenance", "forecasted_blocks": blocks},
                        correlation_id=str(forecast.pk))
    assert response.status_code == 204
    error = ComplianceError.objects.get()
    assert error.forecast == forecast and error.group == group and error.forecasted_blocks == blocks
    assert error.acknowledged_at is None
    assert "site transformer maintenance" in caplog.text
    # Without a correlation id it is still kept (group unknown).
    assert post("/oscp/cp/2.0/group_capacity_compliance_error", {"message": "cannot comply"},
                request_id="c-2").status_code == 204
    assert ComplianceError.objects.filter(group__isnull=True).count() == 1


def test_a_heartbeat_keeps_the_peer_online_and_its_silence_raises_one_alert(world, caplog):
    peer = make_peer(world)
    now = datetime(2026, 3, 1, 12, tzinfo=TZ)
    with at(now):
        assert post("/oscp/cp/2.0/heartbeat", {"offline_mode_at": "2026-03-01T11:02:00Z"}).status_code == 204
        peer.refresh_from_db()
        assert peer.is_peer_online and peer.last_heartbeat_received_at == now
        assert oscp_services.peers_offline_check() == []
    with at(now + timedelta(minutes=3)), caplog.at_level(logging.ERROR):
        assert [p.pk for p in oscp_services.peers_offline_check()] == [peer.pk]
        assert oscp_services.peers_offline_check() == []  # alerted once
    assert "is offline" in caplog.text


def test_heartbeats_go_out_at_the_interval_the_peer_asked_for(world, fp_stub, send_spy,
                                                               django_capture_on_commit_callbacks):
    fp_stub.respond("/fp/heartbeat", status=204)
    make_peer(world, base_url=fp_stub.url("/fp"), heartbeat_interval=30)
    silent = make_peer(world, heartbeat_interval=None)
    now = datetime(2026, 3, 1, 12, tzinfo=TZ)
    with at(now), django_capture_on_commit_callbacks(execute=True):
        assert oscp_services.heartbeats_due_send() == 1
    (sent,) = fp_stub.requests_to("/fp/heartbeat")
    assert sent.json() == {"offline_mode_at": "2026-03-01T11:01:00Z"}  # now + 2 x 30 s, UTC
    assert sent.headers["authorization"] == f"Token {TOKEN_FOR_PEER}" and sent.headers["x-request-id"]
    with at(now + timedelta(seconds=29)):
        assert oscp_services.heartbeats_due_send() == 0
    with at(now + timedelta(seconds=30)), django_capture_on_commit_callbacks(execute=True):
        assert oscp_services.heartbeats_due_send() == 1
    assert not Message.objects.filter(peer=silent).exists()
    assert len(send_spy.to("heartbeat")) == 2


# --- adjustment requests ----------------------------------------------------------------------------------


def adjust(group_id: str, start: datetime, end: datetime, capacity: float, *, request_id: str = "adj-1",
           unit: str = "KW"):
    block = {"capacity": capacity, "phase": "ALL", "unit": unit,
             "start_time": protocol.oscp_datetime(start), "end_time": protocol.oscp_datetime(end)}
    return post("/oscp/cp/2.0/adjust_group_capacity_forecast",
                {"group_id": group_id, "type": "CONSUMPTION", "forecasted_blocks": [block]}, request_id=request_id)


def test_an_adjustment_is_granted_where_the_point_has_room_up_to_the_hardware(world):
    day = date(2026, 3, 2)
    group = make_group(world, make_peer(world), peak="20", offpeak="25", charge_points=3, max_power_w=11_000)
    with at(day_before(day)), mock.patch("aggregator.oscp.services._enqueue_send"):
        response = adjust("site-ams-042", local(day, 17), local(day, 18), 40)
        assert response.status_code == 204
        adjustment = CapacityAdjustment.objects.get()
        assert adjustment.decision == CapacityAdjustment.Decision.PARTIAL  # 33 kW of chargers, not 40
        answer = adjustment.response
        assert answer.correlation_id == "adj-1" and answer.endpoint == FORECAST
        assert set(blocks_per_isp(answer.body).values()) == {33.0}
        assert len(blocks_per_isp(answer.body)) == 4
        # Later forecasts of that day keep the grant.
        oscp_dispatch.group_forecast_queue(group=group, day=day)
    per_isp = blocks_per_isp(forecasts(group)[-1].body)
    assert per_isp[local(day, 17).astimezone(isp_time.UTC)] == 33.0
    assert per_isp[local(day, 18).astimezone(isp_time.UTC)] == 20.0


def test_an_adjustment_is_refused_where_the_point_is_congested(world, tomorrow, django_capture_on_commit_callbacks):
    group = make_group(world, make_peer(world), peak="30", offpeak="150")
    order = place_order(world, tomorrow, group, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        services.flex_order_dispatch(flex_order=order)
    ordered = [isp_time.isp_start(tomorrow, row.isp) for row in order.isps.all() if row.power_w < 0]
    in_force = blocks_per_isp(forecasts(group)[-1].body)
    start = max(ordered, key=lambda isp_start: in_force[isp_start])
    current = in_force[start]  # the cars' plan: often 0 kW in the evening (charging moved to the night)
    with mock.patch("aggregator.oscp.services._enqueue_send"):
        assert adjust("site-ams-042", start, start + isp_time.ISP, current + 20).status_code == 204
    adjustment = CapacityAdjustment.objects.get()
    assert adjustment.decision == CapacityAdjustment.Decision.DENIED
    assert blocks_per_isp(adjustment.response.body) == {start: current}
    # Lowering is always granted (here in the night, where the profile allows 150 kW).
    night = local(tomorrow, 3)
    with mock.patch("aggregator.oscp.services._enqueue_send"):
        assert adjust("site-ams-042", night, night + timedelta(hours=1), 100, request_id="adj-2").status_code == 204
    assert CapacityAdjustment.objects.get(inbound__request_id="adj-2").decision == CapacityAdjustment.Decision.GRANTED


# --- the outbox -----------------------------------------------------------------------------------------------


@pytest.fixture
def queued_forecast(world, fp_stub):
    """A CONSUMPTION forecast for 2026-03-02 queued to a peer served by the stub server (not sent yet)."""
    group = make_group(world, make_peer(world, base_url=fp_stub.url("/fp")))
    with at(day_before(date(2026, 3, 2))), mock.patch("aggregator.oscp.services._enqueue_send"):
        consumption, fallback = oscp_dispatch.group_forecast_queue(group=group, day=date(2026, 3, 2))
    Message.objects.filter(pk=fallback.pk).update(status=Status.SENT)  # these tests follow one message
    return consumption


NOW = day_before(date(2026, 3, 2))


def test_a_forecast_is_sent_with_the_headers_of_the_brief(queued_forecast, fp_stub, send_spy):
    fp_stub.respond("/fp/update_group_capacity_forecast", status=204)
    with at(NOW):
        message = oscp_services.message_send(message_id=queued_forecast.pk)
    assert message.status == Status.SENT and message.http_status == 204 and message.attempts == 1
    (request,) = fp_stub.requests
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Token {TOKEN_FOR_PEER}"  # raw token, no Base64
    assert request.headers["x-request-id"] == str(message.pk)
    assert request.headers["content-type"] == "application/json"
    assert request.json() == queued_forecast.body
    assert len(send_spy.to(FORECAST)) == 1


def test_sending_twice_sends_once(queued_forecast, fp_stub):
    fp_stub.respond("/fp/update_group_capacity_forecast", status=204)
    with at(NOW):
        oscp_services.message_send(message_id=queued_forecast.pk)
        again = oscp_services.message_send(message_id=queued_forecast.pk)
    assert again.status == Status.SENT and len(fp_stub.requests) == 1


@pytest.mark.parametrize("fault", ["500", "timeout", "garbage", "down"])
def test_a_transient_failure_backs_off_and_is_retried_by_the_sweep(queued_forecast, fp_stub, settings, fault):
    settings.HTTP_READ_TIMEOUT_S = 0.2
    path = "/fp/update_group_capacity_forecast"
    if fault == "500":
        fp_stub.respond(path, status=500, body="boom")
    elif fault == "timeout":
        fp_stub.respond(path, status=204, delay_s=1.0)
    elif fault == "garbage":
        fp_stub.respond(path, status=302, body="<html>moved</html>")
    else:
        OscpPeer.objects.update(base_url="http://127.0.0.1:9/fp")  # nothing listens on the discard port
    with at(NOW):
        message = oscp_services.message_send(message_id=queued_forecast.pk)
        assert message.status == Status.PENDING and message.attempts == 1 and message.last_error
        assert NOW < message.next_attempt_at <= NOW + timedelta(seconds=2)  # attempt 1: up to 2 s, jittered
        with mock.patch("aggregator.oscp.services._enqueue_send") as enqueue:
            assert oscp_services.outbox_sweep() == 0  # not due yet
    OscpPeer.objects.update(base_url=fp_stub.url("/fp"))
    fp_stub.respond(path, status=204)
    with at(message.next_attempt_at):
        assert oscp_services.outbox_sweep() == 1  # eager: sends at once
    queued_forecast.refresh_from_db()
    assert queued_forecast.status == Status.SENT and queued_forecast.attempts == 2
    assert enqueue.call_count == 0


def test_retries_end_in_a_dead_letter_that_the_operator_can_retry(queued_forecast, fp_stub, settings, admin_client,
                                                                   django_capture_on_commit_callbacks):
    settings.OSCP_MAX_SEND_ATTEMPTS = 3
    fp_stub.respond("/fp/update_group_capacity_forecast", status=503)
    clock_at = NOW
    for attempt in range(1, 4):
        with at(clock_at):
            message = oscp_services.message_send(message_id=queued_forecast.pk)
        assert message.attempts == attempt
        clock_at = message.next_attempt_at or clock_at
    assert message.status == Status.DEAD_LETTER and message.next_attempt_at is None
    assert len(fp_stub.requests) == 3

    fp_stub.respond("/fp/update_group_capacity_forecast", status=204)
    changelist = reverse("admin:aggregator_oscpoutboundmessage_changelist")
    assert admin_client.get(changelist + "?status=DEAD_LETTER").status_code == 200
    with at(NOW), django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(changelist, {"action": "retry_messages", "_selected_action": [message.pk]})
    assert response.status_code == 302
    message.refresh_from_db()
    assert message.status == Status.SENT and message.attempts == 1


def test_a_permanent_refusal_fails_at_once(queued_forecast, fp_stub):
    fp_stub.respond("/fp/update_group_capacity_forecast", status=400, json={"message": "unknown group_id"})
    with at(NOW):
        message = oscp_services.message_send(message_id=queued_forecast.pk)
        assert oscp_services.outbox_sweep() == 0
    assert message.status == Status.FAILED and message.http_status == 400
    assert "unknown group_id" in message.last_error and len(fp_stub.requests) == 1


def test_an_older_forecast_never_lands_after_a_newer_one(queued_forecast, fp_stub):
    """A retried older forecast whose newer replacement exists is superseded at send time, not sent."""
    fp_stub.respond("/fp/update_group_capacity_forecast", status=500)
    with at(NOW):
        oscp_services.message_send(message_id=queued_forecast.pk)  # transient failure: PENDING again
    group = queued_forecast.group
    with at(NOW), mock.patch("aggregator.oscp.services._enqueue_send"):
        newer, _ = oscp_dispatch.group_forecast_queue(group=group, day=date(2026, 3, 2))
    queued_forecast.refresh_from_db()
    assert queued_forecast.status == Status.SUPERSEDED  # superseded while waiting for its retry
    Message.objects.filter(pk=queued_forecast.pk).update(status=Status.PENDING)  # as if a retry raced the new one
    fp_stub.respond("/fp/update_group_capacity_forecast", status=204)
    with at(NOW + timedelta(minutes=10)):
        assert oscp_services.message_send(message_id=queued_forecast.pk).status == Status.SUPERSEDED
        assert oscp_services.message_send(message_id=newer.pk).status == Status.SENT
    assert len(fp_stub.requests_to("/fp/update_group_capacity_forecast")) == 2  # first failure + newer


def test_a_message_whose_worker_died_is_handed_out_again(queued_forecast, fp_stub):
    fp_stub.respond("/fp/update_group_capacity_forecast", status=204)
    Message.objects.filter(pk=queued_forecast.pk).update(status=Status.SENDING, attempts=1, updated_at=NOW)
    with at(NOW + timedelta(minutes=1)):
        assert oscp_services.outbox_sweep() == 0  # could still be in flight
    with at(NOW + timedelta(minutes=6)):
        assert oscp_services.outbox_sweep() == 1
    queued_forecast.refresh_from_db()
    assert queued_forecast.status == Status.SENT and queued_forecast.attempts == 2
    # Same X-Request-ID as the first try: the peer can tell it is a repeat.
    assert fp_stub.requests[0].headers["x-request-id"] == str(queued_forecast.pk)


def test_a_forecast_whose_blocks_are_all_over_is_not_replayed(queued_forecast, fp_stub):
    with at(datetime(2026, 3, 3, 0, 5, tzinfo=TZ)):
        message = oscp_services.message_send(message_id=queued_forecast.pk)
    assert message.status == Status.EXPIRED and not fp_stub.requests


def test_a_compliance_error_can_be_acknowledged_in_the_admin(world, admin_client):
    peer = make_peer(world)
    assert post("/oscp/cp/2.0/group_capacity_compliance_error", {"message": "cannot comply"}).status_code == 204
    error = ComplianceError.objects.get(peer=peer)
    changelist = reverse("admin:aggregator_complianceerror_changelist")
    page = admin_client.get(changelist + "?acknowledged_at__isnull=True")
    assert b"cannot comply" in page.content
    admin_client.post(changelist, {"action": "acknowledge", "_selected_action": [error.pk]})
    error.refresh_from_db()
    assert error.acknowledged_at is not None


# --- register: update, unregister, no common version ----------------------------------------------------


def test_register_put_changes_our_token_and_the_peer_url(world):
    peer = make_peer(world)
    response = post("/oscp/cp/2.0/register", {"token": "new-token-for-us-to-use",
                                              "version_url": [{"version": "2.0", "base_url": "https://fp.example/v2"}]},
                    method="put")
    assert response.status_code == 204
    peer.refresh_from_db()
    assert peer.token_for_peer == "new-token-for-us-to-use" and peer.base_url == "https://fp.example/v2"


def test_register_delete_unregisters_and_the_old_token_stops_working(world, django_capture_on_commit_callbacks):
    peer = make_peer(world)
    group = make_group(world, peer)
    with at(day_before(date(2026, 3, 2))), django_capture_on_commit_callbacks(execute=False):
        pending = oscp_dispatch.group_forecast_queue(group=group, day=date(2026, 3, 2))
    assert Client().delete("/oscp/cp/2.0/register", HTTP_AUTHORIZATION=f"Token {TOKEN_FROM_PEER}",
                           HTTP_X_REQUEST_ID="bye").status_code == 204
    peer.refresh_from_db()
    assert peer.registration_status == OscpPeer.Registration.UNREGISTERED and peer.token_for_peer == ""
    assert {Message.objects.get(pk=m.pk).status for m in pending} == {Status.SUPERSEDED}
    assert post("/oscp/cp/2.0/heartbeat", {"offline_mode_at": "2026-03-01T12:00:00Z"}).status_code == 401


def test_register_without_a_common_version_is_501(world):
    peer = make_peer(world)
    response = post("/oscp/cp/2.0/register", {"token": "x" * 20,
                                              "version_url": [{"version": "2.1", "base_url": "https://fp.example"}]})
    assert response.status_code == 501
    assert "2.0" in response.json()["message"]
    peer.refresh_from_db()
    assert peer.token_for_peer == TOKEN_FOR_PEER  # nothing changed


def test_a_peer_registering_with_token_a_gets_our_register_with_a_new_token(world, fp_stub, send_spy,
                                                                             django_capture_on_commit_callbacks):
    fp_stub.respond("/fp/register", status=204)
    fp_stub.respond("/fp/handshake", status=204)
    peer = make_peer(world, base_url="", handshake=OscpPeer.Handshake.NONE)
    OscpPeer.objects.filter(pk=peer.pk).update(registration_status=OscpPeer.Registration.NEW, token_for_peer="",
                                               token_from_peer_digest="")
    token_a = oscp_services.peer_initial_token_issue(peer=peer)
    with django_capture_on_commit_callbacks(execute=True):
        response = post("/oscp/cp/2.0/register", {"token": "token-b-for-us",
                                                  "version_url": [{"version": "2.0", "base_url": fp_stub.url("/fp")}]},
                        token=token_a, request_id="their-register")
    assert response.status_code == 204 and response.content == b""
    (ours,) = fp_stub.requests_to("/fp/register")
    assert ours.headers["authorization"] == "Token token-b-for-us"
    assert ours.headers["x-correlation-id"] == "their-register"
    token_c = ours.json()["token"]
    assert ours.json()["version_url"] == [{"version": "2.0", "base_url": oscp_services.cp_base_url()}]
    peer.refresh_from_db()
    assert peer.registration_status == OscpPeer.Registration.REGISTERED and peer.initial_token_digest == ""
    assert peer.token_from_peer_digest == token_digest(token_c) and peer.token_for_peer == "token-b-for-us"
    assert len(fp_stub.requests_to("/fp/handshake")) == 1  # we handshake once registered
    # Token A is dead, token C works.
    assert post("/oscp/cp/2.0/register", {"token": "again", "version_url": [
        {"version": "2.0", "base_url": fp_stub.url("/fp")}]}, token=token_a, request_id="r2").status_code == 401
    assert post("/oscp/cp/2.0/heartbeat", {"offline_mode_at": "2026-03-01T12:00:00Z"}, token=token_c,
                request_id="r3").status_code == 204


def test_the_peer_token_we_send_is_encrypted_at_rest_and_ours_only_digested(world):
    from django.db import connection

    peer = make_peer(world)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT token_for_peer, token_from_peer_digest FROM {OscpPeer._meta.db_table} WHERE id = %s",  # noqa: S608 - table name from the model
                       [peer.pk.hex if connection.vendor == "sqlite" else peer.pk])
        stored, digest = cursor.fetchone()
    assert stored.startswith("fernet:") and TOKEN_FOR_PEER not in stored
    assert digest == token_digest(TOKEN_FROM_PEER) and TOKEN_FROM_PEER not in digest
    peer.refresh_from_db()
    assert peer.token_for_peer == TOKEN_FOR_PEER


def test_a_token_rotation_switches_tokens_once_delivered_and_no_token_stays_in_the_outbox(
        world, fp_stub, send_spy, django_capture_on_commit_callbacks):
    fp_stub.respond("/fp/register", status=204)
    peer = make_peer(world, base_url=fp_stub.url("/fp"))
    with django_capture_on_commit_callbacks(execute=False):
        message = oscp_services.peer_token_rotate(peer=peer)
    new_token = message.body["token"]
    # Until the PUT is delivered the old token still works (the peer does not know the new one yet).
    assert post("/oscp/cp/2.0/heartbeat", {"offline_mode_at": "2026-03-01T12:00:00Z"}).status_code == 204
    oscp_services.message_send(message_id=message.pk)
    (put,) = fp_stub.requests_to("/fp/register")
    assert put.method == "PUT" and put.json()["token"] == new_token
    assert post("/oscp/cp/2.0/heartbeat", {"offline_mode_at": "2026-03-01T12:00:00Z"},
                request_id="r2").status_code == 401
    assert post("/oscp/cp/2.0/heartbeat", {"offline_mode_at": "2026-03-01T12:00:00Z"}, token=new_token,
                request_id="r3").status_code == 204
    message.refresh_from_db()
    assert message.status == Status.SENT and new_token not in json.dumps(message.body)
    assert message.body["token"] == oscp_services.SCRUBBED


def test_the_day_ahead_task_publishes_tomorrow_for_peers_in_handshake_only(world, django_capture_on_commit_callbacks):
    from aggregator.oscp.tasks import oscp_day_ahead_forecasts_task

    day = date(2026, 3, 2)
    ready = make_group(world, make_peer(world))
    make_group(world, make_peer(world, handshake=OscpPeer.Handshake.SENT), group_id="not-yet")
    with at(day_before(day)), django_capture_on_commit_callbacks(execute=False):
        assert oscp_day_ahead_forecasts_task() == 2  # CONSUMPTION + FALLBACK for the one ready group
    assert {m.group_id for m in Message.objects.all()} == {ready.pk}
    assert min(blocks_per_isp(forecasts(ready)[0].body)) == isp_time.day_start(day)


def test_the_admin_issues_token_a_once_and_registers_at_a_peer(world, admin_client, fp_stub,
                                                               django_capture_on_commit_callbacks):
    fp_stub.respond("/fp/register", status=204)
    peer = make_peer(world, base_url=fp_stub.url("/fp"), handshake=OscpPeer.Handshake.NONE)
    OscpPeer.objects.filter(pk=peer.pk).update(registration_status=OscpPeer.Registration.NEW)
    changelist = reverse("admin:aggregator_oscppeer_changelist")
    response = admin_client.post(changelist, {"action": "issue_registration_token", "_selected_action": [peer.pk]},
                                 follow=True)
    shown = [str(m) for m in response.context["messages"]]
    token_a = shown[0].rsplit(": ", 1)[-1]
    peer.refresh_from_db()
    assert peer.initial_token_digest == token_digest(token_a) and token_a not in str(peer.__dict__)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(changelist, {"action": "register_at_peer", "_selected_action": [peer.pk]})
    (register,) = fp_stub.requests_to("/fp/register")
    assert register.headers["authorization"] == f"Token {TOKEN_FOR_PEER}"  # the token the peer gave us
    peer.refresh_from_db()
    assert peer.registration_status == OscpPeer.Registration.REGISTER_SENT
    assert peer.token_from_peer_digest == token_digest(register.json()["token"])
    page = admin_client.get(reverse("admin:aggregator_oscppeer_change", args=[peer.pk]))
    assert page.status_code == 200 and TOKEN_FOR_PEER.encode() not in page.content  # masked


@pytest.mark.parametrize("task", ["oscp_message_send_task", "oscp_outbox_sweep_task", "oscp_heartbeats_task",
                                  "oscp_day_ahead_forecasts_task"])
def test_oscp_tasks_are_registered_and_routed_to_the_dispatch_queue(task):
    from config.celery import app

    name = f"aggregator.oscp.tasks.{task}"
    app.loader.import_default_modules()
    assert name in app.tasks
    assert app.amqp.router.route({}, name)["queue"].name == "dispatch"
