"""Receiver validation through the bidding API: every refusal code, its HTTP status and field, and no write.

Each rule of market.services._base (UFTP-BRIEF section 6 and 4.4-4.9) is triggered over the real URLs with
APIClient; a refused message must leave every market table (and the audit trail) exactly as it was.
The DSO endpoints' happy paths are at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import pytest
from rest_framework.test import APIClient

from common import isp as isp_time
from common import time as clock
from common.models import AuditEvent
from market import services
from market.models import (
    DPrognosis,
    DPrognosisIsp,
    FlexContract,
    FlexOffer,
    FlexOfferOption,
    FlexOfferOptionIsp,
    FlexOrder,
    FlexOrderIsp,
    FlexRequest,
    FlexRequestIsp,
    FlexReservationUpdate,
    FlexReservationUpdateIsp,
)
from tests.builders import make_offer, make_prognosis, make_request, option
from tests.conftest import World, api_client_for

pytestmark = pytest.mark.django_db

API = "/api/v1/market"
UNKNOWN_EAN = "871690000000000000"
SPRING_DST_DAY = date(2027, 3, 28)  # 92 ISPs
AUTUMN_DST_DAY = date(2027, 10, 31)  # 100 ISPs
EVENING = list(range(69, 85))  # 17:00-21:00 on a 96-ISP day; tomorrow is one in these tests (checked below)

Payload = dict[str, Any]


# --- helpers ----------------------------------------------------------------------------------------------


def local_iso(instant: datetime) -> str:
    """An ISO time with the market's UTC offset, as a DSO in Amsterdam would send it."""
    return instant.astimezone(isp_time.MARKET_TZ).isoformat()


def band(isp: int, *, duration: int = 1, disposition: str = "Requested", min_w: int = -40_000,
         max_w: int = -20_000) -> Payload:
    return {"isp": isp, "duration": duration, "disposition": disposition, "min_power_w": min_w, "max_power_w": max_w}


def request_body(world: World, day: date, *, isps: list[Payload] | None = None, **extra: Any) -> Payload:
    bands = isps if isps is not None else [band(69, duration=4)]
    first = min((row["isp"] for row in bands), default=69)
    # one hour before the first ISP (counted from midnight, so an ISP past the day's end still gets a time)
    expires_at = isp_time.day_start(day) + (first - 1) * isp_time.ISP - timedelta(hours=1)
    return {"congestion_point": world.cp_north.ean, "period": day.isoformat(), "isps": bands,
            "expires_at": local_iso(expires_at), **extra}


def prognosis_body(point_ean: str, day: date, *, power_w: int = 50_000, **extra: Any) -> Payload:
    return {"congestion_point": point_ean, "period": day.isoformat(),
            "isps": [{"isp": i, "power_w": power_w} for i in range(1, isp_time.isp_count(day) + 1)], **extra}


def powers(indexes: list[int], power_w: int) -> list[Payload]:
    return [{"isp": i, "power_w": power_w} for i in indexes]


def offer_body(flex_request: FlexRequest, *, isps: list[int] | None = None, power_w: int = -10_000,
               price: str = "8.40", **extra: Any) -> Payload:
    return {"flex_request": str(flex_request.pk), "expires_at": local_iso(flex_request.expires_at),
            "options": [{"price_eur": price, "isps": powers(isps or EVENING, power_w)}], **extra}


def unsolicited_body(point_ean: str, day: date, *, isps: list[int], power_w: int = -10_000, expires_at: datetime,
                     **extra: Any) -> Payload:
    return {"congestion_point": point_ean, "period": day.isoformat(), "expires_at": local_iso(expires_at),
            "options": [{"price_eur": "5.00", "isps": powers(isps, power_w)}], **extra}


WATCHED = (FlexRequest, FlexRequestIsp, DPrognosis, DPrognosisIsp, FlexOffer, FlexOfferOption, FlexOfferOptionIsp,
           FlexOrder, FlexOrderIsp, FlexContract, FlexReservationUpdate, FlexReservationUpdateIsp, AuditEvent)
WITH_STATUS = (FlexRequest, DPrognosis, FlexOffer, FlexOrder, FlexReservationUpdate)


def snapshot() -> dict[str, Any]:
    """Row counts of every market table plus each message's status: what a refusal must leave untouched."""
    state: dict[str, Any] = {model.__name__: model.objects.count() for model in WATCHED}
    for model in WITH_STATUS:
        state[f"{model.__name__}.status"] = sorted(model.objects.values_list("pk", "status"))
    return state


def assert_refused(client: APIClient, url: str, payload: Payload | None = None, *, code: str, field: str | None,
                   status: int = 400) -> Payload:
    before = snapshot()
    response = client.post(url, payload if payload is not None else {}, format="json")
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field), error
    assert error["message"]
    assert snapshot() == before, "a refused message must write nothing"
    return response.json()


def created(client: APIClient, url: str, payload: Payload | None = None, status: int = 201) -> Payload:
    response = client.post(url, payload if payload is not None else {}, format="json")
    assert response.status_code == status, response.content
    return response.json()


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
def gridco(world: World) -> APIClient:
    return api_client_for(world.gridco_user)


@pytest.fixture
def voltflex(world: World) -> APIClient:
    return api_client_for(world.voltflex_user)


@pytest.fixture
def chargeco(world: World) -> APIClient:
    return api_client_for(world.chargeco_user)


@pytest.fixture
def day(tomorrow: date) -> date:
    assert isp_time.isp_count(tomorrow) == 96, "these tests place the evening at ISPs 69-84"
    return tomorrow


@pytest.fixture
def open_request(world: World, day: date) -> FlexRequest:
    """Gridco asks 20-40 kW less on cp_north from 17:00 to 21:00; it expires at 16:00."""
    return make_request(dso=world.gridco, point=world.cp_north, day=day, isps=EVENING)


@pytest.fixture
def baseline(world: World, day: date) -> DPrognosis:
    return make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=day)


@pytest.fixture
def offer(world: World, open_request: FlexRequest, baseline: DPrognosis) -> FlexOffer:
    """Voltflex offers 10 kW less in every requested ISP for EUR 10.00, partially down to 50 %."""
    return make_offer(aggregator=world.voltflex, request=open_request, power_w=-10_000, price="10.00",
                      min_activation_factor="0.50")


@pytest.fixture
def mutex_point(world: World) -> None:
    world.cp_north.mutex_offers_supported = True
    world.cp_north.save()


@pytest.fixture
def mutex_offer(world: World, open_request: FlexRequest, baseline: DPrognosis, mutex_point: None) -> FlexOffer:
    return services.flex_offer_submit(
        aggregator=world.voltflex, congestion_point=world.cp_north, period=open_request.period,
        options=[option(power_w=-10_000, price="10.00", isps=EVENING, reference="A"),
                 option(power_w=-20_000, price="18.00", isps=EVENING, reference="B")],
        expires_at=open_request.expires_at, flex_request=open_request,
    )


