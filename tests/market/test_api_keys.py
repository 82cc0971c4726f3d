"""API keys over the API: issued once, stored only as a hash, scoped within the role, revocable, and audited."""

from __future__ import annotations

import hashlib
from datetime import date
from unittest.mock import patch

import pytest
from rest_framework.test import APIClient

from common.audit import audit_trail
from common.models import AuditEvent
from market.apikeys import SCOPES_BY_ROLE
from market.models import ApiKey, FlexOffer, Participant
from tests.builders import evening_isps, make_prognosis, make_request
from tests.conftest import World, api_client_for

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/market/api-keys/"


def key_client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return client


def issue(client: APIClient, name: str = "bidder", scopes: list[str] | None = None) -> dict:
    body: dict = {"name": name}
    if scopes is not None:
        body["scopes"] = scopes
    response = client.post(f"{KEYS}create/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def offer_payload(world: World, day: date) -> dict:
    request = make_request(dso=world.gridco, point=world.cp_north, day=day)
    make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=day)
    return {"flex_request": str(request.pk), "expires_at": request.expires_at.isoformat(),
            "options": [{"price_eur": "8.40",
                         "isps": [{"isp": i, "power_w": -10_000} for i in evening_isps(day)]}]}


@pytest.fixture
def voltflex(world: World) -> APIClient:
    return api_client_for(world.voltflex_user)


def test_a_key_whose_secret_contains_an_underscore_authenticates(world, voltflex):
    with patch("market.apikeys.secrets.token_urlsafe", return_value="secret_with_an_underscore_" + "x" * 20):
        raw = issue(voltflex, name="unlucky")["key"]
    assert key_client(raw).get("/api/v1/market/flex-offers/").status_code == 200


def test_a_key_is_shown_once_and_only_its_sha256_is_stored(world, voltflex):
    body = issue(voltflex, scopes=["market:read", "offers:write"])
    raw = body["key"]
    assert raw.startswith(f"fmk_{body['prefix']}_") and len(raw) > 40
    assert body["scopes"] == ["market:read", "offers:write"]

    row = ApiKey.objects.get(pk=body["id"])
    assert row.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    stored = {field.name: str(getattr(row, field.attname)) for field in ApiKey._meta.concrete_fields}
    assert not [name for name, value in stored.items() if raw in value or raw.split("_")[2] in value], stored
    assert row.participant == world.voltflex and row.created_by == world.voltflex_user

    listed = voltflex.get(KEYS)
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["results"]] == [body["id"]]
    assert raw not in listed.content.decode() and "key" not in listed.json()["results"][0]


def test_a_key_authenticates_with_the_api_key_header(world, voltflex):
    raw = issue(voltflex)["key"]
    client = key_client(raw)
    response = client.get("/api/v1/market/flex-offers/")
    assert response.status_code == 200
    assert ApiKey.objects.get(prefix=raw.split("_")[1]).last_used_at is not None
    assert key_client(raw + "x").get("/api/v1/market/flex-offers/").status_code == 401
    assert key_client("fmk_000000000000_nope").get("/api/v1/market/flex-offers/").status_code == 401


