"""Dispatching an order to charge points: the schedule and outbox (flex_order_dispatch), sending one command
(charging_profile_command_send), the CPO's asynchronous result on our OCPI endpoint, and the whole chain over real
HTTP against the sandbox CPO."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.urls import reverse

from aggregator import delivery, services
from aggregator.adapters.base import ChargingProfileAdapter, ProfileSendResult
from aggregator.adapters.ocpi import parse_ocpi_datetime, token_header
from aggregator.models import ChargePointOperator, ChargingProfileCommand, ChargingSession, SessionSchedule
from aggregator.portfolio import PortfolioSnapshot, portfolio_snapshot
from aggregator.services import charging_profile_command_send, flex_order_dispatch
from common import isp as isp_time
from common.exceptions import AdapterError, TransitionError
from common.models import AuditEvent
from market import services as market_services
from market.models import FlexOrder
from market.services import OfferOptionInput
from sandbox.models import SandboxChargingProfile, SandboxCpoClient
from tests.builders import make_offer, make_request
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory

Command = ChargingProfileCommand
Status = ChargingProfileCommand.Status
TZ = isp_time.MARKET_TZ
OCPI_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


# --- building a portfolio and an order --------------------------------------------------------------


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


def evening_cars(world, day: date, cpo: ChargePointOperator) -> list[ChargingSession]:
    """Four cars on Voltflex's connections: three arrive in the evening and stay overnight, one leaves during the
    evening before it can get all it asks for (two share a connection)."""
    morning = day + timedelta(days=1)
    specs = [  # (connection, arrival, departure, kWh, max W)
        (0, local(day, 17), local(morning, 7), "20", 11_000),
        (1, local(day, 17, 40), local(morning, 6, 30), "30", 7_400),
        (2, local(day, 18, 7), local(morning, 8), "12", 3_700),
        (0, local(day, 16, 20), local(day, 19, 50), "20", 3_700),  # 3.5 h x 3.7 kW = 12.95 kWh: cannot get 20
    ]
    sessions = []
    for connection, arrival, departure, kwh, max_w in specs:
        point = ChargePointFactory(cpo=cpo, connection=world.voltflex_connections[connection], max_power_w=max_w)
        sessions.append(ChargingSessionFactory(charge_point=point, arrival_at=arrival, expected_departure_at=departure,
                                               energy_requested_kwh=Decimal(kwh), max_power_w=max_w))
    return sessions


def propose_and_submit(world, day: date, *, reduction_w: int = 20_000, isps: list[int] | None = None):
    """A DSO request answered with the optimiser's own proposal, as our aggregator would."""
    request = make_request(dso=world.gridco, point=world.cp_north, day=day, reduction_w=reduction_w, isps=isps)
    proposal = services.flex_offer_propose(aggregator=world.voltflex, flex_request=request)
    assert not proposal.is_empty
    market_services.d_prognosis_submit(aggregator=world.voltflex, congestion_point=world.cp_north, period=day,
                                       isps=proposal.d_prognosis_isps)
    return market_services.flex_offer_submit(
        aggregator=world.voltflex, congestion_point=world.cp_north, period=day,
        options=[OfferOptionInput(option_reference="1", price_eur=proposal.price_eur, isps=proposal.offer_isps,
                                  min_activation_factor=proposal.min_activation_factor)],
        expires_at=proposal.expires_at, flex_request=request,
    )


@dataclass
class Dispatchable:
    cpo: ChargePointOperator
    sessions: list[ChargingSession]
    order: FlexOrder
    snapshot: PortfolioSnapshot  # the portfolio as dispatch sees it


def place_order(world, day: date, capture) -> Dispatchable:
    """A placed order for Voltflex on cp_north on `day` (evening); nothing dispatched or sent yet."""
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
    sessions = evening_cars(world, day, cpo)
    offer = propose_and_submit(world, day)
    with capture(execute=False):
        order = market_services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
    snapshot = portfolio_snapshot(aggregator=world.voltflex, congestion_point=world.cp_north, period=day)
    return Dispatchable(cpo=cpo, sessions=sessions, order=order, snapshot=snapshot)


@pytest.fixture
def placed_order(world, tomorrow, django_capture_on_commit_callbacks) -> Dispatchable:
    return place_order(world, tomorrow, django_capture_on_commit_callbacks)


def planned_w_by_slot(schedules) -> np.ndarray:
    return np.sum([schedule.slot_power_w for schedule in schedules], axis=0)