def contract(world: World, *, allows_direct_orders: bool = True, valid_from: date, reserved_power_w: int = 0,
             contract_id: str = "GV-2026-01", **extra: Any) -> FlexContract:
    return services.flex_contract_create(
        dso=world.gridco, aggregator=world.voltflex, congestion_point=world.cp_north, contract_id=contract_id,
        valid_from=valid_from, allows_direct_orders=allows_direct_orders, reserved_power_w=reserved_power_w, **extra)


# --- ISPs: bounds (incl. DST days), conflicts, completeness -----------------------------------------------


@pytest.mark.parametrize(("period", "count"), [(SPRING_DST_DAY, 92), (AUTUMN_DST_DAY, 100), (date(2027, 6, 1), 96)],
                         ids=["spring-dst-92", "autumn-dst-100", "ordinary-96"])
def test_a_prognosis_must_stay_inside_the_days_isps_also_on_dst_days(world, voltflex, period, count):
    too_long = prognosis_body(world.cp_north.ean, period)
    too_long["isps"] = powers(list(range(1, count + 2)), 50_000)
    assert_refused(voltflex, f"{API}/d-prognoses/create/", too_long, code="isp_out_of_bounds",
                   field=f"isps[{count}].isp")

    body = created(voltflex, f"{API}/d-prognoses/create/", prognosis_body(world.cp_north.ean, period))
    assert [row["isp"] for row in body["isps"]] == list(range(1, count + 1))


@pytest.mark.parametrize(("period", "last"), [(SPRING_DST_DAY, 92), (AUTUMN_DST_DAY, 100)], ids=["spring", "autumn"])
def test_a_request_for_isp_n_plus_1_is_refused_and_isp_n_accepted_on_dst_days(world, gridco, period, last):
    assert_refused(gridco, f"{API}/flex-requests/create/", request_body(world, period, isps=[band(last + 1)]),
                   code="isp_out_of_bounds", field="isps[0].isp")

    body = created(gridco, f"{API}/flex-requests/create/", request_body(world, period, isps=[band(last)]))
    assert [row["isp"] for row in body["isps"]] == [last]
    assert body["status"] == "open"


def test_isp_93_does_not_exist_on_the_spring_dst_day(world, gridco):
    assert_refused(gridco, f"{API}/flex-requests/create/", request_body(world, SPRING_DST_DAY, isps=[band(93)]),
                   code="isp_out_of_bounds", field="isps[0].isp")


