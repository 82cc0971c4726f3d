"""Charging session lifecycle: completion once, with the energy the CPO reports."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from aggregator.models import ChargingSession
from aggregator.services import charging_session_complete
from common import isp as isp_time
from common.exceptions import TransitionError
from tests.factories import ChargingSessionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(tomorrow):
    arrival = isp_time.isp_start(tomorrow, 70)
    return ChargingSessionFactory(arrival_at=arrival, expected_departure_at=arrival + timedelta(hours=10))


def test_a_pending_session_completes_with_its_energy(session):
    ended = session.expected_departure_at
    charging_session_complete(session=session, ended_at=ended, energy_delivered_kwh=Decimal("18.250"))
    session.refresh_from_db()
    assert session.status == ChargingSession.Status.COMPLETED
    assert (session.ended_at, session.energy_delivered_kwh) == (ended, Decimal("18.250"))


def test_a_session_completes_only_once(session):
    charging_session_complete(session=session, ended_at=session.expected_departure_at,
                              energy_delivered_kwh=Decimal("1"))
    with pytest.raises(TransitionError):
        charging_session_complete(session=session, ended_at=session.expected_departure_at,
                                  energy_delivered_kwh=Decimal("2"))
    session.refresh_from_db()
    assert session.energy_delivered_kwh == Decimal("1.000")


def test_an_invalid_session_cannot_complete(session):
    ChargingSession.objects.filter(pk=session.pk).update(status=ChargingSession.Status.INVALID)
    with pytest.raises(TransitionError):
        charging_session_complete(session=session, ended_at=session.expected_departure_at,
                                  energy_delivered_kwh=Decimal("1"))