def test_a_read_only_key_lists_but_cannot_submit_offers(world, voltflex, tomorrow):
    client = key_client(issue(voltflex, scopes=["market:read"])["key"])
    assert client.get("/api/v1/market/flex-requests/").status_code == 200
    assert client.get("/api/v1/market/flex-offers/").status_code == 200

    response = client.post("/api/v1/market/flex-offers/create/", offer_payload(world, tomorrow), format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not FlexOffer.objects.exists()


def test_a_key_with_offers_write_submits_offers_but_reads_no_settlement(world, voltflex, tomorrow):
    client = key_client(issue(voltflex, scopes=["offers:write"])["key"])
    assert client.post("/api/v1/market/flex-offers/create/", offer_payload(world, tomorrow),
                       format="json").status_code == 201
    assert client.get("/api/v1/settlement/statements/").status_code == 403
    assert client.get("/api/v1/market/flex-offers/").status_code == 403  # market:read was not granted


def test_a_revoked_key_gets_401(world, voltflex):
    body = issue(voltflex)
    client = key_client(body["key"])
    assert client.get("/api/v1/market/flex-offers/").status_code == 200

    revoked = voltflex.post(f"{KEYS}{body['id']}/revoke/")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    response = client.get("/api/v1/market/flex-offers/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"

    again = voltflex.post(f"{KEYS}{body['id']}/revoke/")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "already_revoked")


def test_a_key_cannot_manage_keys(world, voltflex):
    body = issue(voltflex)
    client = key_client(body["key"])
    for response in (client.get(KEYS), client.post(f"{KEYS}create/", {"name": "other"}, format="json"),
                     client.post(f"{KEYS}{body['id']}/revoke/")):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "permission_denied"
    assert ApiKey.objects.count() == 1
    assert ApiKey.objects.get().revoked_at is None


def test_another_participants_keys_are_invisible(world, voltflex):
    body = issue(voltflex)
    chargeco = api_client_for(world.chargeco_user)
    assert chargeco.get(KEYS).json()["results"] == []
    response = chargeco.post(f"{KEYS}{body['id']}/revoke/")
    assert response.status_code == 404
    assert body["id"] not in response.content.decode()
    assert ApiKey.objects.get(pk=body["id"]).revoked_at is None
    # another user of the same organisation does see (and manage) it
    from tests.factories import UserFactory

    colleague = api_client_for(UserFactory(participant=world.voltflex))
    assert [item["id"] for item in colleague.get(KEYS).json()["results"]] == [body["id"]]


@pytest.mark.parametrize(("who", "scopes"), [
    ("voltflex", ["orders:write"]),
    ("voltflex", ["market:read", "requests:write"]),
    ("gridco", ["offers:write"]),
    ("gridco", ["admin:all"]),
    ("voltflex", []),
])
def test_scopes_outside_the_role_are_refused(world, who, scopes):
    client = api_client_for(getattr(world, f"{who}_user"))
    response = client.post(f"{KEYS}create/", {"name": "k", "scopes": scopes}, format="json")
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["field"]) == ("invalid_scope", "scopes")
    assert not ApiKey.objects.exists()


def test_a_key_without_scopes_gets_all_of_its_roles(world):
    body = issue(api_client_for(world.gridco_user))
    assert set(body["scopes"]) == SCOPES_BY_ROLE[Participant.Role.DSO]


def test_a_live_key_name_is_unique_per_participant(world, voltflex):
    issue(voltflex, name="bidder")
    response = voltflex.post(f"{KEYS}create/", {"name": "bidder"}, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "duplicate_name")
    issue(api_client_for(world.chargeco_user), name="bidder")  # another organisation may use the name


def test_an_action_done_with_a_key_is_audited_under_the_keys_name(world, voltflex, tomorrow):
    client = key_client(issue(voltflex, name="night-bidder")["key"])
    response = client.post("/api/v1/market/flex-offers/create/", offer_payload(world, tomorrow), format="json")
    assert response.status_code == 201, response.content
    offer = FlexOffer.objects.get(pk=response.json()["id"])
    assert offer.created_by is None

    [event] = audit_trail(offer)
    assert event.actor is None
    assert event.actor_label.startswith("api-key:")
    assert "night-bidder" in event.actor_label

    revoked = client.post(f"/api/v1/market/flex-offers/{offer.pk}/revoke/")
    assert revoked.status_code == 200
    events = voltflex.get(f"/api/v1/market/flex-offers/{offer.pk}/events/").json()
    assert [(item["action"], item["who"].startswith("api-key:")) for item in events] == [
        ("flex_offer.submitted", True), ("flex_offer.revoked", True)]


def test_issuing_and_revoking_keys_is_audited_under_the_person(world, voltflex):
    body = issue(voltflex)
    voltflex.post(f"{KEYS}{body['id']}/revoke/")
    actions = list(AuditEvent.objects.filter(object_id=body["id"]).order_by("id").values_list("action", "actor"))
    assert actions == [("api_key.created", world.voltflex_user.pk), ("api_key.revoked", world.voltflex_user.pk)]
    assert body["key"] not in str(list(AuditEvent.objects.values_list("before", "after")))
