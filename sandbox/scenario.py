"""The demo scenario: one DSO, two aggregators, three congestion points and a residential day of charging.

Everything is created through the same models the product uses; sessions are sampled from the real
Dutch distributions in sandbox.sessions. The simulated CPO (sandbox.cpo) serves both aggregators,
each with its own OCPI credentials.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from django.db import transaction
from rest_framework.authtoken.models import Token

from aggregator.models import ChargePoint, ChargePointOperator, ChargingSession
from common.ean import ean18_from_data
from market.models import AggregatorConnection, CongestionPoint, Connection, Participant, User
from sandbox.models import SandboxCpoClient
from sandbox.sessions import sample_session

DSO_LOGIN = ("dso", "demo-dso-2026")
ADMIN_LOGIN = ("admin", "demo-admin-2026")
AGGREGATOR_LOGINS = {"voltflex": "demo-voltflex-2026", "chargeco": "demo-chargeco-2026"}

CONGESTION_POINTS = [
    ("Transformer Oosterpark 10/0.4 kV", "87169000010000001"),
    ("Transformer Zeeheldenbuurt 10/0.4 kV", "87169000010000002"),
    ("Transformer Vogelwijk 10/0.4 kV", "87169000010000003"),
]
VOLTFLEX_SHARE = 0.6  # of the charge points behind each congestion point; the rest is Chargeco's
SESSION_PROBABILITY = 0.85  # a home charge point sees a session on a given day
EVSE_MIX = [(3700, 1, 0.35), (11000, 3, 0.65)]  # (max W, phases, share): 1-phase 16 A and 3-phase 16 A


@dataclass
class DemoWorld:
    period: date
    dso: Participant
    aggregators: list[Participant]
    congestion_points: list[CongestionPoint]
    charge_points: int
    sessions: int
    api_tokens: dict[str, str] = field(default_factory=dict)


def _user(username: str, password: str, participant: Participant | None, **extra: bool) -> User:
    user = User(username=username, participant=participant, **extra)
    user.set_password(password)
    user.save()
    return user


@transaction.atomic
def demo_scenario_load(
    *, period: date, base_url: str, charge_points_per_congestion_point: int = 180, seed: int = 2026
) -> DemoWorld:
    """Create the demo world on an empty database. `base_url` is where the simulated CPO is served."""
    rng = random.Random(seed)
    dso = Participant.objects.create(name="Polder Netbeheer", role=Participant.Role.DSO,
                                     domain="polder-netbeheer.example")
    voltflex = Participant.objects.create(name="Voltflex", role=Participant.Role.AGR, domain="voltflex.example")
    chargeco = Participant.objects.create(name="Chargeco", role=Participant.Role.AGR, domain="chargeco.example")
    _user(DSO_LOGIN[0], DSO_LOGIN[1], dso, is_staff=False)
    _user(ADMIN_LOGIN[0], ADMIN_LOGIN[1], None, is_staff=True, is_superuser=True)
    tokens = {}
    for aggregator in (voltflex, chargeco):
        username = aggregator.name.lower()
        tokens[username] = Token.objects.create(user=_user(username, AGGREGATOR_LOGINS[username], aggregator)).key

    cpo_url = f"{base_url.rstrip('/')}/sandbox/cpo/ocpi/2.2.1/chargingprofiles"
    cpos = {}
    for aggregator in (voltflex, chargeco):
        token_for_cpo, token_from_cpo = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        cpos[aggregator.pk] = ChargePointOperator.objects.create(
            aggregator=aggregator, name="Sandbox CPO", country_code="NL", party_id="SBX",
            chargingprofiles_url=cpo_url, token_for_cpo=token_for_cpo, token_from_cpo=token_from_cpo,
        )
        SandboxCpoClient.objects.create(name=aggregator.name, token_from_client=token_for_cpo,
                                        token_for_client=token_from_cpo)

    points: list[CongestionPoint] = []
    connection_serial = 0
    session_count = 0
    for name, ean_data in CONGESTION_POINTS:
        point = CongestionPoint.objects.create(ean=ean18_from_data(ean_data), dso=dso, name=name)
        points.append(point)
        for index in range(charge_points_per_congestion_point):
            connection_serial += 1
            connection = Connection.objects.create(
                ean=ean18_from_data(f"871687{connection_serial:011d}"), congestion_point=point,
                annual_consumption_kwh=rng.randint(1800, 4500),
            )
            aggregator = voltflex if index < charge_points_per_congestion_point * VOLTFLEX_SHARE else chargeco
            AggregatorConnection.objects.create(aggregator=aggregator, connection=connection,
                                                valid_from=date(2026, 1, 1))
            max_w, phases, _ = rng.choices(EVSE_MIX, weights=[m[2] for m in EVSE_MIX])[0]
            charge_point = ChargePoint.objects.create(
                cpo=cpos[aggregator.pk], connection=connection, evse_uid=f"NL*SBX*E{connection_serial:05d}",
                max_power_w=max_w, phases=phases,
            )
            if rng.random() < SESSION_PROBABILITY:
                sampled = sample_session(rng=rng, day=period)
                ChargingSession.objects.create(
                    charge_point=charge_point,
                    cpo_session_id=f"SBX{period:%y%m%d}{connection_serial:05d}",
                    arrival_at=sampled.arrival,
                    expected_departure_at=sampled.departure,
                    energy_requested_kwh=Decimal(str(sampled.energy_kwh)),
                    max_power_w=int(min(max_w, sampled.car_max_power_kw * 1000)),
                    status=ChargingSession.Status.PENDING,
                )
                session_count += 1
    return DemoWorld(period=period, dso=dso, aggregators=[voltflex, chargeco], congestion_points=points,
                     charge_points=connection_serial, sessions=session_count, api_tokens=tokens)
