"""common.sql: hand-written statements give the same rows and instances the ORM would."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection

from common.models import AuditEvent
from common.sql import insert_instances, instance_from_row, select_columns
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