def test_overlapping_isp_runs_are_an_isp_conflict(world, gridco, day):
    # 69-72 and 71-72 overlap; the exact field of a run is covered by test_an_error_inside_an_isp_run_...
    before = snapshot()
    response = gridco.post(f"{API}/flex-requests/create/",
                           request_body(world, day, isps=[band(69, duration=4), band(71, duration=2)]), format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "isp_conflict"
    assert snapshot() == before


def test_overlapping_runs_in_a_prognosis_are_an_isp_conflict(world, voltflex, day):
    body = prognosis_body(world.cp_north.ean, day)
    body["isps"] = [{"isp": 1, "duration": 96, "power_w": 40_000}, {"isp": 96, "duration": 1, "power_w": 40_000}]
    before = snapshot()
    response = voltflex.post(f"{API}/d-prognoses/create/", body, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "isp_conflict")
    assert snapshot() == before


@pytest.mark.parametrize("case", ["request-overlap", "prognosis-run-past-the-day"])
def test_an_error_inside_an_isp_run_names_the_input_row(world, gridco, voltflex, day, case):
    if case == "request-overlap":
        assert_refused(gridco, f"{API}/flex-requests/create/",
                       request_body(world, day, isps=[band(69, duration=4), band(71, duration=2)]),
                       code="isp_conflict", field="isps[1].isp")
    else:
        body = prognosis_body(world.cp_north.ean, day)
        body["isps"] = [{"isp": 1, "duration": 97, "power_w": 40_000}]
        assert_refused(voltflex, f"{API}/d-prognoses/create/", body, code="isp_out_of_bounds", field="isps[0].isp")


def test_a_run_covering_the_whole_day_is_a_complete_prognosis(world, voltflex, day):
    body = prognosis_body(world.cp_north.ean, day)
    body["isps"] = [{"isp": 1, "duration": 96, "power_w": 40_000}]
    assert len(created(voltflex, f"{API}/d-prognoses/create/", body)["isps"]) == 96


# --- flex request creation (DSO) --------------------------------------------------------------------------


def _with(**changes: Any) -> Callable[[Payload, World, date], Payload]:
    return lambda payload, world, day: {**payload, **changes}


REQUEST_CASES: list[tuple[str, Callable[[Payload, World, date], Payload], str, str]] = [
    ("isp-97", _with(isps=[band(97)]), "isp_out_of_bounds", "isps[0].isp"),
    ("isp-twice", _with(isps=[band(69), band(70), band(69)]), "isp_conflict", "isps[2].isp"),
    ("no-isps", _with(isps=[]), "missing_isps", "isps"),
    ("only-available", _with(isps=[band(69, disposition="Available", min_w=-5_000, max_w=5_000)]),
     "lacking_requested_disposition", "isps"),
    ("min-above-max", _with(isps=[band(69, min_w=-10_000, max_w=-20_000)]), "power_discrepancy",
     "isps[0].min_power_w"),
    ("requested-band-spans-zero", _with(isps=[band(69, min_w=-10_000, max_w=10_000)]),
     "requested_power_discrepancy", "isps[0].max_power_w"),
    ("expiry-in-the-past", lambda p, w, d: {**p, "expires_at": local_iso(clock.now() - timedelta(minutes=5))},
     "expiration_out_of_bounds", "expires_at"),
    ("expiry-after-the-last-isp", lambda p, w, d: {**p, "expires_at": local_iso(
        isp_time.isp_end(d, 72) + timedelta(minutes=1))}, "expiration_out_of_bounds", "expires_at"),
    ("isp-duration", _with(isp_duration="PT5M"), "isp_duration_rejected", "isp_duration"),
    ("time-zone", _with(time_zone="UTC"), "time_zone_rejected", "time_zone"),
    ("another-dsos-point", lambda p, w, d: {**p, "congestion_point": w.cp_far.ean}, "foreign_congestion_point",
     "congestion_point"),
    ("unknown-point", _with(congestion_point=UNKNOWN_EAN), "unknown_congestion_point", "congestion_point"),
    ("naive-expiry", lambda p, w, d: {**p, "expires_at": (isp_time.isp_start(d, 69) - timedelta(hours=1)).replace(
        tzinfo=None).isoformat()}, "naive", "expires_at"),
]


@pytest.mark.parametrize(("mutate", "code", "field"), [case[1:] for case in REQUEST_CASES],
                         ids=[case[0] for case in REQUEST_CASES])
def test_a_dso_request_is_refused(world, gridco, day, mutate, code, field):
    assert_refused(gridco, f"{API}/flex-requests/create/", mutate(request_body(world, day), world, day), code=code,
                   field=field)


def test_an_implausible_requested_power_is_refused(world, gridco, day):
    before = snapshot()
    response = gridco.post(f"{API}/flex-requests/create/",
                           request_body(world, day, isps=[band(69, min_w=-10**9, max_w=-20_000)]), format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "power_value_rejection")
    assert snapshot() == before


def test_an_implausible_requested_power_names_the_bound_at_fault(world, gridco, day):
    assert_refused(gridco, f"{API}/flex-requests/create/",
                   request_body(world, day, isps=[band(69, min_w=-10**9, max_w=-20_000)]),
                   code="power_value_rejection", field="isps[0].min_power_w")


def test_requested_isps_that_have_started_are_refused(world, gridco, day):
    with patch("common.time.now", return_value=isp_time.isp_start(day, 40) + timedelta(minutes=1)):
        body = request_body(world, day, isps=[band(30)])
        body["expires_at"] = local_iso(isp_time.isp_end(day, 30))
        assert_refused(gridco, f"{API}/flex-requests/create/", body, code="isp_in_past", field="isps[0].isp")


@pytest.mark.parametrize("case", ["request-isp-in-past", "offer-gate-closed"])
def test_time_errors_name_the_row_as_sent(world, gridco, voltflex, day, baseline, case):
    at = isp_time.isp_start(day, 40) + timedelta(minutes=1)
    if case == "request-isp-in-past":
        body = request_body(world, day, isps=[band(60, disposition="Available", min_w=-5_000, max_w=5_000),
                                              band(30)])
        body["expires_at"] = local_iso(isp_time.isp_end(day, 30))
        with patch("common.time.now", return_value=at):
            assert_refused(gridco, f"{API}/flex-requests/create/", body, code="isp_in_past", field="isps[1].isp")
    else:
        world.cp_north.market.gate_closure_minutes = 3 * 24 * 60
        world.cp_north.market.save()
        body = unsolicited_body(world.cp_north.ean, day, isps=[69, 70], expires_at=isp_time.isp_start(day, 60))
        body["options"][0]["isps"] = [{"isp": 69, "power_w": 0}, {"isp": 70, "power_w": -10_000}]
        assert_refused(voltflex, f"{API}/flex-offers/create/", body, code="gate_closed",
                       field="options[0].isps[1].isp")


def test_a_request_for_a_day_that_is_over_is_refused(world, gridco, day):
    with patch("common.time.now", return_value=isp_time.day_end(day) + timedelta(minutes=1)):
        assert_refused(gridco, f"{API}/flex-requests/create/", request_body(world, day), code="period_in_past",
                       field="period")


def test_requested_isps_after_gate_closure_are_refused(world, gridco, day):
    world.cp_north.market.gate_closure_minutes = 3 * 24 * 60
    world.cp_north.market.save()
    assert_refused(gridco, f"{API}/flex-requests/create/", request_body(world, day), code="gate_closed",
                   field="isps[0].isp")


# --- D-prognoses (aggregator) -----------------------------------------------------------------------------


def _drop_last(payload: Payload, world: World, day: date) -> Payload:
    return {**payload, "isps": payload["isps"][:-1]}


def _isp_97(payload: Payload, world: World, day: date) -> Payload:
    return {**payload, "isps": [*payload["isps"], {"isp": 97, "power_w": 1}]}


def _isp_twice(payload: Payload, world: World, day: date) -> Payload:
    rows = [dict(row) for row in payload["isps"]]
    rows[5]["isp"] = 5
    return {**payload, "isps": rows}


def _implausible(payload: Payload, world: World, day: date) -> Payload:
    rows = [dict(row) for row in payload["isps"]]
    rows[7]["power_w"] = 10**9
    return {**payload, "isps": rows}


PROGNOSIS_CASES: list[tuple[str, Callable[[Payload, World, date], Payload], str, str]] = [
    ("lacks-an-isp", _drop_last, "missing_isps", "isps"),
    ("isp-97", _isp_97, "isp_out_of_bounds", "isps[96].isp"),
    ("isp-twice", _isp_twice, "isp_conflict", "isps[5].isp"),
    ("beyond-max-power", _implausible, "power_value_rejection", "isps[7].power_w"),
    ("point-not-represented", lambda p, w, d: {**p, "congestion_point": w.cp_south.ean},
     "congestion_point_not_represented", "congestion_point"),
    ("unknown-point", _with(congestion_point=UNKNOWN_EAN), "unknown_congestion_point", "congestion_point"),
    ("isp-duration", _with(isp_duration="PT60M"), "isp_duration_rejected", "isp_duration"),
    ("time-zone", _with(time_zone="Europe/London"), "time_zone_rejected", "time_zone"),
]


@pytest.mark.parametrize(("mutate", "code", "field"), [case[1:] for case in PROGNOSIS_CASES],
                         ids=[case[0] for case in PROGNOSIS_CASES])
def test_a_prognosis_is_refused(world, voltflex, day, mutate, code, field):
    assert_refused(voltflex, f"{API}/d-prognoses/create/", mutate(prognosis_body(world.cp_north.ean, day), world, day),
                   code=code, field=field)


def test_the_markets_own_max_power_decides_what_is_plausible(world, voltflex, day):
    world.cp_north.market.max_power_w = 40_000
    world.cp_north.market.save()
    assert_refused(voltflex, f"{API}/d-prognoses/create/", prognosis_body(world.cp_north.ean, day, power_w=40_001),
                   code="power_value_rejection", field="isps[0].power_w")
    created(voltflex, f"{API}/d-prognoses/create/", prognosis_body(world.cp_north.ean, day, power_w=-40_000))


def test_a_prognosis_for_a_day_that_is_over_is_refused(world, voltflex, day):
    with patch("common.time.now", return_value=isp_time.day_end(day)):
        assert_refused(voltflex, f"{API}/d-prognoses/create/", prognosis_body(world.cp_north.ean, day),
                       code="period_in_past", field="period")


def test_a_prognosis_revision_must_exceed_every_earlier_one(world, voltflex, day):
    first = created(voltflex, f"{API}/d-prognoses/create/", prognosis_body(world.cp_north.ean, day, revision=3))
    assert first["revision"] == 3
    for revision in (3, 2):
        assert_refused(voltflex, f"{API}/d-prognoses/create/",
                       prognosis_body(world.cp_north.ean, day, power_w=45_000, revision=revision),
                       code="subordinate_revision", field="revision")
    later = created(voltflex, f"{API}/d-prognoses/create/", prognosis_body(world.cp_north.ean, day, revision=4))
    assert DPrognosis.objects.get(pk=first["id"]).status == DPrognosis.Status.SUPERSEDED
    assert DPrognosis.objects.get(pk=later["id"]).status == DPrognosis.Status.ACCEPTED


# --- flex offers (aggregator) -----------------------------------------------------------------------------


def _option(**changes: Any) -> Callable[[Payload, World, date], Payload]:
    def mutate(payload: Payload, world: World, day: date) -> Payload:
        return {**payload, "options": [{**payload["options"][0], **changes}]}

    return mutate


def _second_option(payload: Payload, world: World, day: date) -> Payload:
    return {**payload, "options": [payload["options"][0], {**payload["options"][0], "option_reference": "2"}]}


OFFER_CASES: list[tuple[str, Callable[[Payload, World, date], Payload], str, str]] = [
    ("no-requested-isp", _option(isps=powers([10, 11], -10_000)), "request_mismatch", "options[0].isps"),
    ("more-consumption-for-a-reduction", _option(isps=powers([69, 70], 10_000)), "wrong_power_sign",
     "options[0].isps[0].power_w"),
    ("all-zero", _option(isps=powers([69, 70], 0)), "empty_offer", "options[0].isps"),
    ("sub-cent-price", _option(price_eur="8.405"), "price_precision", "options[0].price_eur"),
    ("usd", _with(currency="USD"), "currency_rejected", "currency"),
    ("isp-duration", _with(isp_duration="PT5M"), "isp_duration_rejected", "isp_duration"),
    ("time-zone", _with(time_zone="UTC"), "time_zone_rejected", "time_zone"),
    ("two-options-without-mutex", _second_option, "no_mutex_offer_support", "options"),
    ("activation-factor-zero", _option(min_activation_factor="0.00"), "invalid_activation_factor",
     "options[0].min_activation_factor"),
    ("activation-factor-above-one", _option(min_activation_factor="1.50"), "invalid_activation_factor",
     "options[0].min_activation_factor"),
    ("isp-97", _option(isps=powers([97], -10_000)), "isp_out_of_bounds", "options[0].isps[0].isp"),
    ("isp-twice", _option(isps=powers([69, 69], -10_000)), "isp_conflict", "options[0].isps[1].isp"),
    ("beyond-max-power", _option(isps=powers([69], -(10**9))), "power_value_rejection",
     "options[0].isps[0].power_w"),
    ("expiry-after-the-last-isp", lambda p, w, d: {**p, "expires_at": local_iso(
        isp_time.isp_end(d, 84) + timedelta(seconds=1))}, "expiration_out_of_bounds", "expires_at"),
    ("expiry-in-the-past", lambda p, w, d: {**p, "expires_at": local_iso(clock.now() - timedelta(seconds=1))},
     "expiration_out_of_bounds", "expires_at"),
    ("unknown-contract", _with(contract="NO-SUCH-CONTRACT"), "unknown_contract", "contract"),
    ("unknown-request", _with(flex_request=str(uuid.uuid4())), "unknown_reference", "flex_request"),
    ("unknown-prognosis", _with(d_prognosis=str(uuid.uuid4())), "unknown_reference", "d_prognosis"),
    ("naive-expiry", lambda p, w, d: {**p, "expires_at": "2026-11-26T16:00:00"}, "naive", "expires_at"),
]


@pytest.mark.parametrize(("mutate", "code", "field"), [case[1:] for case in OFFER_CASES],
                         ids=[case[0] for case in OFFER_CASES])
def test_an_offer_is_refused(world, voltflex, day, open_request, baseline, mutate, code, field):
    assert_refused(voltflex, f"{API}/flex-offers/create/", mutate(offer_body(open_request), world, day), code=code,
                   field=field)


def test_an_offer_without_a_baseline_is_refused(world, voltflex, open_request):
    assert_refused(voltflex, f"{API}/flex-offers/create/", offer_body(open_request), code="no_baseline",
                   field="d_prognosis")


def test_an_offer_on_a_superseded_prognosis_has_no_baseline(world, voltflex, open_request, baseline):
    make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=open_request.period, power_w=45_000)
    assert_refused(voltflex, f"{API}/flex-offers/create/", {**offer_body(open_request), "d_prognosis": str(baseline.pk)},
                   code="no_baseline", field="d_prognosis")


