"""Settlement statements over the API and on the DSO portal: what is serialised, and who may see it."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from django.test import Client
from django.urls import reverse

from common import isp as isp_time
from settlement.models import Statement
from tests.conftest import World, api_client_for
from tests.settlement.test_settle import issue_reference_statement, order_isps

pytestmark = pytest.mark.django_db

LIST_URL = "/api/v1/settlement/statements/"


@pytest.fixture
def statement(world: World, tomorrow: date) -> Statement:
    return issue_reference_statement(world, tomorrow)


def detail_url(statement: Statement) -> str:
    return f"/api/v1/settlement/statements/{statement.pk}/"


def test_the_aggregator_lists_its_statement_versions(world: World, tomorrow: date, statement: Statement) -> None:
    response = api_client_for(world.voltflex_user).get(LIST_URL)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [item["id"] for item in results] == [str(statement.pk)]
    body = results[0]
    assert set(body) == {
        "id", "dso", "aggregator", "period_start", "period_end", "version", "previous_version", "reason", "status",
        "currency", "payment_eur", "penalty_eur", "total_eur", "issued_at", "message_id", "ledger", "created_at",
    }
    assert (body["dso"], body["aggregator"]) == ("gridco.example.com", "voltflex.example.com")
    assert (body["period_start"], body["period_end"]) == (tomorrow.isoformat(), tomorrow.isoformat())
    assert (body["version"], body["status"], body["currency"], body["total_eur"]) == (1, "issued", "EUR", "15.00")
    assert (body["payment_eur"], body["penalty_eur"], body["previous_version"]) == ("15.00", "0.00", None)
    assert body["ledger"]["sequence"] == 1 and len(body["ledger"]["entry_hash"]) == 64
    assert body["ledger"]["entry_hash"] == statement.ledger_entry.entry_hash


def test_the_statement_detail_has_order_settlements_and_lines(
    world: World, tomorrow: date, statement: Statement
) -> None:
    response = api_client_for(world.voltflex_user).get(detail_url(statement))

    assert response.status_code == 200
    [settlement] = response.json()["order_settlements"]
    order = statement.order_settlements.get().flex_order
    assert set(settlement) == {
        "order_reference", "flex_order", "congestion_point", "period", "baseline_method", "baseline", "d_prognosis",
        "ordered_kwh", "delivered_kwh", "deficiency_kwh", "unit_price_eur_per_kwh", "penalty_eur_per_kwh",
        "payment_eur", "penalty_eur", "total_eur", "sha256", "lines",
    }
    assert settlement["order_reference"] == order.order_reference
    assert settlement["flex_order"] == str(order.pk)
    assert settlement["congestion_point"] == world.cp_north.ean
    assert settlement["d_prognosis"] == str(order.d_prognosis_id)
    assert settlement["baseline"]["method"] == "settlement.baselines.d_prognosis.UsefDPrognosis"
    assert settlement["baseline"]["inputs"] == {"d_prognosis": str(order.d_prognosis_id), "revision": 1}
    assert (settlement["ordered_kwh"], settlement["delivered_kwh"], settlement["deficiency_kwh"]) == (
        "12.000", "7.500", "5.750")
    assert (settlement["unit_price_eur_per_kwh"], settlement["total_eur"]) == ("2.000000", "15.00")

    lines = settlement["lines"]
    first_isp = order_isps(tomorrow)[0]
    assert [line["isp"] for line in lines] == order_isps(tomorrow)
    assert [line["paid_eur"] for line in lines] == ["6.00", "3.00", "6.00", "0.00"]
    line = lines[1]
    assert datetime.fromisoformat(line.pop("isp_start")) == isp_time.isp_start(tomorrow, first_isp + 1)
    assert line == {
        "isp": first_isp + 1, "baseline_w": 60_000, "measured_w": 54_000, "ordered_w": -12_000, "realised_w": 6_000,
        "delivered_w": 6_000, "deficiency_w": 6_000, "payment_eur": "3.00", "penalty_eur": "0.00", "paid_eur": "3.00",
    }


def test_the_paying_dso_reads_the_same_statement(world: World, statement: Statement) -> None:
    as_dso = api_client_for(world.gridco_user).get(LIST_URL)
    as_aggregator = api_client_for(world.voltflex_user).get(LIST_URL)

    assert as_dso.status_code == 200
    assert as_dso.json()["results"] == as_aggregator.json()["results"]
    detail = api_client_for(world.gridco_user).get(detail_url(statement))
    assert detail.status_code == 200
    assert detail.json() == api_client_for(world.voltflex_user).get(detail_url(statement)).json()


@pytest.mark.parametrize("outsider", ["chargeco_user", "otherdso_user"])
def test_another_aggregator_or_dso_lists_nothing(world: World, statement: Statement, outsider: str) -> None:
    response = api_client_for(getattr(world, outsider)).get(LIST_URL)

    assert response.status_code == 200
    assert response.json()["results"] == []


@pytest.mark.parametrize("outsider", ["chargeco_user", "otherdso_user"])
def test_another_participants_statement_is_not_found_and_not_leaked(
    world: World, statement: Statement, outsider: str
) -> None:
    response = api_client_for(getattr(world, outsider)).get(detail_url(statement))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    content = response.content.decode()
    order_reference = statement.order_settlements.get().flex_order.order_reference
    for secret in (str(statement.pk), order_reference, "15.00", "voltflex", "gridco"):
        assert secret not in content


def test_anonymous_callers_are_told_to_authenticate(statement: Statement) -> None:
    for url in (LIST_URL, detail_url(statement)):
        response = Client().get(url)

        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"
        assert str(statement.pk) not in response.content.decode()


# --- DSO portal -------------------------------------------------------------------------------------------


def test_the_portal_lists_the_statement_with_its_total(client: Client, world: World, statement: Statement) -> None:
    client.force_login(world.gridco_user)

    response = client.get(reverse("portal:statement-list"))

    assert response.status_code == 200
    content = response.content.decode()
    assert "€&nbsp;15.00" in content
    assert "Voltflex" in content
    assert reverse("portal:statement-detail", args=[statement.pk]) in content


def test_the_portal_statement_page_shows_the_total_and_the_order(
    client: Client, world: World, statement: Statement
) -> None:
    client.force_login(world.gridco_user)

    response = client.get(reverse("portal:statement-detail", args=[statement.pk]))

    assert response.status_code == 200
    content = response.content.decode()
    order = statement.order_settlements.get().flex_order
    assert order.order_reference in content
    assert "Statement total <strong>€&nbsp;15.00</strong>" in content
    assert "€&nbsp;6.00" in content and "€&nbsp;3.00" in content
    assert "18:00" in content  # the first ordered ISP, in market time


def test_another_dso_gets_404_on_the_portal_statement_page(client: Client, world: World, statement: Statement) -> None:
    client.force_login(world.otherdso_user)

    response = client.get(reverse("portal:statement-detail", args=[statement.pk]))

    assert response.status_code == 404
    order_reference = statement.order_settlements.get().flex_order.order_reference
    assert order_reference not in response.content.decode()
    assert "15.00" not in client.get(reverse("portal:statement-list")).content.decode()