def profile_limits_by_slot(body: dict[str, Any], horizon_start: datetime, slots: int) -> np.ndarray:
    """The W limit per horizon slot that a charging profile sets (NaN outside the profile)."""
    profile = body["charging_profile"]
    start = parse_ocpi_datetime(profile["start_date_time"])
    first = int((start - horizon_start) / isp_time.ISP)
    limits = np.full(slots, np.nan)
    periods = profile["charging_profile_period"]
    ends = [period["start_period"] for period in periods[1:]] + [profile["duration"]]
    for period, end in zip(periods, ends, strict=True):
        for offset in range(period["start_period"] // 900, end // 900):
            limits[first + offset] = period["limit"]
    return limits


# --- flex_order_dispatch ----------------------------------------------------------------------------


@pytest.mark.django_db
class TestFlexOrderDispatch:
    def test_it_stores_one_schedule_and_one_pending_set_command_per_session(self, placed_order):
        summary = flex_order_dispatch(flex_order=placed_order.order)
        schedules = SessionSchedule.objects.filter(flex_order=placed_order.order)
        commands = Command.objects.filter(flex_order=placed_order.order)
        session_ids = sorted(session.pk for session in placed_order.sessions)
        assert sorted(schedules.values_list("session_id", flat=True)) == session_ids
        assert sorted(commands.values_list("session_id", flat=True)) == session_ids
        assert {(c.kind, c.status, c.cpo_id, c.attempts) for c in commands} == {
            (Command.Kind.SET, Status.PENDING, placed_order.cpo.pk, 0)}
        assert all(schedule.is_current for schedule in schedules)
        assert {c.schedule.session_id == c.session_id for c in commands} == {True}
        assert summary.sessions_scheduled == summary.commands_created == len(placed_order.sessions)

    def test_every_driver_gets_the_energy_that_fits_before_departure(self, placed_order):
        flex_order_dispatch(flex_order=placed_order.order)
        for session in placed_order.sessions:
            schedule = SessionSchedule.objects.get(session=session, is_current=True)
            plugged_h = (session.expected_departure_at - session.arrival_at).total_seconds() / 3600
            expected = min(float(session.energy_requested_kwh), session.max_power_w / 1000 * plugged_h)
            assert float(schedule.planned_energy_kwh) == pytest.approx(expected, abs=0.01)
            assert sum(schedule.slot_power_w) / 1000 * isp_time.ISP_HOURS == pytest.approx(expected, abs=0.01)
            assert float(schedule.shortfall_kwh) == pytest.approx(
                float(session.energy_requested_kwh) - expected, abs=0.01)

    def test_the_schedules_deliver_the_ordered_reduction_in_every_ordered_isp(self, placed_order):
        flex_order_dispatch(flex_order=placed_order.order)
        snapshot = placed_order.snapshot
        schedules = list(SessionSchedule.objects.filter(flex_order=placed_order.order))
        assert {schedule.start for schedule in schedules} == {snapshot.horizon.start}
        planned = planned_w_by_slot(schedules)
        baseline_w = snapshot.uncontrolled_kw.sum(axis=0) * 1000
        ordered = list(placed_order.order.isps.all())
        assert ordered
        for row in ordered:
            slot = snapshot.slot_of_isp(row.isp)
            assert planned[slot] <= baseline_w[slot] + row.power_w + len(schedules), f"ISP {row.isp}"

    def test_the_profiles_enforce_the_reduction_and_leave_room_for_the_energy(self, placed_order):
        flex_order_dispatch(flex_order=placed_order.order)
        snapshot = placed_order.snapshot
        slots = snapshot.horizon.slots
        allowed_w = np.zeros(slots)  # what the cars may draw on average per slot under their profiles
        for row, session in enumerate(snapshot.sessions):
            command = Command.objects.get(flex_order=placed_order.order, session=session)
            limits = profile_limits_by_slot(command.request_body, snapshot.horizon.start, slots)
            plugged = snapshot.avail[row]
            assert not np.isnan(limits[plugged > 0]).any(), "the profile covers every plugged-in slot"
            session_allowed = np.nan_to_num(limits) * plugged
            allowed_w += session_allowed
            schedule = SessionSchedule.objects.get(session=session, is_current=True)
            assert session_allowed.sum() / 1000 * isp_time.ISP_HOURS >= float(schedule.planned_energy_kwh) - 0.001
        baseline_w = snapshot.uncontrolled_kw.sum(axis=0) * 1000
        for row in placed_order.order.isps.all():
            slot = snapshot.slot_of_isp(row.isp)
            assert allowed_w[slot] <= baseline_w[slot] + row.power_w + len(snapshot.sessions), f"ISP {row.isp}"

    def test_each_command_body_is_a_valid_set_charging_profile(self, placed_order, settings):
        settings.PUBLIC_BASE_URL = "https://agg.example"
        flex_order_dispatch(flex_order=placed_order.order)
        for command in Command.objects.filter(flex_order=placed_order.order).select_related("session"):
            body = command.request_body
            assert set(body) == {"charging_profile", "response_url"}
            assert body["response_url"] == f"https://agg.example/ocpi/2.2.1/chargingprofiles/results/{command.pk}"
            profile = body["charging_profile"]
            assert profile["charging_rate_unit"] == "W"
            assert OCPI_DATETIME.fullmatch(profile["start_date_time"])
            start = parse_ocpi_datetime(profile["start_date_time"])
            assert isp_time.is_isp_aligned(start)
            assert start <= command.session.arrival_at < start + isp_time.ISP
            assert profile["duration"] > 0 and profile["duration"] % 900 == 0
            assert start + timedelta(seconds=profile["duration"] - 900) < command.session.expected_departure_at
            periods = profile["charging_profile_period"]
            starts = [period["start_period"] for period in periods]
            assert starts[0] == 0
            assert all(value % 900 == 0 for value in starts)
            assert starts == sorted(set(starts)) and starts[-1] < profile["duration"]
            assert all(0 <= period["limit"] <= command.session.max_power_w for period in periods)
            assert all(a["limit"] != b["limit"] for a, b in zip(periods, periods[1:], strict=False))

    def test_it_marks_the_order_dispatched_and_audits_the_computation(self, placed_order):
        flex_order_dispatch(flex_order=placed_order.order)
        placed_order.order.refresh_from_db()
        assert placed_order.order.status == FlexOrder.Status.DISPATCHED
        event = AuditEvent.objects.get(object_id=str(placed_order.order.pk), action="flex_order.schedule_computed")
        assert event.after["sessions"] == event.after["commands"] == len(placed_order.sessions)
        assert event.after["superseded_commands"] == 0
        assert event.after["solver_status"] == "Optimal"

    def test_dispatching_the_same_order_again_is_refused(self, placed_order):
        flex_order_dispatch(flex_order=placed_order.order)
        with pytest.raises(TransitionError):
            flex_order_dispatch(flex_order=placed_order.order)
        assert Command.objects.filter(flex_order=placed_order.order).count() == len(placed_order.sessions)

    def test_a_second_order_on_the_point_and_day_supersedes_unsent_commands(
        self, world, tomorrow, placed_order, django_capture_on_commit_callbacks
    ):
        first = placed_order.order
        flex_order_dispatch(flex_order=first)
        late_isps = [slot.index for slot in isp_time.isp_slots(tomorrow) if slot.local_start.hour == 21]
        offer = propose_and_submit(world, tomorrow, reduction_w=3_000, isps=late_isps)
        with django_capture_on_commit_callbacks(execute=False):
            second = market_services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
        flex_order_dispatch(flex_order=second)

        first_commands = Command.objects.filter(flex_order=first)
        assert set(first_commands.values_list("status", flat=True)) == {Status.SUPERSEDED}
        assert not SessionSchedule.objects.filter(flex_order=first, is_current=True).exists()
        current = list(SessionSchedule.objects.filter(is_current=True))
        assert {schedule.flex_order_id for schedule in current} == {second.pk}
        assert len(current) == len(placed_order.sessions)
        assert set(Command.objects.filter(flex_order=second).values_list("status", flat=True)) == {Status.PENDING}
        event = AuditEvent.objects.get(object_id=str(second.pk), action="flex_order.schedule_computed")
        assert event.after["superseded_commands"] == len(placed_order.sessions)
        # The new schedule still holds the first order as well as the second.
        snapshot = placed_order.snapshot
        planned = planned_w_by_slot(current)
        baseline_w = snapshot.uncontrolled_kw.sum(axis=0) * 1000
        for row in [*first.isps.all(), *second.isps.all()]:
            slot = snapshot.slot_of_isp(row.isp)
            assert planned[slot] <= baseline_w[slot] + row.power_w + len(current), f"ISP {row.isp}"

    def test_commands_already_sent_are_not_superseded(
        self, world, tomorrow, placed_order, django_capture_on_commit_callbacks
    ):
        first = placed_order.order
        flex_order_dispatch(flex_order=first)
        sent = Command.objects.filter(flex_order=first).first()
        Command.objects.filter(pk=sent.pk).update(status=Status.RESULT_ACCEPTED)
        late_isps = [slot.index for slot in isp_time.isp_slots(tomorrow) if slot.local_start.hour == 21]
        offer = propose_and_submit(world, tomorrow, reduction_w=3_000, isps=late_isps)
        with django_capture_on_commit_callbacks(execute=False):
            second = market_services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
        flex_order_dispatch(flex_order=second)
        sent.refresh_from_db()
        assert sent.status == Status.RESULT_ACCEPTED


@pytest.mark.django_db
@pytest.mark.parametrize("day", [date(2027, 10, 31), date(2027, 3, 28)], ids=["autumn-100-isps", "spring-92-isps"])
def test_dispatch_on_a_dst_day_meets_the_order_isp_by_isp(world, day, django_capture_on_commit_callbacks):
    placed = place_order(world, day, django_capture_on_commit_callbacks)
    flex_order_dispatch(flex_order=placed.order)
    snapshot = placed.snapshot
    schedules = list(SessionSchedule.objects.filter(flex_order=placed.order))
    planned = planned_w_by_slot(schedules)
    baseline_w = snapshot.uncontrolled_kw.sum(axis=0) * 1000
    for row in placed.order.isps.all():
        slot = snapshot.slot_of_isp(row.isp)
        assert 17 <= isp_time.isp_slot(day, row.isp).local_start.hour < 21
        assert planned[slot] <= baseline_w[slot] + row.power_w + len(schedules), f"ISP {row.isp}"
    for command in Command.objects.filter(flex_order=placed.order).select_related("session"):
        start = parse_ocpi_datetime(command.request_body["charging_profile"]["start_date_time"])
        assert start <= command.session.arrival_at < start + isp_time.ISP


# --- charging_profile_command_send ------------------------------------------------------------------


class FakeAdapter(ChargingProfileAdapter):
    """Answers every profile with `answer`, or raises `error`; remembers what it was asked."""

    def __init__(self, *, answer: ProfileSendResult | None = None, error: AdapterError | None = None,
                 during_call=None) -> None:
        self.answer = answer or ProfileSendResult(result="ACCEPTED", timeout_s=30)
        self.error = error
        self.during_call = during_call
        self.calls: list[dict[str, Any]] = []

    def set_charging_profile(self, *, cpo, session_id, body, correlation_id):
        self.calls.append({"cpo": cpo, "session_id": session_id, "body": body, "correlation_id": correlation_id})
        if self.during_call:
            self.during_call()
        if self.error:
            raise self.error
        return self.answer


@pytest.fixture
def command(world, tomorrow) -> ChargingProfileCommand:
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
    point = ChargePointFactory(cpo=cpo, connection=world.voltflex_connections[0])
    session = ChargingSessionFactory(charge_point=point, cpo_session_id="SES-42", arrival_at=local(tomorrow, 18),
                                     expected_departure_at=local(tomorrow, 23))
    return Command.objects.create(cpo=cpo, session=session, request_body={"charging_profile": {}, "response_url": "u"})


@pytest.mark.django_db
class TestChargingProfileCommandSend:
    def test_it_stores_the_cpo_answer(self, command):
        adapter = FakeAdapter(answer=ProfileSendResult(result="ACCEPTED", timeout_s=45))
        sent = charging_profile_command_send(command_id=command.pk, adapter=adapter)
        assert sent.status == Status.ACCEPTED
        assert sent.attempts == 1
        assert sent.sent_at is not None
        assert sent.response_timeout_s == 45
        assert adapter.calls == [{"cpo": command.cpo, "session_id": "SES-42", "body": command.request_body,
                                  "correlation_id": str(command.pk)}]

    @pytest.mark.parametrize("result", ["REJECTED", "NOT_SUPPORTED", "UNKNOWN_SESSION"])
    def test_a_refusal_is_stored_as_the_command_status(self, command, result, monkeypatch):
        monkeypatch.setattr(services, "charging_session_changed", lambda **kwargs: None)
        sent = charging_profile_command_send(command_id=command.pk,
                                             adapter=FakeAdapter(answer=ProfileSendResult(result=result)))
        assert sent.status == result
        assert sent.attempts == 1
        assert sent.lease_id is None

    def test_too_often_backs_off_and_sends_again_later(self, command, settings):
        settings.DISPATCH_MAX_ATTEMPTS = 5
        sent = charging_profile_command_send(command_id=command.pk,
                                             adapter=FakeAdapter(answer=ProfileSendResult(result="TOO_OFTEN")))
        assert (sent.status, sent.attempts, sent.last_error) == (Status.PENDING, 1, "TOO_OFTEN")
        assert sent.next_attempt_at is not None and sent.next_attempt_at >= sent.sent_at

    @pytest.mark.parametrize("status", [Status.SENDING, Status.ACCEPTED, Status.SUPERSEDED, Status.FAILED,
                                        Status.RESULT_ACCEPTED, Status.DEAD_LETTER])
    def test_a_command_that_is_not_pending_is_not_sent(self, command, status):
        Command.objects.filter(pk=command.pk).update(status=status)
        adapter = FakeAdapter()
        sent = charging_profile_command_send(command_id=command.pk, adapter=adapter)
        assert adapter.calls == []
        assert sent.status == status
        assert sent.attempts == 0

    def test_sending_twice_sends_once(self, command):
        adapter = FakeAdapter()
        charging_profile_command_send(command_id=command.pk, adapter=adapter)
        charging_profile_command_send(command_id=command.pk, adapter=adapter)
        assert len(adapter.calls) == 1

    def test_a_transient_failure_puts_it_back_to_pending_with_backoff(self, command):
        adapter = FakeAdapter(error=AdapterError("PUT timed out", permanent=False))
        sent = charging_profile_command_send(command_id=command.pk, adapter=adapter)
        assert sent.status == Status.PENDING
        assert sent.attempts == 1
        assert "timed out" in sent.last_error
        assert sent.next_attempt_at is not None
        # Not due yet: a second send right away does nothing.
        charging_profile_command_send(command_id=command.pk, adapter=adapter)
        assert len(adapter.calls) == 1

    def test_it_dead_letters_after_the_last_transient_attempt(self, command, settings):
        settings.DISPATCH_MAX_ATTEMPTS = 4
        adapter = FakeAdapter(error=AdapterError("HTTP 503", permanent=False))
        for attempt in range(1, 4):
            sent = charging_profile_command_send(command_id=command.pk, adapter=adapter)
            assert (sent.status, sent.attempts) == (Status.PENDING, attempt)
            Command.objects.filter(pk=command.pk).update(next_attempt_at=None)  # the backoff has passed
        sent = charging_profile_command_send(command_id=command.pk, adapter=adapter)
        assert (sent.status, sent.attempts) == (Status.DEAD_LETTER, 4)
        assert len(adapter.calls) == 4
        charging_profile_command_send(command_id=command.pk, adapter=adapter)
        assert len(adapter.calls) == 4

    def test_a_permanent_failure_fails_at_once(self, command):
        adapter = FakeAdapter(error=AdapterError("HTTP 400", permanent=True, status_code=400))
        sent = charging_profile_command_send(command_id=command.pk, adapter=adapter)
        assert (sent.status, sent.attempts) == (Status.FAILED, 1)
        assert sent.last_error == "HTTP 400"

    def test_a_success_after_a_failure_clears_the_error(self, command):
        charging_profile_command_send(command_id=command.pk, adapter=FakeAdapter(error=AdapterError("reset")))
        Command.objects.filter(pk=command.pk).update(next_attempt_at=None)
        sent = charging_profile_command_send(command_id=command.pk, adapter=FakeAdapter())
        assert (sent.status, sent.attempts, sent.last_error) == (Status.ACCEPTED, 2, "")

    def test_a_result_that_overtakes_the_sync_answer_is_kept(self, command):
        def cpo_posts_result_first():
            services.charging_profile_result_record(command=command, result="ACCEPTED", body={"result": "ACCEPTED"})

        sent = charging_profile_command_send(command_id=command.pk, adapter=FakeAdapter(during_call=cpo_posts_result_first))
        assert sent.status == Status.RESULT_ACCEPTED


# --- our OCPI result endpoint -----------------------------------------------------------------------


def result_url(command_id: object) -> str:
    return reverse("ocpi:chargingprofile-result", kwargs={"command_id": command_id})


def post_result(client, command_id, body: Any, *, token: str | None, raw: bool = False, **headers: str):
    if token is not None:
        headers["Authorization"] = token_header(token, base64_encoded=not raw)
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(result_url(command_id), data=data, content_type="application/json", headers=headers)


@pytest.fixture
def sent_command(command) -> ChargingProfileCommand:
    """A command the CPO accepted and now owes us a result for."""
    Command.objects.filter(pk=command.pk).update(status=Status.ACCEPTED)
    command.refresh_from_db()
    return command


def assert_envelope(response, status_code: int) -> dict[str, Any]:
    payload = response.json()
    assert payload["status_code"] == status_code
    assert OCPI_DATETIME.fullmatch(payload["timestamp"])
    assert "data" not in payload
    return payload


@pytest.mark.django_db
class TestChargingProfileResultEndpoint:
    def test_without_a_token_it_answers_401_in_an_envelope(self, client, sent_command):
        response = post_result(client, sent_command.pk, {"result": "ACCEPTED"}, token=None)
        assert response.status_code == 401
        assert_envelope(response, 2000)
        sent_command.refresh_from_db()
        assert sent_command.status == Status.ACCEPTED

    def test_an_unknown_token_is_401(self, client, sent_command):
        response = post_result(client, sent_command.pk, {"result": "ACCEPTED"}, token="not-a-token")
        assert response.status_code == 401
        assert_envelope(response, 2000)

    def test_a_token_we_send_is_not_a_token_we_accept(self, client, sent_command):
        response = post_result(client, sent_command.pk, {"result": "ACCEPTED"}, token=sent_command.cpo.token_for_cpo)
        assert response.status_code == 401

    def test_an_inactive_cpo_is_401(self, client, sent_command):
        ChargePointOperator.objects.filter(pk=sent_command.cpo_id).update(is_active=False)
        response = post_result(client, sent_command.pk, {"result": "ACCEPTED"}, token=sent_command.cpo.token_from_cpo)
        assert response.status_code == 401

    @pytest.mark.parametrize("raw", [False, True], ids=["base64", "raw"])
    def test_base64_and_raw_tokens_are_both_accepted(self, client, sent_command, raw):
        response = post_result(client, sent_command.pk, {"result": "ACCEPTED"}, token=sent_command.cpo.token_from_cpo,
                               raw=raw)
        assert response.status_code == 200
        assert_envelope(response, 1000)
        sent_command.refresh_from_db()
        assert sent_command.status == Status.RESULT_ACCEPTED

    def test_the_decoded_token_wins_over_another_cpos_raw_token(self, client, world, sent_command):
        # Brief 2.1: Base64-decode first, the raw value is only a fallback; the lookup order must not depend on names.
        own = sent_command.cpo
        ChargePointOperator.objects.filter(pk=own.pk).update(name="Zulu Charging")
        encoded = token_header(own.token_from_cpo).removeprefix("Token ")
        ChargePointOperatorFactory(aggregator=world.voltflex, name="Alpha Charging", token_from_cpo=encoded)
        response = post_result(client, sent_command.pk, {"result": "ACCEPTED"}, token=own.token_from_cpo)
        assert response.status_code == 200
        sent_command.refresh_from_db()
        assert sent_command.status == Status.RESULT_ACCEPTED

    def test_a_command_of_another_cpo_is_404(self, client, world, sent_command):
        other = ChargePointOperatorFactory(aggregator=world.voltflex)
        response = post_result(client, sent_command.pk, {"result": "REJECTED"}, token=other.token_from_cpo)
        assert response.status_code == 404
        assert_envelope(response, 2001)
        sent_command.refresh_from_db()
        assert sent_command.status == Status.ACCEPTED

    def test_an_unknown_command_is_404(self, client, sent_command):
        response = post_result(client, uuid.uuid4(), {"result": "ACCEPTED"}, token=sent_command.cpo.token_from_cpo)
        assert response.status_code == 404

    def test_invalid_json_is_400(self, client, sent_command):
        response = post_result(client, sent_command.pk, "{result: ACCEPTED", token=sent_command.cpo.token_from_cpo)
        assert response.status_code == 400
        assert_envelope(response, 2001)

    @pytest.mark.parametrize("body", [{"result": "MAYBE"}, {"result": "accepted"}, {}, ["ACCEPTED"], "ACCEPTED"],
                             ids=["unknown", "lowercase", "missing", "list", "bare-string"])
    def test_a_result_outside_the_enum_is_2001_and_changes_nothing(self, client, sent_command, body):
        response = post_result(client, sent_command.pk, json.dumps(body), token=sent_command.cpo.token_from_cpo)
        assert response.status_code == 200
        assert_envelope(response, 2001)
        sent_command.refresh_from_db()
        assert sent_command.status == Status.ACCEPTED
        assert sent_command.result_body is None

    @pytest.mark.parametrize("from_status", [Status.ACCEPTED, Status.SENDING])
    @pytest.mark.parametrize(("result", "to_status"), [("ACCEPTED", Status.RESULT_ACCEPTED),
                                                       ("REJECTED", Status.RESULT_REJECTED),
                                                       ("UNKNOWN", Status.RESULT_UNKNOWN)])
    def test_a_valid_result_completes_the_command(self, client, command, from_status, result, to_status):
        Command.objects.filter(pk=command.pk).update(status=from_status)
        response = post_result(client, command.pk, {"result": result}, token=command.cpo.token_from_cpo)
        assert response.status_code == 200
        assert_envelope(response, 1000)
        command.refresh_from_db()
        assert command.status == to_status
        assert command.result_body == {"result": result}
        assert command.result_at is not None

    def test_the_same_result_twice_is_idempotent(self, client, sent_command):
        token = sent_command.cpo.token_from_cpo
        post_result(client, sent_command.pk, {"result": "REJECTED"}, token=token)
        sent_command.refresh_from_db()
        first_at = sent_command.result_at
        response = post_result(client, sent_command.pk, {"result": "REJECTED"}, token=token)
        assert response.status_code == 200
        assert_envelope(response, 1000)
        sent_command.refresh_from_db()
        assert (sent_command.status, sent_command.result_at) == (Status.RESULT_REJECTED, first_at)

    def test_a_different_result_after_the_first_is_refused(self, client, sent_command):
        token = sent_command.cpo.token_from_cpo
        post_result(client, sent_command.pk, {"result": "ACCEPTED"}, token=token)
        response = post_result(client, sent_command.pk, {"result": "REJECTED"}, token=token)
        assert response.status_code == 200
        assert_envelope(response, 2000)
        sent_command.refresh_from_db()
        assert sent_command.status == Status.RESULT_ACCEPTED

    @pytest.mark.parametrize("status", [Status.PENDING, Status.FAILED, Status.REJECTED, Status.SUPERSEDED])
    def test_no_result_is_taken_for_a_command_that_expects_none(self, client, command, status):
        Command.objects.filter(pk=command.pk).update(status=status)
        response = post_result(client, command.pk, {"result": "ACCEPTED"}, token=command.cpo.token_from_cpo)
        assert response.status_code == 200
        assert_envelope(response, 2000)
        command.refresh_from_db()
        assert command.status == status
        assert command.result_at is None and command.result_body is None

    def test_it_echoes_the_request_and_correlation_ids(self, client, sent_command):
        response = post_result(client, sent_command.pk, {"result": "ACCEPTED"}, token=sent_command.cpo.token_from_cpo,
                               **{"X-Request-ID": "req-123", "X-Correlation-ID": "corr-456"})
        assert response["X-Request-ID"] == "req-123"
        assert response["X-Correlation-ID"] == "corr-456"

    def test_it_echoes_the_ids_on_refusals_too(self, client, sent_command):
        response = post_result(client, sent_command.pk, {"result": "ACCEPTED"}, token=None,
                               **{"X-Request-ID": "req-9", "X-Correlation-ID": "corr-9"})
        assert response.status_code == 401
        assert (response["X-Request-ID"], response["X-Correlation-ID"]) == ("req-9", "corr-9")

    def test_only_post_is_allowed(self, client, sent_command):
        response = client.get(result_url(sent_command.pk),
                              headers={"Authorization": token_header(sent_command.cpo.token_from_cpo)})
        assert response.status_code == 405


# --- the market event triggers dispatch -------------------------------------------------------------


@pytest.mark.django_db
class TestOrderSubscription:
    def test_an_order_for_our_portfolio_is_dispatched_and_sent(
        self, world, tomorrow, monkeypatch, django_capture_on_commit_callbacks
    ):
        adapter = FakeAdapter(answer=ProfileSendResult(result="ACCEPTED", timeout_s=30))
        monkeypatch.setattr(delivery, "default_adapter", lambda: adapter)
        cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
        sessions = evening_cars(world, tomorrow, cpo)
        offer = propose_and_submit(world, tomorrow)
        with django_capture_on_commit_callbacks(execute=True):
            order = market_services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
        order.refresh_from_db()
        assert order.status == FlexOrder.Status.DISPATCHED
        assert sorted(call["session_id"] for call in adapter.calls) == sorted(s.cpo_session_id for s in sessions)
        assert set(Command.objects.filter(flex_order=order).values_list("status", flat=True)) == {Status.ACCEPTED}

    def test_an_order_for_an_aggregator_without_charge_points_is_ignored(
        self, world, tomorrow, monkeypatch, django_capture_on_commit_callbacks
    ):
        adapter = FakeAdapter()
        monkeypatch.setattr(delivery, "default_adapter", lambda: adapter)
        ChargePointOperatorFactory(aggregator=world.chargeco)  # a contract, but no charge points yet
        request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
        offer = make_offer(aggregator=world.chargeco, request=request)
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            order = market_services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
        assert callbacks, "the order.placed event was published"
        order.refresh_from_db()
        assert order.status == FlexOrder.Status.PLACED
        assert not SessionSchedule.objects.exists()
        assert not Command.objects.exists()
        assert adapter.calls == []
        assert not AuditEvent.objects.filter(action="flex_order.schedule_computed").exists()


# --- the whole chain over real HTTP against the sandbox CPO -----------------------------------------


@pytest.fixture
def sandbox_cpo(world, live_server, settings, sandbox_enabled) -> ChargePointOperator:
    """Voltflex's CPO is the sandbox, served by the live server, which posts results back to our OCPI endpoint."""
    if not sandbox_enabled:
        pytest.skip("SANDBOX_ENABLED is off, so /sandbox/ is not mounted")
    settings.PUBLIC_BASE_URL = live_server.url
    cpo = ChargePointOperatorFactory(
        aggregator=world.voltflex, chargingprofiles_url=f"{live_server.url}/sandbox/cpo/ocpi/2.2.1/chargingprofiles",
    )
    SandboxCpoClient.objects.create(name="Voltflex", token_from_client=cpo.token_for_cpo,
                                    token_for_client=cpo.token_from_cpo)
    return cpo


def commands_by_session(order: FlexOrder) -> dict[str, ChargingProfileCommand]:
    commands = Command.objects.filter(flex_order=order).select_related("session")
    return {command.session.cpo_session_id: command for command in commands}


@pytest.mark.django_db(transaction=True)
class TestDispatchOverHttp:
    def test_accepting_an_offer_ends_with_every_profile_applied(self, world, tomorrow, sandbox_cpo):
        sessions = evening_cars(world, tomorrow, sandbox_cpo)
        offer = propose_and_submit(world, tomorrow)
        order = market_services.flex_offer_accept(flex_offer=offer, dso=world.gridco)  # commits: event -> dispatch

        order.refresh_from_db()
        assert order.status == FlexOrder.Status.DISPATCHED
        event = AuditEvent.objects.get(object_id=str(order.pk), action="flex_order.schedule_computed")
        commands = commands_by_session(order)
        assert len(commands) == event.after["sessions"] == event.after["commands"] == len(sessions)
        assert {command.status for command in commands.values()} == {Status.RESULT_ACCEPTED}
        assert {command.attempts for command in commands.values()} == {1}
        active = SandboxChargingProfile.objects.filter(client__token_from_client=sandbox_cpo.token_for_cpo,
                                                       is_active=True)
        assert sorted(profile.session_id for profile in active) == sorted(commands)
        for profile in active:
            command = commands[profile.session_id]
            assert profile.charging_profile == command.request_body["charging_profile"]
            assert profile.response_url == command.request_body["response_url"]
            assert profile.response_url.startswith(f"{django_settings.PUBLIC_BASE_URL}/ocpi/2.2.1/")
            assert (profile.sync_result, profile.async_result) == ("ACCEPTED", "ACCEPTED")

    def test_a_cpo_that_rejects_everything_leaves_every_command_rejected(self, world, tomorrow, sandbox_cpo):
        SandboxCpoClient.objects.filter(token_from_client=sandbox_cpo.token_for_cpo).update(reject_all=True)
        sessions = evening_cars(world, tomorrow, sandbox_cpo)
        offer = propose_and_submit(world, tomorrow)
        order = market_services.flex_offer_accept(flex_offer=offer, dso=world.gridco)

        commands = commands_by_session(order)
        assert len(commands) == len(sessions)
        every = Command.objects.filter(session__in=sessions)
        # The first refusal per session re-optimises once; the re-planned profiles are refused too, and no more
        # rounds follow (no ping-pong with a CPO that refuses us).
        assert set(every.values_list("status", flat=True)) == {Status.REJECTED}
        per_session = Counter(every.values_list("session_id", flat=True))
        assert set(per_session) == {session.pk for session in sessions}
        assert max(per_session.values()) <= 2
        assert {command.result_at for command in every} == {None}
        profiles = SandboxChargingProfile.objects.all()
        assert profiles.count() == every.count()
        assert {(p.sync_result, p.is_active, p.async_result, p.result_posted_at) for p in profiles} == {
            ("REJECTED", False, "", None)}

    def test_a_session_the_cpo_no_longer_knows_ends_unknown_session(self, world, tomorrow, sandbox_cpo, monkeypatch):
        from aggregator.tasks import send_order_commands_task

        sessions = evening_cars(world, tomorrow, sandbox_cpo)
        held: list[list[str]] = []
        monkeypatch.setattr(delivery, "enqueue_send", held.append)  # dispatch now, send below
        offer = propose_and_submit(world, tomorrow)
        order = market_services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
        assert sorted(held[0]) == sorted(str(pk) for pk in Command.objects.filter(flex_order=order).values_list(
            "pk", flat=True))
        gone = sessions[1]
        # The car left between dispatch and sending: the CPO ended (forgot) the session.
        ChargingSession.objects.filter(pk=gone.pk).update(status=ChargingSession.Status.INVALID)

        send_order_commands_task.delay(str(order.pk))

        commands = commands_by_session(order)
        assert commands.pop(gone.cpo_session_id).status == Status.UNKNOWN_SESSION
        assert {command.status for command in commands.values()} == {Status.RESULT_ACCEPTED}
        assert not SandboxChargingProfile.objects.filter(session_id=gone.cpo_session_id, is_active=True).exists()


@pytest.mark.django_db
def test_dispatch_keeps_the_points_capacity_in_every_slot_not_only_the_ordered_ones(
        world, tomorrow, django_capture_on_commit_callbacks):
    placed = place_order(world, tomorrow, django_capture_on_commit_callbacks)
    snapshot = placed.snapshot
    uncontrolled_total = snapshot.uncontrolled_kw.sum(axis=0) + snapshot.base_load_kw
    # Well below the uncontrolled evening peak, yet above what the cars need spread over the night.
    capacity_kw = float(snapshot.base_load_kw.max()) + 9.0
    assert uncontrolled_total.max() > capacity_kw + 5
    world.cp_north.capacity_kw = Decimal(str(round(capacity_kw, 1)))
    world.cp_north.save(update_fields=["capacity_kw"])
    placed.order.congestion_point.refresh_from_db()

    flex_order_dispatch(flex_order=placed.order)
    planned_kw = planned_w_by_slot(SessionSchedule.objects.filter(flex_order=placed.order)) / 1000
    load_kw = planned_kw + snapshot.base_load_kw[: planned_kw.size]
    assert load_kw.max() <= float(world.cp_north.capacity_kw) + 0.05
