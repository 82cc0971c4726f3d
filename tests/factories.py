"""factory_boy factories for the domain; tests/conftest.py builds named actors from them."""

from __future__ import annotations

import itertools
from datetime import date
from decimal import Decimal

import factory

from aggregator.models import ChargePoint, ChargePointOperator, ChargingSession
from common.ean import ean18_from_data
from market.models import AggregatorConnection, CongestionPoint, Connection, Participant, User

_ean_counter = itertools.count(1)


def next_ean(prefix: str = "871685") -> str:
    """A fresh, valid EAN-18 (GS1 check digit included)."""
    body = f"{prefix}{next(_ean_counter):011d}"
    return ean18_from_data(body)


class ParticipantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Participant

    name = factory.Sequence(lambda n: f"Participant {n}")
    role = Participant.Role.AGR
    domain = factory.Sequence(lambda n: f"participant{n}.example.com")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    participant = factory.SubFactory(ParticipantFactory)
    password = factory.PostGenerationMethodCall("set_password", "pw-for-tests-1")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # noqa: N805
        if create:
            obj.save()


class CongestionPointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CongestionPoint

    ean = factory.LazyFunction(lambda: next_ean("871690"))
    dso = factory.SubFactory(ParticipantFactory, role=Participant.Role.DSO)
    name = factory.Sequence(lambda n: f"Transformer {n}")
    capacity_kw = Decimal("400.0")


class ConnectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Connection

    ean = factory.LazyFunction(next_ean)
    congestion_point = factory.SubFactory(CongestionPointFactory)
    annual_consumption_kwh = 2800


class AggregatorConnectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AggregatorConnection

    aggregator = factory.SubFactory(ParticipantFactory, role=Participant.Role.AGR)
    connection = factory.SubFactory(ConnectionFactory)
    valid_from = date(2020, 1, 1)
    valid_until = None


class ChargePointOperatorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ChargePointOperator

    aggregator = factory.SubFactory(ParticipantFactory, role=Participant.Role.AGR)
    name = factory.Sequence(lambda n: f"CPO {n}")
    country_code = "NL"
    party_id = factory.Sequence(lambda n: f"C{n % 100:02d}")
    chargingprofiles_url = "http://127.0.0.1:9/ocpi/2.2.1/chargingprofiles"
    token_for_cpo = factory.Sequence(lambda n: f"token-for-cpo-{n}")
    token_from_cpo = factory.Sequence(lambda n: f"token-from-cpo-{n}")


class ChargePointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ChargePoint

    cpo = factory.SubFactory(ChargePointOperatorFactory)
    connection = factory.SubFactory(ConnectionFactory)
    evse_uid = factory.Sequence(lambda n: f"NL*SBX*E{n:06d}")
    max_power_w = 11000
    phases = 3


class ChargingSessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ChargingSession

    charge_point = factory.SubFactory(ChargePointFactory)
    cpo_session_id = factory.Sequence(lambda n: f"SES{n:08d}")
    arrival_at = None  # tests pass explicit times
    expected_departure_at = None
    energy_requested_kwh = Decimal("20.000")
    max_power_w = 11000
    status = ChargingSession.Status.PENDING