def test_an_unsolicited_offer_where_the_aggregator_has_no_connections_is_refused(world, voltflex, day, baseline):
    body = unsolicited_body(world.cp_south.ean, day, isps=[69], expires_at=isp_time.isp_start(day, 60))
    assert_refused(voltflex, f"{API}/flex-offers/create/", body, code="congestion_point_not_represented",
                   field="congestion_point")


def test_an_unsolicited_offer_on_an_unknown_point_is_refused(world, voltflex, day):
    body = unsolicited_body(UNKNOWN_EAN, day, isps=[69], expires_at=isp_time.isp_start(day, 60))
    assert_refused(voltflex, f"{API}/flex-offers/create/", body, code="unknown_congestion_point",
                   field="congestion_point")


def test_option_references_must_differ(world, voltflex, open_request, baseline, mutex_point):
    body = offer_body(open_request)
    body["options"] = [{**body["options"][0], "option_reference": "A"},
                       {**body["options"][0], "option_reference": "A", "price_eur": "9.00"}]
    assert_refused(voltflex, f"{API}/flex-offers/create/", body, code="duplicate_option_reference",
                   field="options[1].option_reference")


def test_offered_isps_that_have_started_are_refused(world, voltflex, day, baseline):
    body = unsolicited_body(world.cp_north.ean, day, isps=[30, 50], expires_at=isp_time.isp_end(day, 50))
    with patch("common.time.now", return_value=isp_time.isp_start(day, 40)):
        assert_refused(voltflex, f"{API}/flex-offers/create/", body, code="isp_in_past", field="options[0].isps[0].isp")


def test_an_offer_for_a_day_that_is_over_is_refused(world, voltflex, day, baseline):
    body = unsolicited_body(world.cp_north.ean, day, isps=[69], expires_at=isp_time.isp_end(day, 69))
    with patch("common.time.now", return_value=isp_time.day_end(day) + timedelta(hours=1)):
        assert_refused(voltflex, f"{API}/flex-offers/create/", body, code="period_in_past", field="period")


def test_an_offer_after_gate_closure_is_refused(world, voltflex, open_request, baseline):
    world.cp_north.market.gate_closure_minutes = 3 * 24 * 60  # every ISP of tomorrow is inside the gate
    world.cp_north.market.save()
    assert_refused(voltflex, f"{API}/flex-offers/create/", offer_body(open_request, isps=[70, 71]), code="gate_closed",
                   field="options[0].isps[0].isp")


def test_the_gate_closes_exactly_gate_closure_minutes_before_the_isp(world, voltflex, day, baseline):
    world.cp_north.market.gate_closure_minutes = 120
    world.cp_north.market.save()
    body = unsolicited_body(world.cp_north.ean, day, isps=[69], expires_at=isp_time.isp_start(day, 69))
    closing = isp_time.isp_start(day, 69) - timedelta(minutes=120)
    with patch("common.time.now", return_value=closing):
        assert_refused(voltflex, f"{API}/flex-offers/create/", body, code="gate_closed", field="options[0].isps[0].isp")
    with patch("common.time.now", return_value=closing - timedelta(seconds=1)):
        created(voltflex, f"{API}/flex-offers/create/", body)


# --- references: unknown (and not leaking), mismatched, expired, revoked, closed, superseded ---------------


def test_a_foreign_request_is_answered_exactly_like_a_missing_one(world, voltflex, chargeco, day, baseline):
    south = make_request(dso=world.gridco, point=world.cp_south, day=day, isps=EVENING)  # chargeco only
    foreign = assert_refused(voltflex, f"{API}/flex-offers/create/", offer_body(south), code="unknown_reference",
                             field="flex_request")
    missing_body = offer_body(south)
    missing_body["flex_request"] = str(uuid.uuid4())
    missing = assert_refused(voltflex, f"{API}/flex-offers/create/", missing_body, code="unknown_reference",
                             field="flex_request")
    assert foreign == missing
    assert str(south.pk) not in str(foreign)
    assert chargeco.get(f"{API}/flex-requests/{south.pk}/").status_code == 200  # it exists, for those on the point


