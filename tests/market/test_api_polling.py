"""Polling the API lists: updated_since, cursor pagination, ordering, and the status/period/point filters."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rest_framework.test import APIClient

from common import time as clock
from market import services
from market.models import DPrognosis, FlexOffer, FlexOrder, FlexRequest
from settlement.models import Statement
from tests.builders import make_offer, make_prognosis, make_request
from tests.conftest import World, api_client_for

pytestmark = pytest.mark.django_db

OFFERS = "/api/v1/market/flex-offers/"


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


def walk(client: APIClient, url: str, params: dict[str, Any]) -> list[list[str]]:
    """Every page of a cursor-paginated list, following `next` to the end."""
    pages: list[list[str]] = []
    response = client.get(url, params)
    while True:
        pages.append(ids(response))
        following = response.json()["next"]
        if not following:
            return pages
        assert len(pages) < 20, "pagination does not end"
        response = client.get(following)


@pytest.fixture
def market(world: World, tomorrow: date) -> dict[str, Any]:
    """Requests, offers, orders and prognoses on two points and two days, in several statuses.

    gridco: request north/tomorrow (open), south/day after (open), north/day after (cancelled).
    chargeco (on both points): prognoses for all three, an offer on each open request; the north one ordered.
    """
    later = tomorrow + timedelta(days=1)
    north = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
    south = make_request(dso=world.gridco, point=world.cp_south, day=later)
    cancelled = services.flex_request_cancel(
        flex_request=make_request(dso=world.gridco, point=world.cp_north, day=later))
    prognoses = [make_prognosis(aggregator=world.chargeco, point=point, day=day)
                 for point, day in ((world.cp_north, tomorrow), (world.cp_south, later), (world.cp_north, later))]
    offer_north = make_offer(aggregator=world.chargeco, request=north)
    offer_south = make_offer(aggregator=world.chargeco, request=south)
    order = services.flex_offer_accept(flex_offer=offer_north, dso=world.gridco)
    return {"tomorrow": tomorrow, "later": later, "north": north, "south": south, "cancelled": cancelled,
            "prognoses": prognoses, "offer_north": offer_north, "offer_south": offer_south, "order": order}


# --- updated_since ----------------------------------------------------------------------------------------


def test_updated_since_returns_only_what_changed_since_then(world, tomorrow):
    request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
    first = make_offer(aggregator=world.voltflex, request=request, isps=[69, 70])
    second = make_offer(aggregator=world.voltflex, request=request, isps=[71, 72])
    # Both were last changed an hour ago; the poller saw them then.
    an_hour_ago = clock.now() - timedelta(hours=1)
    FlexOffer.objects.update(created_at=an_hour_ago, updated_at=an_hour_ago)
    last_poll = (an_hour_ago + timedelta(minutes=30)).astimezone(ZoneInfo("Europe/Amsterdam"))

    client = api_client_for(world.voltflex_user)
    assert ids(client.get(OFFERS, {"updated_since": last_poll.isoformat(), "ordering": "updated_at"})) == []
    assert client.post(f"{OFFERS}{first.pk}/revoke/").status_code == 200

    changed = client.get(OFFERS, {"updated_since": last_poll.isoformat(), "ordering": "updated_at"})
    assert ids(changed) == [str(first.pk)]
    assert changed.json()["results"][0]["status"] == "revoked"
    everything = client.get(OFFERS, {"updated_since": (an_hour_ago - timedelta(seconds=1)).isoformat()})
    assert set(ids(everything)) == {str(first.pk), str(second.pk)}


@pytest.mark.parametrize("since", ["2026-11-26T17:00:00Z", "2026-11-26T17:00:00+01:00", "2026-11-26T16:00:00-00:00"])
def test_updated_since_takes_any_utc_offset(world, since):
    assert api_client_for(world.voltflex_user).get(OFFERS, {"updated_since": since}).status_code == 200


@pytest.mark.parametrize("url", [OFFERS, "/api/v1/market/flex-orders/", "/api/v1/market/flex-requests/",
                                 "/api/v1/market/d-prognoses/", "/api/v1/market/reservation-updates/",
                                 "/api/v1/settlement/statements/"])
def test_a_naive_updated_since_is_refused(world, url):
    response = api_client_for(world.chargeco_user).get(url, {"updated_since": "2026-11-26T17:00:00"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("naive", "updated_since")


# --- cursor pagination and ordering -----------------------------------------------------------------------


@pytest.mark.parametrize("ordering", [None, "updated_at", "-updated_at", "created_at"])
def test_cursor_pages_walk_every_item_once(world, tomorrow, ordering):
    made = {str(make_prognosis(aggregator=world.chargeco, point=world.cp_north, day=tomorrow + timedelta(days=n)).pk)
            for n in range(5)}
    params: dict[str, Any] = {"page_size": 2}
    if ordering:
        params["ordering"] = ordering
    pages = walk(api_client_for(world.chargeco_user), "/api/v1/market/d-prognoses/", params)
    assert [len(page) for page in pages] == [2, 2, 1]
    walked = [item for page in pages for item in page]
    assert len(walked) == len(set(walked)) == 5
    assert set(walked) == made


def test_ordering_by_updated_at_follows_the_last_change(world, tomorrow):
    request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
    offers = [make_offer(aggregator=world.voltflex, request=request, isps=[isp]) for isp in (69, 70, 71)]
    base = clock.now() - timedelta(hours=1)
    for minutes, offer in zip((30, 10, 20), offers, strict=True):  # last changed: 2nd, then 3rd, then 1st
        FlexOffer.objects.filter(pk=offer.pk).update(updated_at=base + timedelta(minutes=minutes))
    client = api_client_for(world.gridco_user)
    expected = [str(offers[i].pk) for i in (1, 2, 0)]
    assert ids(client.get(OFFERS, {"ordering": "updated_at"})) == expected
    assert ids(client.get(OFFERS, {"ordering": "-updated_at"})) == expected[::-1]
    paged = walk(client, OFFERS, {"ordering": "updated_at", "page_size": 1})
    assert [item for page in paged for item in page] == expected


def test_the_default_order_is_newest_first(world, tomorrow):
    made = [make_prognosis(aggregator=world.chargeco, point=world.cp_north, day=tomorrow + timedelta(days=n))
            for n in range(3)]
    base = clock.now() - timedelta(hours=1)
    for minutes, prognosis in enumerate(made):
        DPrognosis.objects.filter(pk=prognosis.pk).update(created_at=base + timedelta(minutes=minutes))
    assert ids(api_client_for(world.chargeco_user).get("/api/v1/market/d-prognoses/")) == [
        str(p.pk) for p in reversed(made)]


# --- filters ----------------------------------------------------------------------------------------------


def _expect(market: dict[str, Any], *names: str) -> set[str]:
    found: set[str] = set()
    for name in names:
        value = market[name]
        found |= {str(obj.pk) for obj in value} if isinstance(value, list) else {str(value.pk)}
    return found


FILTER_CASES = [
    # (who, url, params, expected objects)
    ("gridco", OFFERS, {"status": "accepted"}, ["offer_north"]),
    ("gridco", OFFERS, {"status": "submitted"}, ["offer_south"]),
    ("gridco", OFFERS, {"period": "tomorrow"}, ["offer_north"]),
    ("gridco", OFFERS, {"period_after": "later"}, ["offer_south"]),
    ("gridco", OFFERS, {"period_before": "tomorrow"}, ["offer_north"]),
    ("chargeco", OFFERS, {"congestion_point": "south"}, ["offer_south"]),
    ("chargeco", OFFERS, {"period_after": "tomorrow", "period_before": "later"}, ["offer_north", "offer_south"]),
    ("gridco", "/api/v1/market/flex-orders/", {"status": "placed"}, ["order"]),
    ("gridco", "/api/v1/market/flex-orders/", {"status": "settled"}, []),
    ("chargeco", "/api/v1/market/flex-orders/", {"period": "later"}, []),
    ("chargeco", "/api/v1/market/flex-orders/", {"period_before": "tomorrow"}, ["order"]),
    ("chargeco", "/api/v1/market/flex-orders/", {"period_after": "later"}, []),
    ("chargeco", "/api/v1/market/flex-orders/", {"congestion_point": "north"}, ["order"]),
    ("gridco", "/api/v1/market/flex-requests/", {"status": "cancelled"}, ["cancelled"]),
    ("gridco", "/api/v1/market/flex-requests/", {"status": "partially_ordered"}, ["north"]),
    ("gridco", "/api/v1/market/flex-requests/", {"period": "later"}, ["south", "cancelled"]),
    ("gridco", "/api/v1/market/flex-requests/", {"period_before": "tomorrow"}, ["north"]),
    ("gridco", "/api/v1/market/flex-requests/", {"period_after": "later", "congestion_point": "north"},
     ["cancelled"]),
    ("chargeco", "/api/v1/market/flex-requests/", {"congestion_point": "south"}, ["south"]),
    ("chargeco", "/api/v1/market/flex-requests/", {"status": "cancelled"}, ["cancelled"]),
    ("chargeco", "/api/v1/market/d-prognoses/", {"status": "accepted"}, ["prognoses"]),
    ("chargeco", "/api/v1/market/d-prognoses/", {"status": "superseded"}, []),
    ("chargeco", "/api/v1/market/d-prognoses/", {"period": "tomorrow"}, ["prognosis_0"]),
    ("chargeco", "/api/v1/market/d-prognoses/", {"period_after": "later"}, ["prognosis_1", "prognosis_2"]),
    ("chargeco", "/api/v1/market/d-prognoses/", {"period_before": "tomorrow"}, ["prognosis_0"]),
    ("chargeco", "/api/v1/market/d-prognoses/", {"congestion_point": "north"}, ["prognosis_0", "prognosis_2"]),
]


@pytest.mark.parametrize(("who", "url", "params", "expected"), FILTER_CASES,
                         ids=[f"{c[1].split('/')[-2]}-{'-'.join(c[2])}-{c[0]}" for c in FILTER_CASES])
def test_a_list_filters(world, market, who, url, params, expected):
    points = {"north": world.cp_north.ean, "south": world.cp_south.ean}
    days = {"tomorrow": market["tomorrow"].isoformat(), "later": market["later"].isoformat()}
    query = {key: points.get(value, days.get(value, value)) for key, value in params.items()}
    named = {**market, **{f"prognosis_{i}": p for i, p in enumerate(market["prognoses"])}}
    assert set(ids(api_client_for(getattr(world, f"{who}_user")).get(url, query))) == _expect(named, *expected)


def test_an_aggregator_sees_open_requests_unless_it_filters_by_status(world, market):
    client = api_client_for(world.chargeco_user)
    assert set(ids(client.get("/api/v1/market/flex-requests/"))) == _expect(market, "north", "south")
    assert FlexRequest.objects.get(pk=market["north"].pk).status == FlexRequest.Status.PARTIALLY_ORDERED


def test_a_malformed_filter_value_is_a_400_naming_the_filter(world):
    response = api_client_for(world.gridco_user).get(OFFERS, {"period": "tomorrow"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "period"


@pytest.fixture
def statements(world: World, tomorrow: date) -> dict[str, Statement]:
    def issue(start: date, end: date, version: int, status: str, aggregator: Any = None) -> Statement:
        return Statement.objects.create(dso=world.gridco, aggregator=aggregator or world.voltflex, period_start=start,
                                        period_end=end, version=version, status=status, total_eur=Decimal("1.00"),
                                        issued_at=clock.now())

    november = date(2026, 11, 1)
    return {
        "nov_v1": issue(november, date(2026, 11, 30), 1, Statement.Status.SUPERSEDED),
        "nov_v2": issue(november, date(2026, 11, 30), 2, Statement.Status.ISSUED),
        "dec": issue(date(2026, 12, 1), date(2026, 12, 31), 1, Statement.Status.ISSUED),
        "chargeco_dec": issue(date(2026, 12, 1), date(2026, 12, 31), 1, Statement.Status.ISSUED, world.chargeco),
    }


@pytest.mark.parametrize(("params", "expected"), [
    ({}, ["nov_v1", "nov_v2", "dec"]),
    ({"status": "issued"}, ["nov_v2", "dec"]),
    ({"status": "superseded"}, ["nov_v1"]),
    ({"period_after": "2026-12-01"}, ["dec"]),
    ({"period_before": "2026-11-30"}, ["nov_v1", "nov_v2"]),
    ({"period_after": "2026-11-15", "period_before": "2026-11-15"}, ["nov_v1", "nov_v2"]),
    ({"period_after": "2027-01-01"}, []),
])
def test_statements_filter_by_status_and_period(world, statements, params, expected):
    found = ids(api_client_for(world.voltflex_user).get("/api/v1/settlement/statements/", params))
    assert set(found) == {str(statements[name].pk) for name in expected}


@pytest.mark.parametrize("params", [{"period": "2026-12-15"}, {"congestion_point": "far"}])
def test_statements_filter_by_day_and_point_like_the_market_lists(world, statements, params):
    query = {key: world.cp_far.ean if value == "far" else value for key, value in params.items()}
    found = ids(api_client_for(world.voltflex_user).get("/api/v1/settlement/statements/", query))
    expected = {str(statements["dec"].pk)} if "period" in params else set()  # no settlement is on cp_far
    assert set(found) == expected


def test_statements_poll_with_updated_since_and_pages(world, statements):
    an_hour_ago = clock.now() - timedelta(hours=1)
    Statement.objects.update(updated_at=an_hour_ago)
    Statement.objects.filter(pk=statements["dec"].pk).update(updated_at=clock.now())
    client = api_client_for(world.gridco_user)
    since = (an_hour_ago + timedelta(minutes=1)).isoformat()
    assert ids(client.get("/api/v1/settlement/statements/", {"updated_since": since})) == [str(statements["dec"].pk)]
    pages = walk(client, "/api/v1/settlement/statements/", {"page_size": 2})
    walked = [item for page in pages for item in page]
    assert sorted(walked) == sorted(str(s.pk) for s in statements.values())
    assert len(walked) == len(set(walked))


def test_orders_poll_by_updated_since(world, market):
    client = api_client_for(world.chargeco_user)
    an_hour_ago = clock.now() - timedelta(hours=1)
    FlexOrder.objects.update(updated_at=an_hour_ago)
    since = (an_hour_ago + timedelta(minutes=1)).isoformat()
    assert ids(client.get("/api/v1/market/flex-orders/", {"updated_since": since})) == []
    services.flex_order_mark_dispatched(flex_order=market["order"])
    assert ids(client.get("/api/v1/market/flex-orders/", {"updated_since": since, "ordering": "updated_at"})) == [
        str(market["order"].pk)]


def test_an_aggregator_polling_for_changes_learns_of_a_cancellation(world, tomorrow):
    request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
    FlexRequest.objects.update(updated_at=clock.now() - timedelta(hours=1))
    since = (clock.now() - timedelta(minutes=30)).isoformat()
    client = api_client_for(world.chargeco_user)
    assert ids(client.get("/api/v1/market/flex-requests/", {"updated_since": since})) == []
    assert api_client_for(world.gridco_user).post(f"/api/v1/market/flex-requests/{request.pk}/cancel/").status_code == 200

    changed = client.get("/api/v1/market/flex-requests/", {"updated_since": since, "ordering": "updated_at"})
    assert [(item["id"], item["status"]) for item in changed.json()["results"]] == [(str(request.pk), "cancelled")]
