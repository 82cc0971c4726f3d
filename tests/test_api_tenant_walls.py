"""Tenant walls over EVERY /api/v1/ URL: another participant's credentials never read, touch or reveal an object.

The URL patterns are walked from the resolver (as tests/test_openapi.py does), so a new endpoint must be added
to PLAN below or this test fails: nothing slips past the wall unreviewed. Each pattern is called with the ids
of objects owned by Voltflex (AGR) and Gridco (DSO) on a point only they work on, by Chargeco (another
aggregator) and by Otherdso (another DSO). Every answer must be 403/404 (or a 400 refusing the reference in
the body), a list must not contain the objects, and no body may carry their ids, references or EANs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from aggregator import services as aggregator_services
from aggregator.models import ChargingSession, Driver
from common import isp as isp_time
from common import time as clock
from market import services
from market.apikeys import api_key_create
from market.models import (
    ApiKey,
    CongestionPoint,
    DPrognosis,
    FlexContract,
    FlexOffer,
    FlexOrder,
    FlexRequest,
    FlexReservationUpdate,
    Participant,
)
from market.services import IspPower
from settlement.ingest import RawRow
from settlement.models import Dispute, MeterImportBatch, MeterReading, OrderSettlement, SettlementLine, Statement
from settlement.services import meter_rows_import
from tests.builders import make_offer, make_prognosis, make_request
from tests.conftest import World, api_client_for
from tests.factories import (
    AggregatorConnectionFactory,
    ChargePointFactory,
    ChargePointOperatorFactory,
    ChargingSessionFactory,
    CongestionPointFactory,
    ConnectionFactory,
)

pytestmark = pytest.mark.django_db

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
# Codes that refuse a reference in a request body without saying anything about the referenced object.
# Congestion point EANs are public market data (the CRO publishes them), so "not yours" may differ from "unknown".
REFERENCE_CODES = {"unknown_reference", "unknown_contract", "unknown_congestion_point", "foreign_congestion_point",
                   "congestion_point_not_represented"}


# --- what is owned ----------------------------------------------------------------------------------------


@dataclass
class Owned:
    """One of everything, owned by Voltflex and Gridco on `point`, where no other participant works."""

    day: date
    point: CongestionPoint
    request: FlexRequest
    prognosis: DPrognosis
    open_offer: FlexOffer
    ordered_offer: FlexOffer
    order: FlexOrder
    contract: FlexContract
    reservation: FlexReservationUpdate
    statement: Statement
    voltflex_key: ApiKey
    gridco_key: ApiKey
    dispute: Any = None
    driver: Any = None  # Voltflex's driver and a session of theirs behind `point` (aggregator API)
    charging_session: Any = None
    meter_batch: Any = None  # Gridco's meter-data delivery for `point`

    def secrets(self, world: World, caller: Participant) -> set[str]:
        """Strings that must never reach `caller`: ids, references and EANs of what it may not see."""
        messages = (self.request, self.prognosis, self.open_offer, self.ordered_offer, self.order, self.reservation)
        found = {str(obj.pk) for obj in (*messages, self.contract, self.statement, self.voltflex_key,
                                         self.gridco_key)}
        if self.dispute is not None:
            found |= {str(self.dispute.pk), self.dispute.reason}
        found |= {str(obj.message_id) for obj in messages}
        found |= {str(self.request.conversation_id), str(self.ordered_offer.conversation_id)}
        # (driver references and token uids are per aggregator: another may register the same ones)
        found |= {str(obj.pk) for obj in (self.driver, self.charging_session) if obj is not None}
        if self.meter_batch is not None:
            found.add(str(self.meter_batch.pk))
        if self.charging_session is not None:
            found.add(self.charging_session.cpo_session_id)
        found |= {self.order.order_reference, self.contract.contract_id, self.voltflex_key.prefix,
                  self.gridco_key.prefix, self.point.ean}
        found |= {connection.ean for connection in self.point.connections.all()}
        found |= {connection.ean for connection in world.voltflex_connections}
        if caller.role == Participant.Role.DSO:  # a foreign DSO sees nothing of Gridco's grid
            found |= {world.cp_north.ean, world.cp_south.ean}
            found |= {connection.ean for connection in world.chargeco_connections}
        return found

    def status(self) -> dict[str, Any]:
        return {
            "request": FlexRequest.objects.get(pk=self.request.pk).status,
            "open_offer": FlexOffer.objects.get(pk=self.open_offer.pk).status,
            "ordered_offer": FlexOffer.objects.get(pk=self.ordered_offer.pk).status,
            "order": FlexOrder.objects.get(pk=self.order.pk).status,
            "reservation": FlexReservationUpdate.objects.get(pk=self.reservation.pk).status,
            "disputes": list(Dispute.objects.values_list("status", flat=True)),
            "keys_live": ApiKey.objects.filter(pk__in=[self.voltflex_key.pk, self.gridco_key.pk],
                                               revoked_at__isnull=True).count(),
            "driver": Driver.objects.filter(pk=self.driver.pk).values_list("flex_opt_out", "updated_at").first()
            if self.driver is not None else None,
            "session": ChargingSession.objects.filter(pk=self.charging_session.pk).values_list(
                "boosted_at", "energy_requested_kwh", "expected_departure_at").first()
            if self.charging_session is not None else None,
            "counts": [model.objects.count() for model in (FlexRequest, DPrognosis, FlexOffer, FlexOrder,
                                                           FlexContract, FlexReservationUpdate, Statement,
                                                           MeterReading)],
        }


@pytest.fixture
def owned(world: World, tomorrow: date) -> Owned:
    point = CongestionPointFactory(dso=world.gridco, name="Private")
    AggregatorConnectionFactory(aggregator=world.voltflex, connection=ConnectionFactory(congestion_point=point))
    request = make_request(dso=world.gridco, point=point, day=tomorrow)
    prognosis = make_prognosis(aggregator=world.voltflex, point=point, day=tomorrow)
    requested = [row.isp for row in request.isps.all()]
    ordered_offer = make_offer(aggregator=world.voltflex, request=request, isps=requested[:4])
    open_offer = make_offer(aggregator=world.voltflex, request=request, isps=requested[4:8])
    order = services.flex_offer_accept(flex_offer=ordered_offer, dso=world.gridco)
    contract = services.flex_contract_create(
        dso=world.gridco, aggregator=world.voltflex, congestion_point=point, contract_id="GV-PRIVATE-1",
        valid_from=tomorrow, reserved_power_w=-50_000, window_start=time(17, 0), window_end=time(21, 0),
        allows_direct_orders=True)
    reserved_day = tomorrow + timedelta(days=2)  # before the contract's reservation deadline
    reservation = services.flex_reservation_update_submit(
        dso=world.gridco, contract=contract, period=reserved_day,
        isps=[IspPower(isp=isp_time.isp_of(isp_time.day_start(reserved_day) + timedelta(hours=17))[1],
                       power_w=-20_000)])
    statement = Statement.objects.create(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow,
                                         period_end=tomorrow, total_eur=Decimal("12.00"), issued_at=clock.now())
    settlement = OrderSettlement.objects.create(
        statement=statement, flex_order=order, d_prognosis=prognosis, ordered_kwh=Decimal("3.750"),
        delivered_kwh=Decimal("3.750"), unit_price_eur_per_kwh=Decimal("3.200000"), total_eur=Decimal("12.00"))
    line = SettlementLine.objects.create(order_settlement=settlement, isp=requested[0],
                                         isp_start=isp_time.isp_start(tomorrow, requested[0]), baseline_w=50_000,
                                         measured_w=35_000, ordered_w=-15_000, delivered_w=15_000,
                                         paid_eur=Decimal("3.00"))
    dispute = Dispute.objects.create(statement=statement, order_settlement=settlement, line=line, flex_order=order,
                                     isp=requested[0], reason="Voltflex-private dispute reason")
    voltflex_key, _ = api_key_create(participant=world.voltflex, name="voltflex-bot")
    gridco_key, _ = api_key_create(participant=world.gridco, name="gridco-bot")
    driver = aggregator_services.driver_create(aggregator=world.voltflex, reference="VOLTFLEX-DRIVER-7",
                                               token_uids=["NL-VFX-SECRET-TOKEN"], flex_opt_out=False)
    charge_point = ChargePointFactory(cpo=ChargePointOperatorFactory(aggregator=world.voltflex),
                                      connection=point.connections.first())
    charging_session = ChargingSessionFactory(
        charge_point=charge_point, driver=driver, cpo_session_id="VFX-SECRET-SESSION",
        arrival_at=isp_time.isp_start(tomorrow, 69), expected_departure_at=isp_time.isp_start(tomorrow, 69)
        + timedelta(hours=12))
    owned_objects = Owned(day=tomorrow, point=point, request=request, prognosis=prognosis, open_offer=open_offer,
                 ordered_offer=ordered_offer, order=order, contract=contract, reservation=reservation,
                 statement=statement, voltflex_key=voltflex_key, gridco_key=gridco_key, dispute=dispute)
    owned_objects.driver, owned_objects.charging_session = driver, charging_session
    owned_objects.meter_batch = meter_rows_import(
        rows=[RawRow(1, point.connections.first().ean, isp_time.isp_start(tomorrow, 69).isoformat(), "0.5", "0", "0")],
        source_format="json", submitted_by=world.gridco).batch
    return owned_objects


# --- how each URL pattern is probed -----------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One call of a URL pattern. `expect`: wall (403/404), reference (403/404 or a 400 refusing the body's
    reference), list (200 scoped, or 403 for a role without that list) or own (201: the caller acts on its own organisation only).
    `owner`: who may read it, to prove the ids are right (the wall is not closed by a typo)."""

    method: str
    kwargs: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    query: dict[str, str] | None = None
    expect: str = "wall"
    owner: str | None = None