def test_a_foreign_prognosis_is_answered_exactly_like_a_missing_one(world, voltflex, open_request, baseline):
    theirs = make_prognosis(aggregator=world.chargeco, point=world.cp_north, day=open_request.period)
    foreign = assert_refused(voltflex, f"{API}/flex-offers/create/",
                             {**offer_body(open_request), "d_prognosis": str(theirs.pk)}, code="unknown_reference",
                             field="d_prognosis")
    missing = assert_refused(voltflex, f"{API}/flex-offers/create/",
                             {**offer_body(open_request), "d_prognosis": str(uuid.uuid4())}, code="unknown_reference",
                             field="d_prognosis")
    assert foreign == missing
    assert str(theirs.pk) not in str(foreign)


def test_an_offer_for_another_day_than_its_request_is_refused(world, voltflex, open_request, baseline):
    body = {**offer_body(open_request), "period": (open_request.period + timedelta(days=1)).isoformat()}
    assert_refused(voltflex, f"{API}/flex-offers/create/", body, code="reference_period_mismatch",
                   field="flex_request")


def test_an_offer_on_a_prognosis_of_another_day_is_refused(world, voltflex, open_request, baseline):
    other_day = make_prognosis(aggregator=world.voltflex, point=world.cp_north,
                               day=open_request.period + timedelta(days=1))
    assert_refused(voltflex, f"{API}/flex-offers/create/",
                   {**offer_body(open_request), "d_prognosis": str(other_day.pk)}, code="reference_period_mismatch",
                   field="d_prognosis")


def test_an_offer_on_another_point_than_its_request_is_refused(world, chargeco, open_request):
    make_prognosis(aggregator=world.chargeco, point=world.cp_south, day=open_request.period)
    body = {**offer_body(open_request), "congestion_point": world.cp_south.ean}
    assert_refused(chargeco, f"{API}/flex-offers/create/", body, code="reference_congestion_point_mismatch",
                   field="flex_request")


def test_an_offer_on_a_prognosis_of_another_point_names_the_point_mismatch(world, chargeco, open_request):
    make_prognosis(aggregator=world.chargeco, point=world.cp_north, day=open_request.period)
    south = make_prognosis(aggregator=world.chargeco, point=world.cp_south, day=open_request.period)
    assert_refused(chargeco, f"{API}/flex-offers/create/",
                   {**offer_body(open_request), "d_prognosis": str(south.pk)},
                   code="reference_congestion_point_mismatch", field="d_prognosis")


def test_an_offer_on_an_expired_request_is_refused(world, voltflex, open_request, baseline):
    with patch("common.time.now", return_value=open_request.expires_at + timedelta(minutes=1)):
        assert_refused(voltflex, f"{API}/flex-offers/create/", offer_body(open_request), code="reference_expired",
                       field="flex_request")


def test_an_offer_on_a_cancelled_request_is_refused(world, gridco, voltflex, open_request, baseline):
    assert created(gridco, f"{API}/flex-requests/{open_request.pk}/cancel/", status=200)["status"] == "cancelled"
    assert_refused(voltflex, f"{API}/flex-offers/create/", offer_body(open_request), code="reference_not_open",
                   field="flex_request")


def test_an_offer_on_a_superseded_request_is_refused(world, gridco, voltflex, open_request, baseline):
    created(gridco, f"{API}/flex-requests/{open_request.pk}/revise/",
            {"isps": [band(69, duration=8)], "expires_at": local_iso(open_request.expires_at)})
    assert_refused(voltflex, f"{API}/flex-offers/create/", offer_body(open_request), code="reference_superseded",
                   field="flex_request")


def test_ordering_a_revoked_offer_is_refused(world, gridco, voltflex, offer):
    assert created(voltflex, f"{API}/flex-offers/{offer.pk}/revoke/", status=200)["status"] == "revoked"
    assert_refused(gridco, f"{API}/flex-offers/{offer.pk}/accept/", code="reference_revoked", field="flex_offer")


# --- ordering an offer (DSO) ------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"activation_factor": "0.40"}, "activation_factor_out_of_bounds", "activation_factor"),
    ({"activation_factor": "1.10"}, "activation_factor_out_of_bounds", "activation_factor"),
    ({"option_reference": "9"}, "unknown_option", "option_reference"),
], ids=["below-the-minimum", "above-one", "unknown-option"])
def test_an_order_outside_the_offer_is_refused(world, gridco, offer, body, code, field):
    assert_refused(gridco, f"{API}/flex-offers/{offer.pk}/accept/", body, code=code, field=field)


def test_ordering_a_multi_option_offer_requires_the_option(world, gridco, mutex_offer):
    assert_refused(gridco, f"{API}/flex-offers/{mutex_offer.pk}/accept/", {}, code="option_required",
                   field="option_reference")
    order = created(gridco, f"{API}/flex-offers/{mutex_offer.pk}/accept/", {"option_reference": "B"})
    assert (order["option_reference"], order["price_eur"]) == ("B", "18.00")
    assert {row["power_w"] for row in order["isps"]} == {-20_000}


def test_ordering_an_expired_offer_is_refused(world, gridco, offer):
    with patch("common.time.now", return_value=offer.expires_at + timedelta(seconds=1)):
        assert_refused(gridco, f"{API}/flex-offers/{offer.pk}/accept/", code="offer_expired", field="flex_offer")


def test_ordering_an_offer_whose_isps_have_started_is_refused(world, gridco, day, baseline):
    unsolicited = services.flex_offer_submit(
        aggregator=world.voltflex, congestion_point=world.cp_north, period=day,
        options=[option(power_w=-5_000, price="3.00", isps=[69, 70])], expires_at=isp_time.isp_end(day, 70))
    with patch("common.time.now", return_value=isp_time.isp_start(day, 69) + timedelta(minutes=1)):
        assert_refused(gridco, f"{API}/flex-offers/{unsolicited.pk}/accept/", code="isp_in_past", field="flex_offer")


def test_an_open_offer_may_still_be_ordered_after_gate_closure(world, gridco, offer):
    world.cp_north.market.gate_closure_minutes = 3 * 24 * 60
    world.cp_north.market.save()
    assert created(gridco, f"{API}/flex-offers/{offer.pk}/accept/")["flex_offer"] == str(offer.pk)


def test_an_offer_is_ordered_only_once(world, gridco, offer):
    created(gridco, f"{API}/flex-offers/{offer.pk}/accept/")
    assert_refused(gridco, f"{API}/flex-offers/{offer.pk}/accept/", code="invalid_state", field="status", status=409)
    assert FlexOrder.objects.filter(flex_offer=offer).count() == 1


# --- revocation (aggregator) and other state changes ------------------------------------------------------


def test_revoking_an_ordered_offer_is_flexibility_procured(world, gridco, voltflex, offer):
    created(gridco, f"{API}/flex-offers/{offer.pk}/accept/")
    assert_refused(voltflex, f"{API}/flex-offers/{offer.pk}/revoke/", code="flexibility_procured", field="status",
                   status=409)
    assert FlexOffer.objects.get(pk=offer.pk).status == FlexOffer.Status.ACCEPTED


