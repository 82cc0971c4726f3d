"""The audit trail per object through the API: who did what, when, before and after; names stay in-house."""

from __future__ import annotations

import pytest

from market import services
from tests.builders import make_offer, make_request
from tests.conftest import api_client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def ordered_offer(world, tomorrow):
    request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
    offer = make_offer(aggregator=world.voltflex, request=request)
    services.flex_offer_accept(flex_offer=offer, dso=world.gridco, actor=world.gridco_user)
    return offer


def test_the_offer_trail_lists_each_transition_with_before_and_after(world, ordered_offer):
    events = api_client_for(world.voltflex_user).get(f"/api/v1/market/flex-offers/{ordered_offer.pk}/events/").json()
    assert [event["action"] for event in events] == ["flex_offer.submitted", "flex_offer.accepted"]
    accepted = events[1]
    assert (accepted["before"]["status"], accepted["after"]["status"]) == ("submitted", "accepted")
    assert accepted["occurred_at"] >= events[0]["occurred_at"]


def test_people_are_named_only_to_their_own_organisation(world, ordered_offer):
    seen_by_aggregator = api_client_for(world.voltflex_user).get(
        f"/api/v1/market/flex-offers/{ordered_offer.pk}/events/").json()
    seen_by_dso = api_client_for(world.gridco_user).get(f"/api/v1/market/flex-offers/{ordered_offer.pk}/events/").json()
    accepted_by = {e["action"]: e["who"] for e in seen_by_aggregator}["flex_offer.accepted"]
    assert accepted_by == world.gridco.domain  # the DSO's person stays anonymous to the aggregator
    assert {e["action"]: e["who"] for e in seen_by_dso}["flex_offer.accepted"] == world.gridco_user.username


def test_an_api_key_is_named_to_its_owner_and_anonymous_to_others(world, tomorrow):
    from rest_framework.test import APIClient

    from market.apikeys import api_key_create

    request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
    offer = make_offer(aggregator=world.voltflex, request=request)
    _, raw = api_key_create(participant=world.gridco, name="clearing-bot")
    bot = APIClient()
    bot.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert bot.post(f"/api/v1/market/flex-offers/{offer.pk}/accept/", {}, format="json").status_code == 201
    own = bot.get(f"/api/v1/market/flex-offers/{offer.pk}/events/").json()
    theirs = api_client_for(world.voltflex_user).get(f"/api/v1/market/flex-offers/{offer.pk}/events/").json()
    assert {e["action"]: e["who"] for e in own}["flex_offer.accepted"].endswith(":clearing-bot")
    assert {e["action"]: e["who"] for e in theirs}["flex_offer.accepted"] == world.gridco.domain


def test_order_and_request_trails_are_served_too(world, ordered_offer):
    client = api_client_for(world.gridco_user)
    order = ordered_offer.order
    assert "flex_order.placed" in [e["action"] for e in client.get(f"/api/v1/market/flex-orders/{order.pk}/events/").json()]
    request_events = client.get(f"/api/v1/market/flex-requests/{ordered_offer.flex_request_id}/events/").json()
    assert [e["action"] for e in request_events][:2] == ["flex_request.created", "flex_request.opened"]
