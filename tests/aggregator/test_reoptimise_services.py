"""Boost through the API, re-optimisation in a real Celery worker on Redis against PostgreSQL (services leg)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from aggregator.models import ChargingSession, SessionSchedule
from common import isp as isp_time
from common.models import AuditEvent
from tests.conftest import api_client_for
from tests.factories import (
    AggregatorConnectionFactory,
    ChargePointFactory,
    ChargePointOperatorFactory,
    ChargingSessionFactory,
    ConnectionFactory,
)
from tests.integration.test_celery_worker_dispatch import celery_worker_process  # noqa: F401  (fixture)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_a_boost_is_reoptimised_by_a_worker_for_its_point_only(world, tomorrow, celery_worker_process):  # noqa: F811
    process, log = celery_worker_process
    cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
    south_connection = ConnectionFactory(congestion_point=world.cp_south)
    AggregatorConnectionFactory(aggregator=world.voltflex, connection=south_connection)
    arrival = isp_time.isp_start(tomorrow, 70)
    north = [ChargingSessionFactory(charge_point=ChargePointFactory(cpo=cpo, connection=connection),
                                    arrival_at=arrival, expected_departure_at=arrival + timedelta(hours=12))
             for connection in world.voltflex_connections]
    south = ChargingSessionFactory(charge_point=ChargePointFactory(cpo=cpo, connection=south_connection),
                                   arrival_at=arrival, expected_departure_at=arrival + timedelta(hours=12))

    response = api_client_for(world.voltflex_user).post(f"/api/v1/aggregator/sessions/{north[0].pk}/boost/")
    assert response.status_code == 200, response.content

    deadline = time.monotonic() + 90
    while not AuditEvent.objects.filter(action="portfolio.reoptimised", object_id=str(world.cp_north.pk)).exists():
        assert process.poll() is None, f"worker died:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no re-optimisation; worker log:\n{log.read_text()}"
        time.sleep(0.3)

    event = AuditEvent.objects.get(action="portfolio.reoptimised", object_id=str(world.cp_north.pk))
    assert event.after["reason"] == "boost"
    assert event.after["sessions_scheduled"] == len(north)
    assert SessionSchedule.objects.filter(session__in=north, is_current=True).count() == len(north)
    assert not SessionSchedule.objects.filter(session=south).exists()
    assert ChargingSession.objects.get(pk=north[0].pk).boosted_at is not None
    assert "aggregator.tasks.reoptimise_congestion_point_task" in log.read_text()