def test_revoking_once_an_isp_has_started_is_too_late(world, voltflex, offer):
    with patch("common.time.now", return_value=isp_time.isp_start(offer.period, 69) + timedelta(seconds=1)):
        assert_refused(voltflex, f"{API}/flex-offers/{offer.pk}/revoke/", code="revocation_too_late",
                       field="flex_offer")


@pytest.mark.parametrize(("done", "then"), [("revoke", "revoke"), ("revoke", "reject"), ("reject", "reject"),
                                             ("reject", "revoke")])
def test_a_transition_from_the_wrong_state_is_a_conflict(world, gridco, voltflex, offer, done, then):
    by = {"revoke": voltflex, "reject": gridco}  # the aggregator revokes, the DSO rejects
    created(by[done], f"{API}/flex-offers/{offer.pk}/{done}/", status=200)
    body = assert_refused(by[then], f"{API}/flex-offers/{offer.pk}/{then}/", code="invalid_state", field="status",
                          status=409)
    assert body["error"]["details"]["current_status"] == FlexOffer.objects.get(pk=offer.pk).status


def test_a_cancelled_request_cannot_be_cancelled_or_revised(world, gridco, open_request):
    created(gridco, f"{API}/flex-requests/{open_request.pk}/cancel/", status=200)
    assert_refused(gridco, f"{API}/flex-requests/{open_request.pk}/cancel/", code="invalid_state", field="status",
                   status=409)
    assert_refused(gridco, f"{API}/flex-requests/{open_request.pk}/revise/",
                   {"isps": [band(69)], "expires_at": local_iso(open_request.expires_at)}, code="invalid_state",
                   field="status", status=409)


def test_a_superseded_request_cannot_be_revised_again(world, gridco, open_request):
    revise = {"isps": [band(69, duration=2)], "expires_at": local_iso(open_request.expires_at)}
    created(gridco, f"{API}/flex-requests/{open_request.pk}/revise/", revise)
    assert_refused(gridco, f"{API}/flex-requests/{open_request.pk}/revise/", revise, code="invalid_state",
                   field="status", status=409)


def test_a_revision_is_validated_like_a_new_request(world, gridco, open_request):
    assert_refused(gridco, f"{API}/flex-requests/{open_request.pk}/revise/",
                   {"isps": [band(69, min_w=5_000, max_w=-5_000)], "expires_at": local_iso(open_request.expires_at)},
                   code="power_discrepancy", field="isps[0].min_power_w")
    assert_refused(gridco, f"{API}/flex-requests/{open_request.pk}/revise/",
                   {"isps": [band(69)], "expires_at": "2026-11-26T16:00:00"}, code="naive", field="expires_at")
    assert FlexRequest.objects.get(pk=open_request.pk).status == FlexRequest.Status.OPEN


# --- direct orders under a contract (DSO) ----------------------------------------------------------------


def direct_body(world: World, day: date, **extra: Any) -> Payload:
    return {"aggregator": world.voltflex.domain, "congestion_point": world.cp_north.ean, "period": day.isoformat(),
            "contract": "GV-2026-01", "isps": powers([69, 70, 71, 72], -15_000), "price_eur": "20.00", **extra}


DIRECT_CASES: list[tuple[str, Callable[[Payload, World, date], Payload], str, str]] = [
    ("another-dsos-point", lambda p, w, d: {**p, "congestion_point": w.cp_far.ean}, "foreign_congestion_point",
     "congestion_point"),
    ("unknown-contract", _with(contract="GV-NOPE"), "unknown_contract", "contract"),
    ("contract-of-another-aggregator", lambda p, w, d: {**p, "aggregator": w.chargeco.domain}, "unknown_contract",
     "contract"),
    ("both-directions", _with(isps=[{"isp": 69, "power_w": -5_000}, {"isp": 70, "power_w": 5_000}]),
     "requested_power_discrepancy", "isps"),
    ("all-zero", _with(isps=powers([69, 70], 0)), "empty_offer", "isps"),
    ("sub-cent-price", _with(price_eur="20.005"), "price_precision", "price_eur"),
    ("usd", _with(currency="USD"), "currency_rejected", "currency"),
    ("isp-duration", _with(isp_duration="PT30M"), "isp_duration_rejected", "isp_duration"),
    ("time-zone", _with(time_zone="CET"), "time_zone_rejected", "time_zone"),
    ("isp-97", _with(isps=powers([97], -5_000)), "isp_out_of_bounds", "isps[0].isp"),
    ("isp-twice", _with(isps=powers([69, 69], -5_000)), "isp_conflict", "isps[1].isp"),
    ("beyond-max-power", _with(isps=powers([69], -(10**9))), "power_value_rejection", "isps[0].power_w"),
]


@pytest.mark.parametrize(("mutate", "code", "field"), [case[1:] for case in DIRECT_CASES],
                         ids=[case[0] for case in DIRECT_CASES])
def test_a_direct_order_is_refused(world, gridco, day, mutate, code, field):
    contract(world, valid_from=day - timedelta(days=1))
    assert_refused(gridco, f"{API}/flex-orders/create/", mutate(direct_body(world, day), world, day), code=code,
                   field=field)


def test_a_direct_order_needs_an_agreement_that_allows_it(world, gridco, day):
    contract(world, valid_from=day - timedelta(days=1), allows_direct_orders=False)
    assert_refused(gridco, f"{API}/flex-orders/create/", direct_body(world, day), code="no_agreement",
                   field="contract")


def test_a_direct_order_outside_the_contracts_validity_is_an_unknown_contract(world, gridco, day):
    contract(world, valid_from=day + timedelta(days=1))
    assert_refused(gridco, f"{API}/flex-orders/create/", direct_body(world, day), code="unknown_contract",
                   field="contract")


def test_a_direct_order_for_started_isps_is_refused(world, gridco, day):
    contract(world, valid_from=day - timedelta(days=1))
    with patch("common.time.now", return_value=isp_time.isp_start(day, 70)):
        assert_refused(gridco, f"{API}/flex-orders/create/", direct_body(world, day), code="isp_in_past",
                       field="isps[0].isp")


# --- reservation updates (DSO) ----------------------------------------------------------------------------


@pytest.fixture
def reserved_day(tomorrow: date) -> date:
    """Far enough ahead that the default deadline (14 h before the day) has not passed."""
    day = tomorrow + timedelta(days=2)
    assert isp_time.isp_count(day) == 96
    return day


@pytest.fixture
def reservation(world: World, reserved_day: date) -> FlexContract:
    """50 kW less reserved from 17:00 to 21:00 (ISPs 69-84)."""
    return contract(world, valid_from=reserved_day - timedelta(days=30), reserved_power_w=-50_000,
                    window_start=time(17, 0), window_end=time(21, 0))


def reservation_body(day: date, isps: list[Payload], **extra: Any) -> Payload:
    return {"contract": "GV-2026-01", "period": day.isoformat(), "reference": "R-1", "isps": isps, **extra}


