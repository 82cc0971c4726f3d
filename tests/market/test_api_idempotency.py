"""Idempotency-Key on the API's POSTs, and the races it (and the row claim) must win on PostgreSQL."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any
from unittest.mock import patch

import pytest
from django.db import connection
from rest_framework.test import APIClient

from common import isp as isp_time
from common.models import IdempotencyRecord
from market import services
from market.models import DPrognosis, FlexOffer, FlexOrder, FlexRequest
from tests.builders import evening_isps, make_offer, make_prognosis, make_request
from tests.conftest import World, api_client_for

pytestmark = pytest.mark.django_db

POSTGRES_ONLY = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL"),
    reason="needs PostgreSQL (DATABASE_URL): SQLite serialises "
           "writers, so two requests cannot race there",
)
PROGNOSES = "/api/v1/market/d-prognoses/create/"
OFFERS = "/api/v1/market/flex-offers/create/"


def prognosis_payload(world: World, day: date, power_w: int = 50_000) -> dict[str, Any]:
    return {"congestion_point": world.cp_north.ean, "period": day.isoformat(),
            "isps": [{"isp": 1, "duration": isp_time.isp_count(day), "power_w": power_w}]}


def offer_payload(request: FlexRequest, price: str = "8.40") -> dict[str, Any]:
    return {"flex_request": str(request.pk), "expires_at": request.expires_at.isoformat(),
            "options": [{"price_eur": price,
                         "isps": [{"isp": i, "power_w": -10_000} for i in evening_isps(request.period)]}]}


def post(client: APIClient, url: str, payload: dict[str, Any] | None = None, key: str | None = None) -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(url, payload if payload is not None else {}, format="json", **headers)


@pytest.fixture
def request_north(world: World, tomorrow: date) -> FlexRequest:
    return make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)


def test_a_retried_post_returns_the_first_answer_and_acts_once(world, request_north):
    make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=request_north.period)
    client = api_client_for(world.voltflex_user)
    first = post(client, OFFERS, offer_payload(request_north), key="offer-1")
    second = post(client, OFFERS, offer_payload(request_north), key="offer-1")

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert FlexOffer.objects.count() == 1
    assert IdempotencyRecord.objects.get().status_code == 201


def test_without_a_key_a_retry_acts_again(world, request_north):
    make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=request_north.period)
    client = api_client_for(world.voltflex_user)
    assert post(client, OFFERS, offer_payload(request_north)).status_code == 201
    assert post(client, OFFERS, offer_payload(request_north)).status_code == 201
    assert FlexOffer.objects.count() == 2
    assert not IdempotencyRecord.objects.exists()


def test_a_retried_order_replays_the_order_instead_of_a_conflict(world, request_north):
    offer = make_offer(aggregator=world.voltflex, request=request_north)
    client = api_client_for(world.gridco_user)
    url = f"/api/v1/market/flex-offers/{offer.pk}/accept/"
    first = post(client, url, {}, key="accept-1")
    second = post(client, url, {}, key="accept-1")
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json()["id"] == first.json()["id"]
    assert FlexOrder.objects.count() == 1
    third = post(client, url, {}, key="accept-2")  # a new key is a new request: the offer is taken
    assert (third.status_code, third.json()["error"]["code"]) == (409, "invalid_state")


def test_the_same_key_with_another_body_is_refused(world, tomorrow):
    client = api_client_for(world.voltflex_user)
    assert post(client, PROGNOSES, prognosis_payload(world, tomorrow), key="k").status_code == 201
    response = post(client, PROGNOSES, prognosis_payload(world, tomorrow, power_w=1), key="k")
    assert response.status_code == 422
    assert (response.json()["error"]["code"], response.json()["error"]["field"]) == (
        "idempotency_key_reused", "Idempotency-Key")
    assert DPrognosis.objects.count() == 1


def test_the_same_key_on_another_endpoint_is_refused(world, request_north):
    offer = make_offer(aggregator=world.voltflex, request=request_north)
    client = api_client_for(world.voltflex_user)
    assert post(client, PROGNOSES, prognosis_payload(world, request_north.period), key="k").status_code == 201
    response = post(client, f"/api/v1/market/flex-offers/{offer.pk}/revoke/", key="k")
    assert (response.status_code, response.json()["error"]["code"]) == (422, "idempotency_key_reused")
    assert FlexOffer.objects.get(pk=offer.pk).status == FlexOffer.Status.SUBMITTED


def test_a_failed_request_is_not_recorded_so_a_corrected_retry_acts(world, tomorrow):
    client = api_client_for(world.voltflex_user)
    wrong = prognosis_payload(world, tomorrow)
    wrong["isps"][0]["duration"] = 95  # one ISP short
    refused = post(client, PROGNOSES, wrong, key="retry-me")
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "missing_isps")
    assert not IdempotencyRecord.objects.exists()

    fixed = post(client, PROGNOSES, prognosis_payload(world, tomorrow), key="retry-me")
    assert fixed.status_code == 201
    assert "Idempotent-Replayed" not in fixed.headers
    assert DPrognosis.objects.count() == 1


def test_a_refused_state_change_is_not_recorded_either(world, request_north):
    offer = make_offer(aggregator=world.voltflex, request=request_north)
    services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
    client = api_client_for(world.voltflex_user)
    response = post(client, f"/api/v1/market/flex-offers/{offer.pk}/revoke/", key="revoke-1")
    assert (response.status_code, response.json()["error"]["code"]) == (409, "flexibility_procured")
    assert not IdempotencyRecord.objects.exists()


def test_keys_belong_to_one_participant(world, tomorrow):
    voltflex, chargeco = api_client_for(world.voltflex_user), api_client_for(world.chargeco_user)
    ours = post(voltflex, PROGNOSES, prognosis_payload(world, tomorrow), key="shared-key")
    theirs = post(chargeco, PROGNOSES, prognosis_payload(world, tomorrow), key="shared-key")
    assert (ours.status_code, theirs.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in theirs.headers
    assert ours.json()["id"] != theirs.json()["id"]
    assert DPrognosis.objects.filter(aggregator=world.chargeco).count() == 1
    # each replays its own answer, and nobody else's
    assert post(chargeco, PROGNOSES, prognosis_payload(world, tomorrow), key="shared-key").json()["id"] == (
        theirs.json()["id"])
    assert post(voltflex, PROGNOSES, prognosis_payload(world, tomorrow), key="shared-key").json()["id"] == (
        ours.json()["id"])


def test_two_users_of_one_participant_share_its_keys(world, tomorrow):
    from tests.factories import UserFactory

    colleague = api_client_for(UserFactory(participant=world.voltflex))
    first = post(api_client_for(world.voltflex_user), PROGNOSES, prognosis_payload(world, tomorrow), key="team-key")
    again = post(colleague, PROGNOSES, prognosis_payload(world, tomorrow), key="team-key")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


def test_an_overlong_key_is_refused(world, tomorrow):
    response = post(api_client_for(world.voltflex_user), PROGNOSES, prognosis_payload(world, tomorrow), key="k" * 256)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_idempotency_key")
    assert not DPrognosis.objects.exists()


# --- races on PostgreSQL ----------------------------------------------------------------------------------


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in parallel threads (each with its own DB connection), released together."""
    start = threading.Barrier(len(calls), timeout=30)
    results: list[Any] = [None] * len(calls)

    def run(index: int, fn: Callable[[], Any]) -> None:
        try:
            start.wait()
            results[index] = fn()
        except Exception as exc:  # reported by the assertions below
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a racing request hung"
    return results


