"""Bidding API: the happy path an aggregator follows, the error contract, and the tenant walls."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from common import isp as isp_time
from market import services
from market.models import DPrognosis, FlexOffer
from tests.builders import evening_isps, make_offer, make_prognosis, make_request
from tests.conftest import api_client_for

pytestmark = pytest.mark.django_db


def prognosis_payload(point, day, power_w=50_000):
    return {"congestion_point": point.ean, "period": day.isoformat(),
            "isps": [{"isp": i, "power_w": power_w} for i in range(1, isp_time.isp_count(day) + 1)]}


def offer_payload(request, power_w=-10_000, price="8.40"):
    return {"flex_request": str(request.pk), "expires_at": request.expires_at.isoformat(),
            "options": [{"price_eur": price,
                         "isps": [{"isp": i, "power_w": power_w} for i in evening_isps(request.period)]}]}


@pytest.fixture
def request_north(world, tomorrow):
    return make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)


@pytest.fixture
def request_far(world, tomorrow):
    return make_request(dso=world.otherdso, point=world.cp_far, day=tomorrow)


def test_an_aggregator_bids_on_an_open_request_end_to_end(world, request_north, request_far):
    client = api_client_for(world.voltflex_user)
    listed = client.get("/api/v1/market/flex-requests/")
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["results"]] == [str(request_north.pk)]

    created = client.post("/api/v1/market/d-prognoses/create/", prognosis_payload(world.cp_north, request_north.period),
                          format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["revision"] == 1

    offer = client.post("/api/v1/market/flex-offers/create/", offer_payload(request_north), format="json")
    assert offer.status_code == 201, offer.json()
    body = offer.json()
    assert body["flex_request"] == str(request_north.pk)
    assert body["d_prognosis"] == created.json()["id"]
    assert body["options"] == [{
        "option_reference": "1", "price_eur": "8.40", "min_activation_factor": "1.00",
        "isps": [{"isp": i, "power_w": -10_000} for i in evening_isps(request_north.period)],
    }]
    assert "price_eur" not in body and "isps" not in body
    assert body["status"] == "submitted"

    mine = client.get("/api/v1/market/flex-offers/")
    assert [item["id"] for item in mine.json()["results"]] == [body["id"]]

    order = services.flex_offer_accept(flex_offer=FlexOffer.objects.get(pk=body["id"]), dso=world.gridco)
    orders = client.get("/api/v1/market/flex-orders/").json()["results"]
    assert [item["order_reference"] for item in orders] == [order.order_reference]
    detail = client.get(f"/api/v1/market/flex-orders/{order.pk}/")
    assert detail.status_code == 200
    assert {key: detail.json()[key] for key in (
        "flex_offer", "option_reference", "unsolicited", "contract", "service_type", "dso", "aggregator",
        "price_eur")} == {
        "flex_offer": body["id"], "option_reference": "1", "unsolicited": False, "contract": None,
        "service_type": "", "dso": world.gridco.domain, "aggregator": world.voltflex.domain, "price_eur": "8.40"}


def test_errors_name_a_code_and_the_field(world, request_north):
    client = api_client_for(world.voltflex_user)
    client.post("/api/v1/market/d-prognoses/create/", prognosis_payload(world.cp_north, request_north.period),
                format="json")
    payload = offer_payload(request_north)
    isps = payload["options"][0]["isps"]
    isps[1]["isp"] = isps[0]["isp"]
    response = client.post("/api/v1/market/flex-offers/create/", payload, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "isp_conflict"
    assert response.json()["error"]["field"] == "options[0].isps[1].isp"

    payload = offer_payload(request_north)
    payload["options"][0]["price_eur"] = "oops"
    error = client.post("/api/v1/market/flex-offers/create/", payload, format="json").json()["error"]
    assert error["code"] == "invalid"
    assert error["field"].startswith("options") and error["field"].endswith("price_eur")  # exact path: see below

    payload = offer_payload(request_north)
    payload["expires_at"] = request_north.expires_at.replace(tzinfo=None).isoformat()
    error = client.post("/api/v1/market/flex-offers/create/", payload, format="json").json()["error"]
    assert (error["code"], error["field"]) == ("naive", "expires_at")
    assert FlexOffer.objects.count() == 0


def test_input_errors_inside_options_name_the_field_like_service_errors(world, request_north):
    client = api_client_for(world.voltflex_user)
    payload = offer_payload(request_north)
    payload["options"][0]["price_eur"] = "oops"
    error = client.post("/api/v1/market/flex-offers/create/", payload, format="json").json()["error"]
    assert (error["code"], error["field"]) == ("invalid", "options[0].price_eur")
    payload = offer_payload(request_north)
    payload["options"][0]["isps"][1]["isp"] = 0
    error = client.post("/api/v1/market/flex-offers/create/", payload, format="json").json()["error"]
    assert (error["code"], error["field"]) == ("min_value", "options[0].isps[1].isp")


def test_a_missing_prognosis_isp_is_refused_without_writing(world, tomorrow):
    client = api_client_for(world.voltflex_user)
    payload = prognosis_payload(world.cp_north, tomorrow)
    payload["isps"].pop()
    response = client.post("/api/v1/market/d-prognoses/create/", payload, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_isps"
    assert DPrognosis.objects.count() == 0


def test_an_unknown_congestion_point_is_a_clear_error(world, tomorrow):
    client = api_client_for(world.voltflex_user)
    payload = prognosis_payload(world.cp_north, tomorrow)
    payload["congestion_point"] = "871690000000000000"
    error = client.post("/api/v1/market/d-prognoses/create/", payload, format="json").json()["error"]
    assert (error["code"], error["field"]) == ("unknown_congestion_point", "congestion_point")


def test_anonymous_callers_get_401_with_the_error_contract(world):
    response = APIClient().get("/api/v1/market/flex-requests/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_dso_cannot_submit_offers(world, request_north):
    response = api_client_for(world.gridco_user).post("/api/v1/market/flex-offers/create/",
                                                      offer_payload(request_north), format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_a_dso_sees_offers_on_its_points_only(world, request_north, request_far):
    offer = make_offer(aggregator=world.voltflex, request=request_north)
    ours = api_client_for(world.gridco_user).get("/api/v1/market/flex-offers/").json()["results"]
    assert [item["id"] for item in ours] == [str(offer.pk)]
    theirs = api_client_for(world.otherdso_user).get("/api/v1/market/flex-offers/").json()["results"]
    assert theirs == []


def test_revoking_through_the_api(world, request_north):
    offer = make_offer(aggregator=world.voltflex, request=request_north)
    client = api_client_for(world.voltflex_user)
    assert client.post(f"/api/v1/market/flex-offers/{offer.pk}/revoke/").json()["status"] == "revoked"
    again = client.post(f"/api/v1/market/flex-offers/{offer.pk}/revoke/")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_state"


def test_revoking_an_ordered_offer_is_refused_as_flexibility_procured(world, request_north):
    offer = make_offer(aggregator=world.voltflex, request=request_north)
    services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
    response = api_client_for(world.voltflex_user).post(f"/api/v1/market/flex-offers/{offer.pk}/revoke/")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "flexibility_procured"
    offer.refresh_from_db()
    assert offer.status == FlexOffer.Status.ACCEPTED


def test_a_dso_orders_an_offer_option_through_the_api(world, request_north):
    offer = make_offer(aggregator=world.voltflex, request=request_north, power_w=-10_000, price="8.40",
                       min_activation_factor="0.50")
    client = api_client_for(world.gridco_user)
    response = client.post(f"/api/v1/market/flex-offers/{offer.pk}/accept/",
                           {"option_reference": "1", "activation_factor": "0.50"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["flex_offer"], body["option_reference"], body["activation_factor"], body["price_eur"]) == (
        str(offer.pk), "1", "0.50", "4.20")
    assert {row["power_w"] for row in body["isps"]} == {-5_000}
    again = client.post(f"/api/v1/market/flex-offers/{offer.pk}/accept/", {}, format="json")
    assert again.status_code == 409
    assert api_client_for(world.otherdso_user).post(f"/api/v1/market/flex-offers/{offer.pk}/accept/", {},
                                                    format="json").status_code == 404


class TestTenantWalls:
    """Someone else's token never reads or touches another participant's objects: 404 with no data."""

    @pytest.fixture
    def voltflex_objects(self, world, request_north):
        offer = make_offer(aggregator=world.voltflex, request=request_north)
        order = services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
        return {"request": request_north, "offer": offer, "order": order}

    def test_another_aggregators_token_gets_404_on_every_detail(self, world, voltflex_objects):
        client = api_client_for(world.chargeco_user)
        offer, order = voltflex_objects["offer"], voltflex_objects["order"]
        for url in (f"/api/v1/market/flex-offers/{offer.pk}/", f"/api/v1/market/flex-orders/{order.pk}/",
                    f"/api/v1/market/flex-offers/{offer.pk}/revoke/"):
            response = client.post(url) if url.endswith("revoke/") else client.get(url)
            assert response.status_code == 404, url
            assert str(offer.pk) not in response.content.decode()
        offer.refresh_from_db()
        assert offer.status == FlexOffer.Status.ACCEPTED

    def test_an_aggregator_not_on_the_point_cannot_see_the_request(self, world, request_far):
        client = api_client_for(world.voltflex_user)
        assert client.get(f"/api/v1/market/flex-requests/{request_far.pk}/").status_code == 404
        foreign = client.post("/api/v1/market/flex-offers/create/", offer_payload(request_far), format="json")
        absent_payload = offer_payload(request_far)
        absent_payload["flex_request"] = str(uuid.uuid4())
        absent = client.post("/api/v1/market/flex-offers/create/", absent_payload, format="json")
        # A foreign reference is answered exactly like one that does not exist: nothing leaks.
        for response in (foreign, absent):
            assert response.status_code == 400
            error = response.json()["error"]
            assert (error["code"], error["field"]) == ("unknown_reference", "flex_request")
            assert str(request_far.pk) not in response.content.decode()
        assert foreign.json() == absent.json()
        assert FlexOffer.objects.count() == 0

    def test_another_aggregators_prognosis_is_an_unknown_reference(self, world, request_north):
        theirs = make_prognosis(aggregator=world.chargeco, point=world.cp_north, day=request_north.period)
        make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=request_north.period)
        payload = {**offer_payload(request_north), "d_prognosis": str(theirs.pk)}
        response = api_client_for(world.voltflex_user).post("/api/v1/market/flex-offers/create/", payload,
                                                            format="json")
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("unknown_reference", "d_prognosis")
        assert str(theirs.pk) not in response.content.decode()
        assert FlexOffer.objects.count() == 0

    def test_another_dso_gets_404_and_empty_lists(self, world, voltflex_objects):
        client = api_client_for(world.otherdso_user)
        assert client.get(f"/api/v1/market/flex-requests/{voltflex_objects['request'].pk}/").status_code == 404
        assert client.get(f"/api/v1/market/flex-orders/{voltflex_objects['order'].pk}/").status_code == 404
        for url in ("/api/v1/market/flex-requests/", "/api/v1/market/flex-offers/", "/api/v1/market/flex-orders/"):
            assert client.get(url).json()["results"] == [], url

    def test_lists_filter_by_status_period_and_point(self, world, voltflex_objects, tomorrow):
        client = api_client_for(world.voltflex_user)
        assert len(client.get("/api/v1/market/flex-orders/", {"status": "placed"}).json()["results"]) == 1
        assert client.get("/api/v1/market/flex-orders/", {"status": "settled"}).json()["results"] == []
        assert client.get("/api/v1/market/flex-offers/", {"congestion_point": world.cp_south.ean}).json()[
            "results"] == []
        assert len(client.get("/api/v1/market/flex-offers/", {"period": tomorrow.isoformat()}).json()["results"]) == 1


def test_lists_are_cursor_paginated_and_filter_by_day_range_and_change_time(world, tomorrow):
    day_after = tomorrow + timedelta(days=1)
    first = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
    cut = timezone.now()
    second = make_request(dso=world.gridco, point=world.cp_north, day=day_after)
    client = api_client_for(world.gridco_user)

    def ids(params):
        response = client.get("/api/v1/market/flex-requests/", params)
        assert response.status_code == 200, response.json()
        return [item["id"] for item in response.json()["results"]]

    assert ids({"period_after": day_after.isoformat()}) == [str(second.pk)]
    assert ids({"period_before": tomorrow.isoformat()}) == [str(first.pk)]
    assert ids({"updated_since": cut.isoformat()}) == [str(second.pk)]
    naive = client.get("/api/v1/market/flex-requests/", {"updated_since": cut.replace(tzinfo=None).isoformat()})
    assert naive.status_code == 400
    assert (naive.json()["error"]["code"], naive.json()["error"]["field"]) == ("naive", "updated_since")

    page = client.get("/api/v1/market/flex-requests/", {"ordering": "updated_at", "page_size": 1}).json()
    assert [item["id"] for item in page["results"]] == [str(first.pk)]
    assert page["previous"] is None
    following = client.get(page["next"]).json()
    assert [item["id"] for item in following["results"]] == [str(second.pk)]
    assert following["next"] is None
    assert ids({"ordering": "-updated_at", "page_size": 1}) == [str(second.pk)]


def test_the_offer_representation_matches_drfs_generic_walk_of_the_declared_fields(world, request_north, tomorrow):
    """FlexOfferOutputSerializer builds its dict by hand (the hot path); it must equal what DRF would render."""
    from rest_framework import serializers as drf

    from market.apis.offers import FlexOfferOutputSerializer
    from tests.builders import option

    world.cp_north.mutex_offers_supported = True
    world.cp_north.save()
    make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=tomorrow)
    isps = evening_isps(tomorrow)
    two_options = services.flex_offer_submit(
        aggregator=world.voltflex, congestion_point=world.cp_north, period=tomorrow, flex_request=request_north,
        expires_at=request_north.expires_at,
        options=[option(power_w=-15_000, price="12.5", isps=isps, reference="A", min_activation_factor="0.3"),
                 option(power_w=-20_000, price="18.00", isps=isps[:2], reference="B")])
    unsolicited = services.flex_offer_submit(
        aggregator=world.voltflex, congestion_point=world.cp_north, period=tomorrow,
        expires_at=request_north.expires_at, options=[option(power_w=-5_000, price="3", isps=isps[:1])])
    for offer in (two_options, unsolicited, FlexOffer.objects.get(pk=two_options.pk)):
        serializer = FlexOfferOutputSerializer(offer)
        generic = drf.Serializer.to_representation(serializer, offer)
        assert serializer.data == generic
    assert FlexOfferOutputSerializer(unsolicited).data["flex_request"] is None
    assert FlexOfferOutputSerializer(two_options).data["options"][0]["price_eur"] == "12.50"


def test_token_authentication_loads_user_and_participant_in_one_query(world, request_north):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.authtoken.models import Token

    from market.authentication import ParticipantTokenAuthentication

    user = world.voltflex.users.first()
    token, _ = Token.objects.get_or_create(user=user)
    with CaptureQueriesContext(connection) as queries:
        authenticated, found = ParticipantTokenAuthentication().authenticate_credentials(token.key)
        assert authenticated.participant.domain == world.voltflex.domain
        assert found.user is authenticated
    assert len(queries) == 1
    user.is_active = False
    user.save()
    with pytest.raises(Exception, match="inactive"):
        ParticipantTokenAuthentication().authenticate_credentials(token.key)
    with pytest.raises(Exception, match="Invalid token"):
        ParticipantTokenAuthentication().authenticate_credentials("nope")