def pk(obj: Any) -> dict[str, str]:
    return {"pk": str(obj.pk)}


def _request_body(o: Owned) -> dict[str, Any]:
    return {"congestion_point": o.point.ean, "period": o.day.isoformat(),
            "isps": [{"isp": 69, "disposition": "Requested", "min_power_w": -40_000, "max_power_w": -20_000}],
            "expires_at": (isp_time.isp_start(o.day, 69) - timedelta(hours=2)).isoformat()}


def _offer_bodies(o: Owned) -> list[dict[str, Any]]:
    options = [{"price_eur": "1.00", "isps": [{"isp": 84, "power_w": -1_000}]}]
    expires = o.request.expires_at.isoformat()
    return [
        {"flex_request": str(o.request.pk), "expires_at": expires, "options": options},
        {"flex_request": str(o.request.pk), "d_prognosis": str(o.prognosis.pk), "expires_at": expires,
         "options": options},
        {"congestion_point": o.point.ean, "period": o.day.isoformat(), "expires_at": expires, "options": options},
    ]


def _events(obj_name: str, owner: str) -> Callable[[Owned], list[Probe]]:
    return lambda o: [Probe("get", pk(getattr(o, obj_name)), owner=owner)]


PLAN: dict[str, Callable[[Owned], list[Probe]]] = {
    "market/congestion-points/": lambda o: [Probe("get", expect="list")],
    "market/flex-requests/": lambda o: [
        Probe("get", expect="list"), Probe("get", query={"status": "open"}, expect="list"),
        Probe("get", query={"conversation_id": str(o.request.conversation_id)}, expect="list")],
    "market/flex-requests/create/": lambda o: [Probe("post", body=_request_body(o), expect="reference")],
    "market/flex-requests/<uuid:pk>/": lambda o: [Probe("get", pk(o.request), owner="gridco")],
    "market/flex-requests/<uuid:pk>/revise/": lambda o: [Probe("post", pk(o.request), body={
        "isps": _request_body(o)["isps"], "expires_at": _request_body(o)["expires_at"]})],
    "market/flex-requests/<uuid:pk>/cancel/": lambda o: [Probe("post", pk(o.request))],
    "market/flex-requests/<uuid:pk>/events/": _events("request", "gridco"),
    "market/d-prognoses/": lambda o: [Probe("get", expect="list")],
    "market/d-prognoses/create/": lambda o: [Probe("post", expect="reference", body={
        "congestion_point": o.point.ean, "period": o.day.isoformat(),
        "isps": [{"isp": 1, "duration": isp_time.isp_count(o.day), "power_w": 1_000}]})],
    "market/d-prognoses/<uuid:pk>/": lambda o: [Probe("get", pk(o.prognosis), owner="voltflex")],
    "market/d-prognoses/<uuid:pk>/events/": _events("prognosis", "voltflex"),
    "market/flex-offers/": lambda o: [
        Probe("get", expect="list"), Probe("get", query={"flex_request": str(o.request.pk)}, expect="list"),
        Probe("get", query={"aggregator": "voltflex.example.com"}, expect="list")],
    "market/flex-offers/create/": lambda o: [Probe("post", body=body, expect="reference") for body in _offer_bodies(o)],
    "market/flex-offers/<uuid:pk>/": lambda o: [Probe("get", pk(o.open_offer), owner="voltflex"),
                                                Probe("get", pk(o.ordered_offer), owner="gridco")],
    "market/flex-offers/<uuid:pk>/revoke/": lambda o: [Probe("post", pk(o.open_offer))],
    "market/flex-offers/<uuid:pk>/reject/": lambda o: [Probe("post", pk(o.open_offer))],
    "market/flex-offers/<uuid:pk>/accept/": lambda o: [Probe("post", pk(o.open_offer), body={})],
    "market/flex-offers/<uuid:pk>/events/": _events("ordered_offer", "voltflex"),
    "market/flex-orders/": lambda o: [Probe("get", expect="list"),
                                      Probe("get", query={"order_reference": o.order.order_reference}, expect="list")],
    "market/flex-orders/create/": lambda o: [Probe("post", expect="reference", body={
        "aggregator": "voltflex.example.com", "congestion_point": o.point.ean, "period": o.day.isoformat(),
        "contract": o.contract.contract_id, "isps": [{"isp": 84, "power_w": -1_000}], "price_eur": "1.00"})],
    "market/flex-orders/<uuid:pk>/": lambda o: [Probe("get", pk(o.order), owner="voltflex")],
    "market/flex-orders/<uuid:pk>/events/": _events("order", "gridco"),
    "market/contracts/": lambda o: [Probe("get", expect="list")],
    "market/reservation-updates/": lambda o: [
        Probe("get", expect="list"), Probe("get", query={"contract": o.contract.contract_id}, expect="list")],
    "market/reservation-updates/create/": lambda o: [Probe("post", expect="reference", body={
        "contract": o.contract.contract_id, "period": o.reservation.period.isoformat(),
        "isps": [{"isp": 1, "power_w": 0}]})],
    "market/api-keys/": lambda o: [Probe("get", expect="list")],
    # Key names are per organisation: reusing another's name must neither fail nor touch their key.
    "market/api-keys/create/": lambda o: [Probe("post", body={"name": o.voltflex_key.name}, expect="own"),
                                          Probe("post", body={"name": o.gridco_key.name}, expect="own")],
    "market/api-keys/<uuid:pk>/revoke/": lambda o: [Probe("post", pk(o.voltflex_key)), Probe("post", pk(o.gridco_key))],
    "settlement/statements/": lambda o: [
        Probe("get", expect="list"), Probe("get", query={"period_after": o.day.isoformat()}, expect="list")],
    "settlement/statements/<uuid:pk>/": lambda o: [Probe("get", pk(o.statement), owner="voltflex")],
    "settlement/statements/<uuid:pk>/flex-settlement/": lambda o: [Probe("get", pk(o.statement), owner="voltflex")],
    "settlement/statements/<uuid:pk>/csv/": lambda o: [Probe("get", pk(o.statement), owner="gridco")],
    "settlement/statements/<uuid:pk>/print/": lambda o: [Probe("get", pk(o.statement), owner="voltflex")],
    "settlement/statements/<uuid:pk>/ledger/": lambda o: [Probe("get", pk(o.statement))],
    "settlement/disputes/": lambda o: [Probe("get", expect="list"),
                                       Probe("get", query={"statement": str(o.statement.pk)}, expect="list")],
    "settlement/disputes/create/": lambda o: [Probe("post", expect="reference", body={
        "statement": str(o.statement.pk), "order_reference": o.order.order_reference, "isp": o.dispute.isp,
        "reason": "not mine to dispute"})],
    "settlement/disputes/<uuid:pk>/": lambda o: [Probe("get", pk(o.dispute), owner="gridco")],
    "settlement/disputes/<uuid:pk>/resolve/": lambda o: [
        Probe("post", pk(o.dispute), body={"decision": "reject", "reason": "not mine to resolve"}),
        Probe("post", pk(o.dispute), body={"decision": "accept", "corrected_amount_eur": "0.00"})],
    # A foreign DSO's delivery for Gridco's connection is its own batch with every row refused (the EAN not
    # echoed); an aggregator may not deliver at all.
    "settlement/meter-readings/": lambda o: [Probe("post", expect="own_meter", body={"readings": [
        {"connection_ean": o.point.connections.first().ean, "isp_start": isp_time.isp_start(o.day, 70).isoformat(),
         "kwh_import": "9.000"}]})],
    "settlement/meter-imports/": lambda o: [Probe("get", expect="list"),
                                            Probe("get", query={"with_rejections": "false"}, expect="list")],
    "settlement/meter-imports/<uuid:pk>/": lambda o: [Probe("get", pk(o.meter_batch), owner="gridco")],
    "settlement/driver-report/sessions/": lambda o: [Probe("get", query={"month": o.day.strftime("%Y-%m")},
                                                           expect="list")],
    "settlement/driver-report/drivers/": lambda o: [Probe("get", query={"month": o.day.strftime("%Y-%m")},
                                                          expect="list")],
    "aggregator/drivers/": lambda o: [
        Probe("get", expect="list"), Probe("get", query={"reference": o.driver.reference}, expect="list"),
        Probe("get", query={"token_uid": "NL-VFX-SECRET-TOKEN"}, expect="list")],
    # Driver references and tokens are per aggregator: reusing Voltflex's must neither fail nor touch theirs.
    "aggregator/drivers/create/": lambda o: [Probe("post", body={"reference": o.driver.reference,
                                                                 "token_uids": ["NL-VFX-SECRET-TOKEN"]},
                                                   expect="own_driver")],
    "aggregator/drivers/<uuid:pk>/": lambda o: [Probe("get", pk(o.driver), owner="voltflex")],
    "aggregator/drivers/<uuid:pk>/preferences/": lambda o: [Probe("post", pk(o.driver), body={"flex_opt_out": True})],
    "aggregator/sessions/": lambda o: [
        Probe("get", expect="list"), Probe("get", query={"driver": str(o.driver.pk)}, expect="list"),
        Probe("get", query={"congestion_point": o.point.ean}, expect="list")],
    "aggregator/sessions/<uuid:pk>/": lambda o: [Probe("get", pk(o.charging_session), owner="voltflex")],
    "aggregator/sessions/<uuid:pk>/boost/": lambda o: [Probe("post", pk(o.charging_session))],
    "aggregator/sessions/<uuid:pk>/targets/": lambda o: [Probe("post", pk(o.charging_session),
                                                               body={"energy_requested_kwh": "5"})],
}