RESERVATION_CASES: list[tuple[str, list[Payload], str, str]] = [
    ("more-than-reserved", [{"isp": 69, "power_w": -30_000}, {"isp": 70, "power_w": -60_000}],
     "reservation_increase", "isps[1].power_w"),
    ("other-direction", [{"isp": 69, "power_w": 10_000}], "reservation_increase", "isps[0].power_w"),
    ("outside-the-window", [{"isp": 10, "power_w": -1_000}], "reservation_increase", "isps[0].power_w"),
    ("beyond-max-power", [{"isp": 69, "power_w": -(10**9)}], "power_value_rejection", "isps[0].power_w"),
    ("isp-97", [{"isp": 97, "power_w": 0}], "isp_out_of_bounds", "isps[0].isp"),
]


@pytest.mark.parametrize(("isps", "code", "field"), [case[1:] for case in RESERVATION_CASES],
                         ids=[case[0] for case in RESERVATION_CASES])
def test_a_reservation_update_is_refused(world, gridco, reserved_day, reservation, isps, code, field):
    assert_refused(gridco, f"{API}/reservation-updates/create/", reservation_body(reserved_day, isps), code=code,
                   field=field)


def test_a_reservation_update_after_the_deadline_is_refused(world, gridco, reserved_day, reservation):
    deadline = isp_time.day_start(reserved_day) - timedelta(minutes=reservation.reservation_deadline_minutes)
    body = reservation_body(reserved_day, [{"isp": 69, "power_w": 0}])
    with patch("common.time.now", return_value=deadline):
        assert_refused(gridco, f"{API}/reservation-updates/create/", body, code="deadline_expired", field="period")


def test_a_reservation_update_cannot_raise_what_an_earlier_one_lowered(world, gridco, reserved_day, reservation):
    created(gridco, f"{API}/reservation-updates/create/", reservation_body(reserved_day, [{"isp": 69,
                                                                                           "power_w": -20_000}]))
    assert_refused(gridco, f"{API}/reservation-updates/create/",
                   reservation_body(reserved_day, [{"isp": 69, "power_w": -30_000}], reference="R-2"),
                   code="reservation_increase", field="isps[0].power_w")


@pytest.mark.parametrize(("extra", "code", "field"), [
    ({"contract": "GV-NOPE"}, "unknown_contract", "contract"),
    ({"isp_duration": "PT5M"}, "isp_duration_rejected", "isp_duration"),
    ({"time_zone": "UTC"}, "time_zone_rejected", "time_zone"),
], ids=["unknown-contract", "isp-duration", "time-zone"])
def test_a_reservation_update_with_a_wrong_frame_is_refused(world, gridco, reserved_day, reservation, extra, code,
                                                            field):
    assert_refused(gridco, f"{API}/reservation-updates/create/",
                   reservation_body(reserved_day, [{"isp": 69, "power_w": 0}], **extra), code=code, field=field)


def test_a_reservation_update_for_a_day_the_contract_does_not_cover_is_refused(world, gridco, reservation):
    before_contract = reservation.valid_from - timedelta(days=1)
    assert_refused(gridco, f"{API}/reservation-updates/create/",
                   reservation_body(before_contract, [{"isp": 69, "power_w": 0}]), code="unknown_contract",
                   field="contract")


# --- message identity: Already Submitted vs Duplicate Identifier ------------------------------------------


def _first_and_changed(kind: str, world: World, day: date, request: FlexRequest) -> tuple[str, str, Payload, Payload]:
    """(who, url, payload, same id with other content) for each message a participant sends."""
    if kind == "flex_request":
        body = request_body(world, day)
        return "gridco", "flex-requests/create/", body, {**body, "service_type": "other"}
    if kind == "d_prognosis":
        body = prognosis_body(world.cp_north.ean, day + timedelta(days=1))
        return "voltflex", "d-prognoses/create/", body, {**body, "revision": 7}
    if kind == "flex_offer":
        body = offer_body(request)
        return "voltflex", "flex-offers/create/", body, {**body, "options": [{**body["options"][0],
                                                                              "price_eur": "9.99"}]}
    if kind == "flex_order":
        contract(world, valid_from=day - timedelta(days=1))
        body = direct_body(world, day)
        return "gridco", "flex-orders/create/", body, {**body, "price_eur": "21.00"}
    contract(world, valid_from=day, reserved_power_w=-50_000, window_start=time(17, 0), window_end=time(21, 0))
    body = reservation_body(day + timedelta(days=2), [{"isp": 69, "power_w": -10_000}])
    return "gridco", "reservation-updates/create/", body, {**body, "reference": "R-other"}


MODELS = {"flex_request": FlexRequest, "d_prognosis": DPrognosis, "flex_offer": FlexOffer, "flex_order": FlexOrder,
          "reservation_update": FlexReservationUpdate}


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_resent_message_id_returns_the_first_result_and_other_content_is_refused(world, gridco, voltflex, day,
                                                                                   open_request, baseline, kind):
    who, path, body, changed = _first_and_changed(kind, world, day, open_request)
    client = {"gridco": gridco, "voltflex": voltflex}[who]
    message_id = str(uuid.uuid4())
    first = created(client, f"{API}/{path}", {**body, "message_id": message_id})
    assert first["message_id"] == message_id
    before = snapshot()

    again = created(client, f"{API}/{path}", {**body, "message_id": message_id})
    assert again["id"] == first["id"]
    assert snapshot() == before, "Already Submitted must not store the message twice"
    assert MODELS[kind].objects.filter(message_id=message_id).count() == 1

    assert_refused(client, f"{API}/{path}", {**changed, "message_id": message_id}, code="duplicate_message_id",
                   field="message_id", status=409)


def test_a_resent_revision_returns_the_first_revision(world, gridco, open_request):
    body = {"message_id": str(uuid.uuid4()), "isps": [band(69, duration=2)],
            "expires_at": local_iso(open_request.expires_at)}
    first = created(gridco, f"{API}/flex-requests/{open_request.pk}/revise/", body)
    again = created(gridco, f"{API}/flex-requests/{open_request.pk}/revise/", body)
    assert again["id"] == first["id"]
    assert FlexRequest.objects.filter(conversation_id=open_request.conversation_id).count() == 2


def test_another_senders_message_id_is_a_duplicate_that_reveals_nothing(world, voltflex, chargeco, day):
    message_id = str(uuid.uuid4())
    first = created(voltflex, f"{API}/d-prognoses/create/",
                    prognosis_body(world.cp_north.ean, day, message_id=message_id))
    body = assert_refused(chargeco, f"{API}/d-prognoses/create/",
                          prognosis_body(world.cp_north.ean, day, message_id=message_id),
                          code="duplicate_message_id", field="message_id", status=409)
    assert first["id"] not in str(body)


# --- inputs the API layer refuses before any service runs -------------------------------------------------


def test_an_unsolicited_offer_must_name_its_point_and_day(world, voltflex, day, baseline):
    body = unsolicited_body(world.cp_north.ean, day, isps=[69], expires_at=isp_time.isp_start(day, 60))
    del body["period"]
    assert_refused(voltflex, f"{API}/flex-offers/create/", body, code="invalid", field="congestion_point")