@POSTGRES_ONLY
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_requests_with_one_key_act_once(world, tomorrow):
    real_submit = services.d_prognosis_submit

    def slow_submit(**kwargs: Any) -> DPrognosis:
        # Hold the first request's transaction open so the second one arrives while it is in flight.
        result = real_submit(**kwargs)
        time.sleep(0.3)
        return result

    payload = prognosis_payload(world, tomorrow)
    clients = [api_client_for(world.voltflex_user), api_client_for(world.voltflex_user)]
    with patch("market.services.d_prognosis_submit", side_effect=slow_submit):
        responses = race(*(lambda c=c: post(c, PROGNOSES, payload, key=f"race-{tomorrow}") for c in clients))

    assert all(not isinstance(r, Exception) for r in responses), responses
    assert [r.status_code for r in responses] == [201, 201], [r.content for r in responses]
    assert responses[0].json() == responses[1].json()
    assert sorted(r.headers.get("Idempotent-Replayed", "") for r in responses) == ["", "true"]
    assert DPrognosis.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1


@POSTGRES_ONLY
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_acceptances_of_one_offer_place_one_order(world, tomorrow):
    request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
    offer = make_offer(aggregator=world.voltflex, request=request)
    both_inside = threading.Barrier(2, timeout=30)
    real_accept = services.flex_offer_accept

    def accept_together(**kwargs: Any) -> FlexOrder:
        # Both requests have loaded the offer as SUBMITTED before either claims it: only the claim can decide.
        both_inside.wait()
        return real_accept(**kwargs)

    url = f"/api/v1/market/flex-offers/{offer.pk}/accept/"
    clients = [api_client_for(world.gridco_user), api_client_for(world.gridco_user)]
    with patch("market.services.flex_offer_accept", side_effect=accept_together):
        responses = race(*(lambda c=c: post(c, url, {}) for c in clients))

    assert all(not isinstance(r, Exception) for r in responses), responses
    assert sorted(r.status_code for r in responses) == [201, 409], [r.content for r in responses]
    loser = next(r for r in responses if r.status_code == 409)
    assert loser.json()["error"]["code"] == "invalid_state"
    assert FlexOrder.objects.filter(flex_offer=offer).count() == 1
    assert FlexOffer.objects.get(pk=offer.pk).status == FlexOffer.Status.ACCEPTED


def test_message_ids_and_idempotency_keys_are_independent(world, tomorrow):
    """message_id (UFTP identity) and Idempotency-Key (HTTP retry) are independent: a new key with a resent
    message_id is 'Already Submitted' and returns the first object, recorded under the new key."""
    client = api_client_for(world.voltflex_user)
    payload = {**prognosis_payload(world, tomorrow), "message_id": str(uuid.uuid4())}
    first = post(client, PROGNOSES, payload, key="a")
    second = post(client, PROGNOSES, payload, key="b")
    assert second.status_code == 201 and "Idempotent-Replayed" not in second.headers
    assert second.json()["id"] == first.json()["id"]
    assert DPrognosis.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 2