def api_patterns() -> list[tuple[str, Any]]:
    """(route under api/v1/, view class) for every URL pattern of the API."""

    def walk(patterns: list[Any], prefix: str) -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = []
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                found += walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                found.append((prefix + str(pattern.pattern), getattr(pattern.callback, "view_class", None)))
        return found

    return [(route.removeprefix("api/v1/"), view) for route, view in walk(get_resolver().url_patterns, "")
            if route.startswith("api/v1/")]


def methods_of(view: Any) -> set[str]:
    return {method for method in HTTP_METHODS if view is not None and hasattr(view, method)}


def url_for(route: str, kwargs: dict[str, str]) -> str:
    return "/api/v1/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda match: kwargs[match.group(1)], route)


def call(client: APIClient, route: str, probe: Probe) -> Any:
    url = url_for(route, probe.kwargs)
    if probe.method == "get":
        return client.get(url, probe.query or {})
    return getattr(client, probe.method)(url, probe.body or {}, format="json")


# --- the walls --------------------------------------------------------------------------------------------


def test_every_api_pattern_and_method_has_a_probe(owned):
    """A new endpoint (or a new method on one) fails here until it is added to PLAN."""
    patterns = api_patterns()
    assert len(patterns) >= 30, "the resolver walk found too few /api/v1/ patterns"
    walked = {(route, method) for route, view in patterns for method in methods_of(view)}
    unmapped = sorted(f"{method.upper()} {route}" for route, method in walked if route not in PLAN)
    assert not unmapped, f"no tenant-wall probe for: {unmapped}"
    missing_methods = sorted(f"{method.upper()} {route}" for route, method in walked
                             if method not in {probe.method for probe in PLAN[route](owned)})
    assert not missing_methods, f"methods not probed: {missing_methods}"
    stale = sorted(set(PLAN) - {route for route, _ in patterns})
    assert not stale, f"PLAN names patterns that no longer exist: {stale}"


