"""common.sql: hand-written statements give the same rows and instances the ORM would."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection

from common.models import AuditEvent
from common.sql import array_param, insert_instances, instance_from_row, select_columns
from market.models import Participant

pytestmark = pytest.mark.django_db


def test_insert_instances_fills_auto_values_and_reads_back_database_ids():
    dso = Participant(name="Grid A", role=Participant.Role.DSO, domain="grid-a.example")
    insert_instances(Participant, [dso], connection=connection)
    events = [AuditEvent(action="x.done", actor_label="test", content_type=ContentType.objects.get_for_model(Participant), object_id=str(n),
                         after={"n": n, "nested": [1, "two"]}) for n in range(3)]
    insert_instances(AuditEvent, events, connection=connection)

    assert [event.pk for event in events] == sorted(event.pk for event in events)
    assert all(event.pk is not None and not event._state.adding for event in events)
    stored = AuditEvent.objects.in_bulk([event.pk for event in events])
    assert [stored[event.pk].after for event in events] == [{"n": n, "nested": [1, "two"]} for n in range(3)]
    assert stored[events[0].pk].occurred_at == events[0].occurred_at  # auto_now_add set once, as stored
    again = Participant.objects.get(pk=dso.pk)
    assert (again.domain, again.created_at) == ("grid-a.example", dso.created_at)


def test_instance_from_row_converts_like_the_orm():
    dso = Participant.objects.create(name="Grid B", role=Participant.Role.DSO, domain="grid-b.example")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {select_columns(Participant, 'p')}, 1 FROM market_participant p WHERE p.domain = %s",  # noqa: S608
                       ["grid-b.example"])
        row = cursor.fetchone()
    built, offset = instance_from_row(Participant, row, offset=0, alias="p", connection=connection)
    assert row[offset] == 1
    orm = Participant.objects.get(pk=dso.pk)
    assert {f.attname: getattr(built, f.attname) for f in Participant._meta.concrete_fields} == {
        f.attname: getattr(orm, f.attname) for f in Participant._meta.concrete_fields}
    assert not built._state.adding


@pytest.mark.skipif(connection.vendor != "postgresql", reason="array parameters are PostgreSQL's")
@pytest.mark.parametrize(("sql_type", "values"), [
    ("text", ["1", "", "a,b", "{x}", 'say "hi"', "back\\slash", "\\\"", "NULL", "null", " padded ", "ünï €", None]),
    ("integer", [0, -5, 2_147_483_647, None]),
    ("bigint", [10**15, -(10**15)]),
    ("numeric", [Decimal("12.50"), Decimal("0.0001"), Decimal("-3"), Decimal("1E+2"), None]),
    ("uuid", [uuid.UUID("6d2b6c7e-0000-4000-8000-000000000000"), None]),
    ("boolean", [True, False, None]),
    ("timestamptz", [datetime(2026, 3, 29, 1, 15, 0, 123456, tzinfo=UTC), None]),
    ("date", [date(2026, 10, 25)]),
    ("text", []),
    ("text", [Participant.Role.DSO, "plain"]),  # a TextChoices member is its value
])
def test_array_params_reach_postgresql_as_the_values_themselves(sql_type, values):
    param = array_param(values)
    assert isinstance(param, str)  # all of these take the text form
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT %s::{sql_type}[]", [param])
        stored = cursor.fetchone()[0]
    expected = [str(value) if isinstance(value, Participant.Role) else value for value in values]
    assert stored == expected


def test_array_params_of_other_types_stay_lists():
    values = [{"a": 1}, 2]
    assert array_param(values) is values
    assert array_param([1.5]) == [1.5]  # floats: psycopg's own (repr rounding is not the database's)
