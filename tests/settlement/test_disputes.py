"""Disputes: the aggregator disputes a statement line, the DSO accepts (corrected amount) or rejects (reason);
either issues a new statement version, in one transaction, with audit events and a ledger entry."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from common.audit import audit_trail
from settlement.models import Dispute, LedgerEntry, SettlementLine, Statement
from settlement.services import meter_readings_import, statement_issue
from settlement.services.ledger import ledger_verify
from tests.conftest import World, api_client_for
from tests.settlement.test_settle import issue_reference_statement, meter_row, order_isps

pytestmark = pytest.mark.django_db

CREATE_URL = "/api/v1/settlement/disputes/create/"


@pytest.fixture
def statement(world: World, tomorrow: date) -> Statement:
    return issue_reference_statement(world, tomorrow)


def open_dispute(world: World, statement: Statement, isp: int, **extra) -> dict:
    body = {"statement": str(statement.pk), "order_reference": statement.order_settlements.get().flex_order
            .order_reference, "isp": isp, "reason": "Meter 1 misread 5.25 kWh; corrected data is on its way.", **extra}
    response = api_client_for(world.voltflex_user).post(CREATE_URL, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def resolve(world: World, dispute_id: str, **body):
    return api_client_for(world.gridco_user).post(f"/api/v1/settlement/disputes/{dispute_id}/resolve/", body,
                                                  format="json")


def test_an_accepted_dispute_issues_a_version_with_the_corrected_line(
    world: World, tomorrow: date, statement: Statement
) -> None:
    last = order_isps(tomorrow)[3]
    dispute = open_dispute(world, statement, last, claimed_amount_eur="5.50")
    assert (dispute["status"], dispute["line_paid_eur"], dispute["claimed_amount_eur"]) == ("open", "0.00", "5.50")
    listed = api_client_for(world.gridco_user).get("/api/v1/settlement/disputes/", {"status": "open"}).json()
    assert [item["id"] for item in listed["results"]] == [dispute["id"]]

    response = resolve(world, dispute["id"], decision="accept", corrected_amount_eur="5.00", reason="Agreed in part.")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["corrected_amount_eur"], body["resolution_reason"]) == ("accepted", "5.00",
                                                                                        "Agreed in part.")
    new = Statement.objects.get(pk=body["resolution_statement"])
    statement.refresh_from_db()
    assert (statement.status, new.version, new.status, new.previous_version) == ("superseded", 2, "issued", statement)
    assert new.total_eur == Decimal("20.00") == statement.total_eur + Decimal("5.00")
    lines = {line.isp: line for line in SettlementLine.objects.filter(order_settlement__statement=new)}
    assert (lines[last].paid_eur, lines[last].payment_eur, lines[last].penalty_eur) == (
        Decimal("5.00"), Decimal("5.00"), Decimal("0.00"))
    assert [lines[isp].paid_eur for isp in order_isps(tomorrow)[:3]] == [Decimal("6.00"), Decimal("3.00"),
                                                                         Decimal("6.00")]
    assert new.order_settlements.get().total_eur == Decimal("20.00")
    # The old version is untouched: issued documents never change.
    assert SettlementLine.objects.get(order_settlement__statement=statement, isp=last).paid_eur == Decimal("0.00")
    entry = LedgerEntry.objects.get(statement=new)
    resolved = json.loads(entry.document)["resolved_disputes"]
    assert resolved == [{"dispute": dispute["id"], "order_reference": body["order_reference"], "isp": last,
                         "outcome": "accepted", "corrected_amount_eur": "5.00", "resolution_reason": "Agreed in part."}]
    assert ledger_verify() == (2, None)
    assert [event.action for event in audit_trail(Dispute.objects.get())][::-1] == ["dispute.opened",
                                                                                   "dispute.accepted"]


def test_a_rejected_dispute_issues_a_version_that_records_why(
    world: World, tomorrow: date, statement: Statement
) -> None:
    dispute = open_dispute(world, statement, order_isps(tomorrow)[1])

    refused = resolve(world, dispute["id"], decision="reject")
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "reason_required")
    response = resolve(world, dispute["id"], decision="reject", reason="Our meter data is validated.")

    assert response.status_code == 200
    new = Statement.objects.get(pk=response.json()["resolution_statement"])
    assert (new.version, new.total_eur) == (2, statement.total_eur)
    assert "rejected" in new.reason
    assert json.loads(new.ledger_entry.document)["resolved_disputes"][0]["outcome"] == "rejected"
    again = resolve(world, dispute["id"], decision="accept", corrected_amount_eur="1.00")
    assert (again.status_code, again.json()["error"]["code"]) == (400, "invalid_state")
    assert Statement.objects.count() == 2


def test_refusals(world: World, tomorrow: date, statement: Statement) -> None:
    isps = order_isps(tomorrow)
    voltflex, gridco = api_client_for(world.voltflex_user), api_client_for(world.gridco_user)
    reference = statement.order_settlements.get().flex_order.order_reference

    def create(**body):
        return voltflex.post(CREATE_URL, {"statement": str(statement.pk), "order_reference": reference,
                                          "isp": isps[0], "reason": "wrong", **body}, format="json")

    assert create(isp=1).json()["error"]["code"] == "unknown_line"
    assert (create(reason="  ").json()["error"]["code"], create(reason="").json()["error"]["field"]) == ("blank", "reason")
    first = open_dispute(world, statement, isps[0])
    assert create().json()["error"]["code"] == "dispute_open"
    assert gridco.post(CREATE_URL, {"statement": str(statement.pk), "order_reference": reference, "isp": isps[1],
                                    "reason": "x"}, format="json").status_code == 403
    assert voltflex.post(f"/api/v1/settlement/disputes/{first['id']}/resolve/", {"decision": "reject", "reason": "x"},
                         format="json").status_code == 403
    missing = resolve(world, first["id"], decision="accept")
    assert missing.json()["error"]["code"] == "corrected_amount_required"
    # A newer version supersedes the statement: its lines can no longer be disputed (dispute the current one).
    meter_readings_import(rows=[meter_row(world.voltflex_connections[0], tomorrow, isps[3], "1.250")])
    statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow)
    assert create(isp=isps[2]).json()["error"]["code"] == "statement_superseded"
    # The open dispute is resolved against the current version.
    accepted = resolve(world, first["id"], decision="accept", corrected_amount_eur="7.00")
    assert accepted.status_code == 200
    newest = Statement.objects.get(pk=accepted.json()["resolution_statement"])
    assert newest.version == 3
    assert newest.total_eur == Decimal("20.50") + Decimal("1.00")  # v2 (20.50) with 6.00 -> 7.00 on the first ISP
    assert ledger_verify() == (3, None)


def test_the_dso_resolves_in_the_portal(client: Client, world: World, tomorrow: date, statement: Statement) -> None:
    dispute = open_dispute(world, statement, order_isps(tomorrow)[3], claimed_amount_eur="5.50")
    client.force_login(world.gridco_user)
    page = client.get(reverse("portal:statement-detail", args=[statement.pk])).content.decode()
    assert "Meter 1 misread" in page and reverse("portal:dispute-resolve", args=[dispute["id"]]) in page

    response = client.post(reverse("portal:dispute-resolve", args=[dispute["id"]]),
                           {"decision": "accept", "corrected_amount_eur": "5.50", "reason": ""})

    new = Statement.objects.get(version=2)
    assert response.status_code == 302 and response["Location"] == reverse("portal:statement-detail", args=[new.pk])
    assert new.total_eur == Decimal("20.50")
    page = client.get(response["Location"]).content.decode()
    assert "Dispute accepted" in page and "Accepted (corrected)" in page
    client.force_login(world.otherdso_user)
    assert client.post(reverse("portal:dispute-resolve", args=[dispute["id"]]),
                       {"decision": "reject", "reason": "x"}).status_code == 404


def test_a_negative_corrected_amount_is_booked_as_a_penalty(world: World, tomorrow: date, statement: Statement) -> None:
    second_isp = order_isps(tomorrow)[1]
    dispute = open_dispute(world, statement, second_isp)

    response = resolve(world, dispute["id"], decision="accept", corrected_amount_eur="-1.50",
                       reason="Deficiency penalty agreed after all.")

    new = Statement.objects.get(pk=response.json()["resolution_statement"])
    line = SettlementLine.objects.get(order_settlement__statement=new, isp=second_isp)
    assert (line.payment_eur, line.penalty_eur, line.paid_eur) == (Decimal("0.00"), Decimal("1.50"), Decimal("-1.50"))
    assert (new.payment_eur, new.penalty_eur, new.total_eur) == (Decimal("12.00"), Decimal("1.50"), Decimal("10.50"))
    assert ledger_verify() == (2, None)