@pytest.mark.parametrize("caller", ["chargeco", "otherdso"])
def test_foreign_credentials_get_nothing_from_any_api_url(world, owned, caller):
    participant = getattr(world, caller)
    client = api_client_for(getattr(world, f"{caller}_user"))
    secrets = owned.secrets(world, participant)
    before = owned.status()
    problems: list[str] = []
    patterns = api_patterns()
    unmapped = [route for route, _ in patterns if route not in PLAN]
    assert not unmapped, f"no tenant-wall probe for: {unmapped}"

    for route, view in patterns:
        for probe in PLAN[route](owned):
            if probe.method not in methods_of(view):
                problems.append(f"{probe.method.upper()} {route}: the view does not take this method")
                continue
            response = call(client, route, probe)
            label = f"{probe.method.upper()} {url_for(route, probe.kwargs)} {probe.query or ''} -> {response.status_code}"
            text = response.content.decode()
            leaked = sorted(secret for secret in secrets if secret in text)
            if leaked:
                problems.append(f"{label}: leaks {leaked}")
            body = response.json() if text else {}
            if probe.expect == "list":  # 403 where the caller's role has no such list (d-prognoses for a DSO)
                ok = response.status_code in (200, 403)
            elif probe.expect == "own_driver":  # an aggregator registers its own driver; a DSO may not
                ok = (response.status_code == 201 and Driver.objects.get(pk=body["id"]).aggregator == participant) \
                    or (participant.role == Participant.Role.DSO and response.status_code == 403)
            elif probe.expect == "own_meter":
                ok = (response.status_code == 201 and body["accepted"] == 0
                      and MeterImportBatch.objects.get(pk=body["id"]).submitted_by == participant) \
                    or (participant.role == Participant.Role.AGR and response.status_code == 403)
            elif probe.expect == "own":
                ok = response.status_code == 201 and ApiKey.objects.get(pk=body["id"]).participant == participant
            elif probe.expect == "reference":
                ok = response.status_code in (403, 404) or (
                    response.status_code == 400 and body["error"]["code"] in REFERENCE_CODES)
            else:
                ok = response.status_code in (403, 404)
            if not ok:
                problems.append(f"{label}: unexpected answer {text[:200]}")

    assert not problems, "\n".join(problems)
    assert owned.status() == before, "a foreign caller changed an owned object"


