"""API throttling: one request budget per participant (organisation), 429 + Retry-After when it is spent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from common.throttling import ParticipantRateThrottle
from market.apikeys import api_key_create
from tests.conftest import World, api_client_for
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/market/flex-offers/"


@pytest.fixture
def default_rate(settings: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The platform default lowered to 3 requests a minute, with fresh counters."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"participant": "3/min"}}
    api_settings.reload()
    # DRF copies the rates onto the throttle class when it is imported; point it at the reloaded settings.
    monkeypatch.setattr(ParticipantRateThrottle, "THROTTLE_RATES", api_settings.DEFAULT_THROTTLE_RATES)
    cache.clear()
    yield "3/min"
    cache.clear()


def spend(client: APIClient, times: int) -> list[int]:
    return [client.get(URL).status_code for _ in range(times)]


def assert_throttled(response) -> None:
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    retry_after = int(response.headers["Retry-After"])
    assert 0 < retry_after <= 60


def test_the_request_after_the_budget_is_refused_with_retry_after(world, default_rate):
    client = api_client_for(world.voltflex_user)
    assert spend(client, 3) == [200, 200, 200]
    assert_throttled(client.get(URL))
    assert_throttled(client.post("/api/v1/market/d-prognoses/create/", {}, format="json"))  # writes count too


def test_a_participants_own_rate_overrides_the_default(world, default_rate):
    world.voltflex.api_rate_limit = "5/min"
    world.voltflex.save()
    world.chargeco.api_rate_limit = "1/min"
    world.chargeco.save()
    voltflex, chargeco = api_client_for(world.voltflex_user), api_client_for(world.chargeco_user)

    assert spend(voltflex, 5) == [200] * 5
    assert_throttled(voltflex.get(URL))
    assert spend(chargeco, 1) == [200]
    assert_throttled(chargeco.get(URL))


def test_two_participants_have_separate_budgets(world, default_rate):
    voltflex, chargeco = api_client_for(world.voltflex_user), api_client_for(world.chargeco_user)
    assert spend(voltflex, 3) == [200, 200, 200]
    assert_throttled(voltflex.get(URL))
    assert spend(chargeco, 3) == [200, 200, 200]
    assert_throttled(chargeco.get(URL))
    assert api_client_for(world.gridco_user).get(URL).status_code == 200


def test_the_budget_is_the_organisations_whatever_the_credential(world, default_rate):
    """Two people and an API key of one participant draw on one budget: no way round it with more logins."""
    _, raw = api_key_create(participant=world.voltflex, name="bot")
    by_key = APIClient()
    by_key.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    colleague = api_client_for(UserFactory(participant=world.voltflex))

    assert [api_client_for(world.voltflex_user).get(URL).status_code, colleague.get(URL).status_code,
            by_key.get(URL).status_code] == [200, 200, 200]
    assert_throttled(by_key.get(URL))
    assert_throttled(colleague.get(URL))


def test_the_default_budget_is_the_configured_rate(world, settings):
    """Without overrides the platform default (API_THROTTLE_RATE) applies and is generous."""
    assert ParticipantRateThrottle().get_rate() == settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["participant"]
    cache.clear()
    assert spend(api_client_for(world.voltflex_user), 10) == [200] * 10
    cache.clear()


def test_an_anonymous_caller_is_refused_before_it_counts(world: World, default_rate):
    anonymous = APIClient()
    assert [anonymous.get(URL).status_code for _ in range(5)] == [401] * 5
    assert spend(api_client_for(world.voltflex_user), 3) == [200, 200, 200]