def test_a_dso_cannot_act_as_an_aggregator_nor_the_reverse(world, gridco, voltflex, day, open_request, baseline):
    """wrong_role is the services' guard; over the API the role permission answers first (403)."""
    for client, path, body in ((gridco, "flex-offers/create/", offer_body(open_request)),
                               (gridco, "d-prognoses/create/", prognosis_body(world.cp_north.ean, day)),
                               (voltflex, "flex-requests/create/", request_body(world, day)),
                               (voltflex, "flex-orders/create/", direct_body(world, day))):
        assert_refused(client, f"{API}/{path}", body, code="permission_denied", field=None, status=403)


# --- happy paths of the DSO endpoints ---------------------------------------------------------------------


def test_a_dso_opens_a_request(world, gridco, day):
    body = created(gridco, f"{API}/flex-requests/create/", request_body(
        world, day, service_type="peak", isps=[band(69, duration=2),
                                               band(71, disposition="Available", min_w=-5_000, max_w=5_000)]))
    assert (body["status"], body["revision"], body["congestion_point"], body["service_type"]) == (
        "open", 1, world.cp_north.ean, "peak")
    assert body["isps"] == [
        {"isp": 69, "disposition": "Requested", "min_power_w": -40_000, "max_power_w": -20_000},
        {"isp": 70, "disposition": "Requested", "min_power_w": -40_000, "max_power_w": -20_000},
        {"isp": 71, "disposition": "Available", "min_power_w": -5_000, "max_power_w": 5_000},
    ]
    stored = FlexRequest.objects.get(pk=body["id"])
    assert (stored.dso, stored.created_by) == (world.gridco, world.gridco_user)
    assert stored.conversation_id == uuid.UUID(body["conversation_id"])


def test_a_revision_supersedes_the_request_in_the_same_conversation(world, gridco, voltflex, open_request, offer):
    body = created(gridco, f"{API}/flex-requests/{open_request.pk}/revise/",
                   {"isps": [band(69, duration=2, min_w=-30_000, max_w=-10_000)],
                    "expires_at": local_iso(open_request.expires_at)})
    assert (body["revision"], body["status"], body["conversation_id"]) == (
        2, "open", str(open_request.conversation_id))
    assert body["id"] != str(open_request.pk)
    assert [row["isp"] for row in body["isps"]] == [69, 70]
    assert FlexRequest.objects.get(pk=open_request.pk).status == FlexRequest.Status.SUPERSEDED
    assert FlexOffer.objects.get(pk=offer.pk).status == FlexOffer.Status.REJECTED  # offers on the old one lapse
    listed = gridco.get(f"{API}/flex-requests/", {"conversation_id": str(open_request.conversation_id)}).json()
    assert sorted(item["revision"] for item in listed["results"]) == [1, 2]


def test_a_dso_cancels_a_request_and_its_open_offers_lapse(world, gridco, open_request, offer):
    body = created(gridco, f"{API}/flex-requests/{open_request.pk}/cancel/", status=200)
    assert (body["id"], body["status"]) == (str(open_request.pk), "cancelled")
    assert FlexOffer.objects.get(pk=offer.pk).status == FlexOffer.Status.REJECTED


def test_a_dso_orders_part_of_an_offer_and_powers_and_price_scale(world, gridco, offer, open_request):
    body = created(gridco, f"{API}/flex-offers/{offer.pk}/accept/", {"activation_factor": "0.75"})
    assert (body["activation_factor"], body["price_eur"], body["unsolicited"]) == ("0.75", "7.50", False)
    assert body["isps"] == powers(EVENING, -7_500)
    order = FlexOrder.objects.get(pk=body["id"])
    assert (order.price_eur, order.activation_factor) == (Decimal("7.50"), Decimal("0.75"))
    assert set(order.isps.values_list("power_w", flat=True)) == {-7_500}
    assert FlexOffer.objects.get(pk=offer.pk).status == FlexOffer.Status.ACCEPTED
    # 7.5 kW of the 20 kW requested: the request is only partly covered
    assert FlexRequest.objects.get(pk=open_request.pk).status == FlexRequest.Status.PARTIALLY_ORDERED


def test_partial_activation_rounds_half_up_to_whole_watts_and_cents(world, gridco, day, baseline):
    odd = services.flex_offer_submit(
        aggregator=world.voltflex, congestion_point=world.cp_north, period=day,
        options=[option(power_w=-3_333, price="9.99", isps=[69], min_activation_factor="0.50")],
        expires_at=isp_time.isp_start(day, 60))
    body = created(gridco, f"{API}/flex-offers/{odd.pk}/accept/", {"activation_factor": "0.50"})
    assert body["price_eur"] == "5.00"  # 4.995 -> 5.00
    assert body["isps"] == [{"isp": 69, "power_w": -1_667}]  # -1666.5 -> -1667


def test_a_dso_rejects_an_offer(world, gridco, offer):
    body = created(gridco, f"{API}/flex-offers/{offer.pk}/reject/", status=200)
    assert (body["id"], body["status"]) == (str(offer.pk), "rejected")
    assert not FlexOrder.objects.exists()


def test_a_dso_orders_directly_under_an_allowing_contract(world, gridco, day, baseline):
    agreement = contract(world, valid_from=day - timedelta(days=1))
    body = created(gridco, f"{API}/flex-orders/create/", direct_body(world, day, service_type="peak"))
    assert (body["unsolicited"], body["flex_offer"], body["contract"], body["aggregator"]) == (
        True, None, agreement.contract_id, world.voltflex.domain)
    assert (body["price_eur"], body["activation_factor"], body["d_prognosis"]) == ("20.00", "1.00", str(baseline.pk))
    assert body["isps"] == powers([69, 70, 71, 72], -15_000)
    assert body["order_reference"].startswith(f"ORD-{day:%Y%m%d}-")
    orders = api_client_for(world.voltflex_user).get(f"{API}/flex-orders/").json()["results"]
    assert [item["id"] for item in orders] == [body["id"]]


def test_a_dso_lowers_and_releases_a_reservation(world, gridco, reserved_day, reservation):
    body = created(gridco, f"{API}/reservation-updates/create/", reservation_body(
        reserved_day, [{"isp": 69, "power_w": -30_000}, {"isp": 70, "power_w": 0}]))
    isps = {row["isp"]: row["power_w"] for row in body["isps"]}
    assert sorted(isps) == EVENING  # the ISPs left out keep what was reserved
    assert (isps[69], isps[70], isps[71], isps[84]) == (-30_000, 0, -50_000, -50_000)
    assert (body["status"], body["contract"], body["reference"]) == ("accepted", "GV-2026-01", "R-1")

    second = created(gridco, f"{API}/reservation-updates/create/",
                     reservation_body(reserved_day, [{"isp": 69, "power_w": -10_000}], reference="R-2"))
    assert {row["isp"]: row["power_w"] for row in second["isps"]}[69] == -10_000
    assert FlexReservationUpdate.objects.get(pk=body["id"]).status == FlexReservationUpdate.Status.SUPERSEDED
    received = api_client_for(world.voltflex_user).get(f"{API}/reservation-updates/").json()["results"]
    assert {item["id"] for item in received} == {body["id"], second["id"]}