def test_the_probes_hit_real_objects_their_owners_can_read(world, owned):
    """Sanity check of the wall test itself: the ids it uses resolve for the rightful owner."""
    owners = {"voltflex": api_client_for(world.voltflex_user), "gridco": api_client_for(world.gridco_user)}
    checked = 0
    for route, _view in api_patterns():
        for probe in PLAN.get(route, lambda o: [])(owned):
            if probe.owner is not None:
                response = call(owners[probe.owner], route, probe)
                assert response.status_code == 200, f"{probe.owner} GET {route}: {response.status_code}"
                checked += 1
    assert checked >= 10


def test_the_owners_lists_do_contain_what_the_foreign_lists_hide(world, owned):
    """Also a sanity check: an empty foreign list means something only if the owner's list is not empty."""
    voltflex, gridco = api_client_for(world.voltflex_user), api_client_for(world.gridco_user)
    assert str(owned.prognosis.pk) in voltflex.get("/api/v1/market/d-prognoses/").content.decode()
    assert str(owned.open_offer.pk) in gridco.get("/api/v1/market/flex-offers/").content.decode()
    assert str(owned.order.pk) in voltflex.get("/api/v1/market/flex-orders/").content.decode()
    assert str(owned.request.pk) in voltflex.get("/api/v1/market/flex-requests/").content.decode()
    assert owned.contract.contract_id in gridco.get("/api/v1/market/contracts/").content.decode()
    assert str(owned.reservation.pk) in voltflex.get("/api/v1/market/reservation-updates/").content.decode()
    assert str(owned.voltflex_key.pk) in voltflex.get("/api/v1/market/api-keys/").content.decode()
    assert str(owned.statement.pk) in gridco.get("/api/v1/settlement/statements/").content.decode()
    assert str(owned.dispute.pk) in voltflex.get("/api/v1/settlement/disputes/").content.decode()
    assert owned.point.ean in voltflex.get("/api/v1/market/congestion-points/").content.decode()
    assert str(owned.driver.pk) in voltflex.get("/api/v1/aggregator/drivers/").content.decode()
    assert str(owned.charging_session.pk) in voltflex.get("/api/v1/aggregator/sessions/").content.decode()


def test_anonymous_callers_get_401_on_every_api_url(world):
    client = APIClient()
    problems: list[str] = []
    for route, view in api_patterns():
        url = url_for(route, {"pk": "00000000-0000-4000-8000-000000000000"})
        for method in sorted(methods_of(view)):
            response = client.get(url) if method == "get" else getattr(client, method)(url, {}, format="json")
            if response.status_code != 401 or response.json()["error"]["code"] != "not_authenticated":
                problems.append(f"{method.upper()} {url} -> {response.status_code}")
            elif "WWW-Authenticate" not in response.headers:
                problems.append(f"{method.upper()} {url}: 401 without WWW-Authenticate")
    assert not problems, problems
