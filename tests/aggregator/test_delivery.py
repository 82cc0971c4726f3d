"""Delivery that loses nothing (aggregator.delivery), against a fake CPO on a real local HTTP server.

Faults: 500s, timeouts, garbage, a platform down for minutes, permanent 4xx, TOO_OFTEN; the sweeper (lost workers,
result timeouts), dead letters and their re-try, superseding, and the async results. Time is moved with a patched
clock (common.time.now), never slept: a "ten minute" outage takes milliseconds.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command

from aggregator import delivery, services
from aggregator.adapters.ocpi import set_charging_profile_body
from aggregator.models import ChargePointOperator, ChargingProfileCommand, ChargingSession, OcpiEvse
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory
from tests.support.fake_cpo import FakeCpo

Command = ChargingProfileCommand
Status = ChargingProfileCommand.Status
START = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.value = start

    def __call__(self) -> datetime:
        return self.value

    def advance(self, **delta: float) -> None:
        self.value += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock(START)
    monkeypatch.setattr("common.time.now", fake)
    return fake


@pytest.fixture
def fake_cpo():
    with FakeCpo() as running:
        yield running


@pytest.fixture
def cpo(world, fake_cpo, settings) -> ChargePointOperator:
    settings.HTTP_READ_TIMEOUT_S = 0.3
    settings.HTTP_CONNECT_TIMEOUT_S = 0.3
    settings.DISPATCH_MAX_ATTEMPTS = 12
    return ChargePointOperatorFactory(aggregator=world.voltflex, chargingprofiles_url=fake_cpo.base_url)


@pytest.fixture
def rejections(monkeypatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(services, "charging_session_changed",
                        lambda *, session, reason: calls.append((session.cpo_session_id, reason)))
    return calls


def sessions_at(world, cpo: ChargePointOperator, count: int) -> list[ChargingSession]:
    result = []
    for index in range(count):
        point = ChargePointFactory(cpo=cpo, connection=world.voltflex_connections[index % 3])
        result.append(ChargingSessionFactory(charge_point=point, cpo_session_id=f"S{index:04d}",
                                             arrival_at=START, expected_departure_at=START + timedelta(hours=8)))
    return result


def new_commands(sessions: list[ChargingSession], limit_w: int = 7400) -> list[Command]:
    commands = []
    for session in sessions:
        command = Command(kind=Command.Kind.SET, cpo=session.charge_point.cpo, session=session)
        command.request_body = set_charging_profile_body(start=START, limits_w=[limit_w] * 4,
                                                         response_url=delivery.response_url_for(command.id))
        commands.append(command)
    return commands


def put(commands: list[Command], monkeypatch) -> list[str]:
    """outbox_put with the after-commit enqueue held back: the test drives sending itself."""
    monkeypatch.setattr(delivery, "enqueue_send", lambda ids, **kw: len(ids))
    return [str(command.pk) for command in delivery.outbox_put(commands)]


def drive(ids: list[str], clock: FakeClock, *, rounds: int = 60, on_round: Any = None) -> int:
    """What the workers and beat do, with time moved instead of waited: send what is due, sweep, jump to the next
    due moment. Returns the rounds it took for every command to be final or ACCEPTED."""
    for round_ in range(1, rounds + 1):
        if on_round:
            on_round(round_)
        delivery.send_batch(ids)
        delivery.sweep()
        waiting = Command.objects.filter(pk__in=ids, status__in=[Status.PENDING, Status.SENDING])
        if not waiting.exists():
            return round_
        due = waiting.exclude(next_attempt_at=None).order_by("next_attempt_at").values_list(
            "next_attempt_at", flat=True).first()
        clock.value = max(clock.value + timedelta(seconds=1), due or clock.value)
    raise AssertionError(f"not final after {rounds} rounds: "
                         f"{list(Command.objects.filter(pk__in=ids).values_list('status', flat=True))}")


def statuses(ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in Command.objects.filter(pk__in=ids).values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def response_urls(ids: list[str]) -> list[str]:
    return [body["response_url"] for body in Command.objects.filter(pk__in=ids).values_list("request_body", flat=True)]


def assert_each_applied_once(fake: FakeCpo, ids: list[str]) -> None:
    urls = response_urls(ids)
    assert {url: fake.applied[url] for url in urls} == dict.fromkeys(urls, 1)


@pytest.mark.django_db
class TestTransientFaults:
    def test_500s_are_retried_with_backoff_until_accepted(self, world, cpo, fake_cpo, clock, monkeypatch):
        ids = put(new_commands(sessions_at(world, cpo, 3)), monkeypatch)
        fake_cpo.script = ["error"] * 6  # the first two rounds fail for all three
        drive(ids, clock)
        assert statuses(ids) == {Status.ACCEPTED: 3}
        # 6 failed attempts + 3 successful ones, whichever command drew which failure.
        assert sum(Command.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == 9
        assert sum(fake_cpo.receipts.values()) == 9
        assert_each_applied_once(fake_cpo, ids)

    def test_the_backoff_grows_and_stays_within_full_jitter(self, world, cpo, fake_cpo, clock, monkeypatch):
        [command_id] = put(new_commands(sessions_at(world, cpo, 1)), monkeypatch)
        fake_cpo.mode = "error"
        waits = []
        for attempt in range(1, 6):
            delivery.send_batch([command_id])
            command = Command.objects.get(pk=command_id)
            assert (command.status, command.attempts) == (Status.PENDING, attempt)
            waits.append((command.next_attempt_at - clock.value).total_seconds())
            assert 0 <= waits[-1] <= 2.0 * 2 ** (attempt - 1)  # common.retry: uniform in [0, base * 2^(n-1)]
            delivery.send_batch([command_id])  # not due yet: nothing is sent
            assert Command.objects.get(pk=command_id).attempts == attempt
            clock.value = command.next_attempt_at
        assert sum(fake_cpo.receipts.values()) == 5

    def test_a_timeout_is_retried_and_the_in_doubt_resend_is_not_applied_twice(
            self, world, cpo, fake_cpo, clock, monkeypatch):
        ids = put(new_commands(sessions_at(world, cpo, 2)), monkeypatch)
        fake_cpo.slow_s = 1.0  # beyond the 0.3 s read timeout: the CPO applied it, we never heard
        fake_cpo.script = ["timeout", "timeout"]
        drive(ids, clock)
        assert statuses(ids) == {Status.ACCEPTED: 2}
        urls = response_urls(ids)
        assert [fake_cpo.receipts[url] for url in urls] == [2, 2]  # sent twice (at-least-once on the wire) ...
        assert_each_applied_once(fake_cpo, ids)  # ... applied once (PUT of the same profile replaces itself)

    def test_garbage_answers_are_retried(self, world, cpo, fake_cpo, clock, monkeypatch):
        ids = put(new_commands(sessions_at(world, cpo, 2)), monkeypatch)
        fake_cpo.script = ["garbage", "garbage", "garbage"]
        drive(ids, clock)
        assert statuses(ids) == {Status.ACCEPTED: 2}
        assert sum(Command.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == 5
        assert set(Command.objects.filter(pk__in=ids).values_list("last_error", flat=True)) == {""}
        assert_each_applied_once(fake_cpo, ids)

    def test_a_cpo_down_for_minutes_gets_everything_once_it_is_back(self, world, cpo, fake_cpo, clock, monkeypatch):
        ids = put(new_commands(sessions_at(world, cpo, 5)), monkeypatch)
        fake_cpo.stop()
        went_down = clock.value

        def comes_back_after_five_minutes(_round: int) -> None:
            if clock.value - went_down >= timedelta(minutes=5) and fake_cpo._server is None:
                fake_cpo.start()

        rounds = drive(ids, clock, on_round=comes_back_after_five_minutes)
        assert rounds > 3
        assert clock.value - went_down >= timedelta(minutes=5)
        # Delivered; the fake CPO posts no async results, so those accepted early time out while the clock runs.
        assert set(statuses(ids)) <= {Status.ACCEPTED, Status.TIMED_OUT}
        assert all(attempts > 3 for attempts in Command.objects.filter(pk__in=ids).values_list("attempts", flat=True))
        assert_each_applied_once(fake_cpo, ids)


@pytest.mark.django_db
class TestPermanentFaultsAndDeadLetters:
    def test_a_4xx_that_will_not_change_fails_at_once(self, world, cpo, fake_cpo, clock, monkeypatch):
        ids = put(new_commands(sessions_at(world, cpo, 1)), monkeypatch)
        fake_cpo.mode = "bad_request"
        drive(ids, clock)
        command = Command.objects.get(pk=ids[0])
        assert (command.status, command.attempts) == (Status.FAILED, 1)
        assert "HTTP 400" in command.last_error

    def test_attempts_run_out_into_a_dead_letter_that_an_operator_can_retry(
            self, world, cpo, fake_cpo, clock, monkeypatch, settings, django_capture_on_commit_callbacks):
        settings.DISPATCH_MAX_ATTEMPTS = 3
        ids = put(new_commands(sessions_at(world, cpo, 2)), monkeypatch)
        fake_cpo.mode = "error"
        drive(ids, clock)
        assert statuses(ids) == {Status.DEAD_LETTER: 2}
        assert sum(fake_cpo.receipts.values()) == 6

        fake_cpo.mode = "ok"
        requeued: list[list[str]] = []
        monkeypatch.setattr(delivery, "enqueue_send", lambda batch, **kw: requeued.append(list(batch)))
        with django_capture_on_commit_callbacks(execute=True):
            call_command("dispatch_retry", *ids)
        assert statuses(ids) == {Status.PENDING: 2}
        assert sorted(requeued[0]) == sorted(ids)
        drive(ids, clock)
        assert statuses(ids) == {Status.ACCEPTED: 2}
        assert_each_applied_once(fake_cpo, ids)

    def test_retrying_a_dead_letter_that_a_newer_command_replaced_supersedes_it(
            self, world, cpo, fake_cpo, clock, monkeypatch, settings):
        settings.DISPATCH_MAX_ATTEMPTS = 1
        sessions = sessions_at(world, cpo, 1)
        old = put(new_commands(sessions), monkeypatch)
        fake_cpo.mode = "error"
        drive(old, clock)
        fake_cpo.mode = "ok"
        new = put(new_commands(sessions, limit_w=3700), monkeypatch)
        drive(new, clock)
        result = delivery.commands_retry(command_ids=old)
        assert result == {"requeued": 0, "superseded": 1}
        assert Command.objects.get(pk=old[0]).status == Status.SUPERSEDED

    def test_only_final_failures_can_be_retried(self, world, cpo, fake_cpo, clock, monkeypatch):
        ids = put(new_commands(sessions_at(world, cpo, 1)), monkeypatch)
        with pytest.raises(Exception, match="only"):
            delivery.commands_retry(command_ids=ids)


@pytest.mark.django_db
class TestSupersedingAndOrdering:
    def test_a_newer_schedule_supersedes_an_older_unsent_one(self, world, cpo, fake_cpo, clock, monkeypatch):
        sessions = sessions_at(world, cpo, 2)
        old = put(new_commands(sessions), monkeypatch)
        new = put(new_commands(sessions, limit_w=3700), monkeypatch)
        assert statuses(old) == {Status.SUPERSEDED: 2}
        drive(old + new, clock)
        assert statuses(new) == {Status.ACCEPTED: 2}
        assert not any(fake_cpo.receipts[url] for url in response_urls(old))

    def test_a_large_outbox_write_stores_exactly_the_commands_and_supersedes(self, world, cpo, fake_cpo, clock,
                                                                              monkeypatch):
        # Large writes go through COPY on PostgreSQL (bulk_create elsewhere); the threshold is lowered to test it.
        monkeypatch.setattr(delivery, "COPY_MIN_ROWS", 1)
        sessions = sessions_at(world, cpo, 3)
        old = put(new_commands(sessions), monkeypatch)
        written = new_commands(sessions, limit_w=3700)
        new = put(written, monkeypatch)
        assert statuses(old) == {Status.SUPERSEDED: 3}
        fields = [field.attname for field in Command._meta.concrete_fields]
        for command in written:
            stored = Command.objects.get(pk=command.pk)
            assert {name: getattr(stored, name) for name in fields} == {name: getattr(command, name) for name in fields}
            assert not command._state.adding
        drive(new, clock)
        assert statuses(new) == {Status.ACCEPTED: 3}
        assert_each_applied_once(fake_cpo, new)

    def test_a_command_in_backoff_is_superseded_too(self, world, cpo, fake_cpo, clock, monkeypatch):
        sessions = sessions_at(world, cpo, 1)
        old = put(new_commands(sessions), monkeypatch)
        fake_cpo.mode = "error"
        delivery.send_batch(old)
        assert Command.objects.get(pk=old[0]).status == Status.PENDING
        put(new_commands(sessions, limit_w=3700), monkeypatch)
        assert Command.objects.get(pk=old[0]).status == Status.SUPERSEDED

    def test_an_older_command_is_not_sent_after_a_newer_one_went_out(self, world, cpo, fake_cpo, clock, monkeypatch):
        sessions = sessions_at(world, cpo, 1)
        [old, new] = new_commands(sessions) + new_commands(sessions, limit_w=3700)
        Command.objects.bulk_create([old])
        Command.objects.bulk_create([new])
        delivery.send_batch([str(new.pk)])
        delivery.send_batch([str(old.pk)])
        assert Command.objects.get(pk=old.pk).status == Status.SUPERSEDED
        assert fake_cpo.receipts[old.request_body["response_url"]] == 0


@pytest.mark.django_db
class TestSweeper:
    def test_a_command_stuck_in_sending_after_its_lease_is_reclaimed_and_sent_once(
            self, world, cpo, fake_cpo, clock, monkeypatch, settings):
        settings.DISPATCH_LEASE_S = 60
        ids = put(new_commands(sessions_at(world, cpo, 2)), monkeypatch)
        # A worker claimed them and died before sending.
        Command.objects.filter(pk__in=ids).update(status=Status.SENDING, lease_id=uuid.uuid4(), attempts=1,
                                                  lease_until=clock.value + timedelta(seconds=60))
        requeued: list[list[str]] = []
        monkeypatch.setattr(delivery, "enqueue_send", lambda batch, **kw: requeued.append(list(batch)))
        assert delivery.sweep().reclaimed == 0  # lease still running: the worker may be alive
        clock.advance(seconds=61)
        assert delivery.sweep().reclaimed == 2
        assert sorted(requeued[-1]) == sorted(ids)
        drive(ids, clock)
        assert statuses(ids) == {Status.ACCEPTED: 2}
        assert_each_applied_once(fake_cpo, ids)

    def test_a_lost_workers_stale_answer_cannot_overwrite_the_newer_state(self, world, cpo, fake_cpo, clock,
                                                                          monkeypatch):
        ids = put(new_commands(sessions_at(world, cpo, 1)), monkeypatch)
        [claimed] = delivery._claim(ids, clock.value)
        Command.objects.filter(pk=claimed.pk).update(status=Status.PENDING, lease_id=None)  # reclaimed meanwhile
        delivery._record([delivery.Outcome(command=claimed, answer=delivery.ProfileSendResult(result="REJECTED"))])
        assert Command.objects.get(pk=claimed.pk).status == Status.PENDING

    def test_accepted_without_a_result_in_time_times_out_and_a_late_result_still_counts(
            self, world, cpo, fake_cpo, clock, monkeypatch):
        ids = put(new_commands(sessions_at(world, cpo, 1)), monkeypatch)
        drive(ids, clock)
        command = Command.objects.get(pk=ids[0])
        assert (command.status, command.response_timeout_s) == (Status.ACCEPTED, 30)
        clock.advance(seconds=29)
        assert delivery.sweep().timed_out == 0
        clock.advance(seconds=2)
        assert delivery.sweep().timed_out == 1
        assert Command.objects.get(pk=ids[0]).status == Status.TIMED_OUT
        delivery.charging_profile_result_record(command=command, result="ACCEPTED", body={"result": "ACCEPTED"})
        assert Command.objects.get(pk=ids[0]).status == Status.RESULT_ACCEPTED

    def test_a_pending_command_whose_task_was_lost_is_requeued(self, world, cpo, fake_cpo, clock, monkeypatch,
                                                               settings):
        ids = put(new_commands(sessions_at(world, cpo, 1)), monkeypatch)
        requeued: list[list[str]] = []
        monkeypatch.setattr(delivery, "enqueue_send", lambda batch, **kw: requeued.append(list(batch)))
        Command.objects.filter(pk__in=ids).update(updated_at=clock.value)
        delivery.sweep()
        assert requeued == []  # just written: its task is still on its way
        clock.advance(seconds=settings.DISPATCH_SWEEP_INTERVAL_S + 1)
        delivery.sweep()
        assert requeued == [ids]


@pytest.mark.django_db
class TestCpoAnswers:
    def test_rejected_hands_the_session_to_reoptimisation_once(self, world, cpo, fake_cpo, clock, monkeypatch,
                                                               rejections):
        sessions = sessions_at(world, cpo, 2)
        ids = put(new_commands(sessions), monkeypatch)
        fake_cpo.mode = "REJECTED"
        drive(ids, clock)
        assert statuses(ids) == {Status.REJECTED: 2}
        assert sorted(rejections) == [("S0000", "profile_rejected"), ("S0001", "profile_rejected")]
        ids = put(new_commands(sessions, limit_w=3700), monkeypatch)  # the re-planned profiles: refused again
        drive(ids, clock)
        assert len(rejections) == 2  # no ping-pong

    def test_a_charger_refusal_in_the_async_result_reoptimises(self, world, cpo, fake_cpo, clock, monkeypatch,
                                                               rejections, django_capture_on_commit_callbacks):
        ids = put(new_commands(sessions_at(world, cpo, 1)), monkeypatch)
        drive(ids, clock)
        command = Command.objects.get(pk=ids[0])
        with django_capture_on_commit_callbacks(execute=True):
            delivery.charging_profile_result_record(command=command, result="REJECTED", body={"result": "REJECTED"})
            delivery.charging_profile_result_record(command=command, result="REJECTED", body={"result": "REJECTED"})
        assert Command.objects.get(pk=ids[0]).status == Status.RESULT_REJECTED
        assert rejections == [("S0000", "profile_rejected")]

    def test_too_often_backs_off_and_sends_again(self, world, cpo, fake_cpo, clock, monkeypatch):
        ids = put(new_commands(sessions_at(world, cpo, 1)), monkeypatch)
        fake_cpo.script = ["TOO_OFTEN", "TOO_OFTEN"]
        drive(ids, clock)
        command = Command.objects.get(pk=ids[0])
        assert (command.status, command.attempts) == (Status.ACCEPTED, 3)
        assert fake_cpo.receipts[command.request_body["response_url"]] == 3

    def test_not_supported_marks_the_evse_and_later_commands_are_not_sent(self, world, cpo, fake_cpo, clock,
                                                                          monkeypatch):
        sessions = sessions_at(world, cpo, 1)
        ids = put(new_commands(sessions), monkeypatch)
        fake_cpo.mode = "NOT_SUPPORTED"
        drive(ids, clock)
        assert statuses(ids) == {Status.NOT_SUPPORTED: 1}
        evse = OcpiEvse.objects.get(cpo=cpo, evse_uid=sessions[0].charge_point.evse_uid)
        assert evse.profiles_supported is False
        fake_cpo.mode = "ok"
        later = put(new_commands(sessions, limit_w=3700), monkeypatch)
        drive(later, clock)
        assert statuses(later) == {Status.NOT_SUPPORTED: 1}
        assert fake_cpo.receipts[response_urls(later)[0]] == 0

    def test_unknown_session_is_dropped(self, world, cpo, fake_cpo, clock, monkeypatch, rejections):
        ids = put(new_commands(sessions_at(world, cpo, 1)), monkeypatch)
        fake_cpo.mode = "UNKNOWN_SESSION"
        drive(ids, clock)
        command = Command.objects.get(pk=ids[0])
        assert (command.status, command.attempts) == (Status.UNKNOWN_SESSION, 1)
        assert rejections == []

    def test_a_result_for_a_command_not_awaiting_one_is_refused(self, world, cpo, fake_cpo, clock, monkeypatch):
        ids = put(new_commands(sessions_at(world, cpo, 1)), monkeypatch)
        command = Command.objects.get(pk=ids[0])
        with pytest.raises(Exception, match="no result expected"):
            delivery.charging_profile_result_record(command=command, result="ACCEPTED", body={})


@pytest.mark.django_db
def test_outbox_put_enqueues_only_after_commit(world, cpo, monkeypatch, django_capture_on_commit_callbacks):
    sent: list[list[str]] = []
    monkeypatch.setattr(delivery, "enqueue_send", lambda ids, **kw: sent.append(list(ids)))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        delivery.outbox_put(new_commands(sessions_at(world, cpo, 3)))
    assert sent == []  # nothing leaves before the decision is committed
    for callback in callbacks:
        callback()
    assert len(sent) == 1 and len(sent[0]) == 3


@pytest.mark.django_db
def test_enqueue_send_splits_into_batches(world, cpo, settings, monkeypatch):
    settings.DISPATCH_BATCH_SIZE = 2
    batches: list[list[str]] = []
    from aggregator import tasks

    monkeypatch.setattr(tasks.send_commands_task, "delay", lambda ids: batches.append(ids))
    assert delivery.enqueue_send([str(uuid.uuid4()) for _ in range(5)]) == 3
    assert [len(batch) for batch in batches] == [2, 2, 1]


@pytest.mark.django_db
def test_the_admin_console_lists_dead_letters_and_retries_them(world, cpo, admin_client, monkeypatch,
                                                               django_capture_on_commit_callbacks):
    ids = put(new_commands(sessions_at(world, cpo, 2)), monkeypatch)
    Command.objects.filter(pk__in=ids).update(status=Status.DEAD_LETTER, attempts=12, last_error="HTTP 503")
    listing = admin_client.get("/admin/aggregator/chargingprofilecommand/", {"status__exact": "DEAD_LETTER"})
    assert listing.status_code == 200
    assert all(command_id in listing.content.decode() for command_id in ids)
    queued: list[list[str]] = []
    monkeypatch.setattr(delivery, "enqueue_send", lambda batch, **kw: queued.append(list(batch)))
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/admin/aggregator/chargingprofilecommand/",
                                     {"action": "retry_commands", "_selected_action": ids}, follow=True)
    assert "2 re-queued" in response.content.decode()
    assert statuses(ids) == {Status.PENDING: 2}
    assert set(Command.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {0}
    assert sorted(queued[0]) == sorted(ids)


@pytest.mark.django_db
def test_reading_the_active_profile_does_not_supersede_a_pending_set(world, cpo, monkeypatch):
    sessions = sessions_at(world, cpo, 1)
    [pending_set] = put(new_commands(sessions), monkeypatch)
    get = Command(kind=Command.Kind.GET, cpo=cpo, session=sessions[0], request_body={"duration": 900})
    put([get], monkeypatch)
    assert Command.objects.get(pk=pending_set).status == Status.PENDING
    clear = Command(kind=Command.Kind.CLEAR, cpo=cpo, session=sessions[0])
    put([clear], monkeypatch)
    assert Command.objects.get(pk=pending_set).status == Status.SUPERSEDED
    assert Command.objects.get(pk=get.pk).status == Status.PENDING
