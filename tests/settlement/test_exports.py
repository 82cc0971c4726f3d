"""Statement exports: the UFTP FlexSettlement XML is valid against the official 3.1.0 XSDs and says what the
statement says; the CSV has one row per order and ISP; the printable page and the portal downloads."""

from __future__ import annotations

import csv
import io
from datetime import date, time
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from market.models import FlexOrder
from market.services import flex_contract_create
from settlement.models import Statement
from settlement.services import statement_issue
from settlement.services.exports import CSV_COLUMNS, flex_settlement_xml
from tests.conftest import World, api_client_for
from tests.settlement.test_settle import issue_reference_statement, meter_flat, order_isps, place_order

pytestmark = pytest.mark.django_db

XSD_DIR = Path("/work/shared/specs/uftp/xsd/v3.1.0")


@pytest.fixture(scope="module")
def dso_schema():
    if not (XSD_DIR / "UFTP-dso.xsd").exists():
        pytest.skip(f"the UFTP 3.1.0 XSDs are not at {XSD_DIR}")
    xmlschema = pytest.importorskip("xmlschema", reason="xmlschema is a dev dependency")
    return xmlschema.XMLSchema(str(XSD_DIR / "UFTP-dso.xsd"))


@pytest.fixture
def statement(world: World, tomorrow: date) -> Statement:
    return issue_reference_statement(world, tomorrow)


def test_the_flex_settlement_is_schema_valid_and_matches_the_statement(
    world: World, tomorrow: date, statement: Statement, dso_schema
) -> None:
    response = api_client_for(world.voltflex_user).get(f"/api/v1/settlement/statements/{statement.pk}/flex-settlement/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/xml")
    assert f"-v{statement.version}.xml" in response["Content-Disposition"]
    dso_schema.validate(response.content.decode())  # raises on any schema violation
    message = dso_schema.to_dict(response.content.decode())
    assert (message["@Version"], message["@Result"], message["@Currency"]) == ("3.1.0", "Accepted", "EUR")
    assert (message["@SenderDomain"], message["@RecipientDomain"]) == ("gridco.example.com", "voltflex.example.com")
    assert message["@MessageID"] == str(statement.message_id)
    assert message["@TimeStamp"].endswith(("+01:00", "+02:00"))
    [order_settlement] = message["FlexOrderSettlement"]
    order = FlexOrder.objects.get()
    assert order_settlement["@OrderReference"] == order.order_reference
    assert order_settlement["@CongestionPoint"] == f"ean.{world.cp_north.ean}"
    assert order_settlement["@D-PrognosisMessageID"] == str(order.d_prognosis.message_id)
    # Price 24.00; the statement pays 15.00: Penalty carries the undelivered value (USEF "pay only delivered").
    assert (order_settlement["@Price"], order_settlement["@Penalty"], order_settlement["@NetSettlement"]) == (
        Decimal("24.0000"), Decimal("9.0000"), Decimal("15.0000"))
    a, b, c, d = order_isps(tomorrow)
    assert [(isp["@Start"], isp.get("@Duration", 1), isp["@BaselinePower"], isp["@OrderedFlexPower"],
             isp["@ActualPower"], isp["@DeliveredFlexPower"], isp["@PowerDeficiency"])
            for isp in order_settlement["ISP"]] == [
        (a, 1, 60_000, -12_000, 48_000, -12_000, 0),
        (b, 1, 60_000, -12_000, 54_000, -6_000, 6_000),
        (c, 1, 60_000, -12_000, 40_000, -12_000, 0),
        (d, 1, 60_000, -12_000, 65_000, 0, 17_000),
    ]
    # No contract: the XSD still needs one ContractSettlement, which states that nothing was reserved.
    [contract] = message["ContractSettlement"]
    assert "@ContractID" not in contract
    assert contract["Period"][0]["ISP"][0]["@ReservedPower"] == 0


def test_equal_isps_collapse_into_runs_and_contract_orders_get_a_contract_settlement(
    world: World, tomorrow: date, dso_schema
) -> None:
    isps = order_isps(tomorrow)
    order = place_order(world, tomorrow, isps=isps)
    contract = flex_contract_create(dso=world.gridco, aggregator=world.voltflex, congestion_point=world.cp_north,
                                    contract_id="GV-2026-01", valid_from=tomorrow, reserved_power_w=-20_000,
                                    window_start=time(17, 0), window_end=time(21, 0))
    FlexOrder.objects.filter(pk=order.pk).update(contract=contract)
    meter_flat(world.voltflex_connections, tomorrow, isps, "4.000")
    statement = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow,
                                period_end=tomorrow).statement

    xml = flex_settlement_xml(statement).decode()

    dso_schema.validate(xml)
    message = dso_schema.to_dict(xml)
    [order_settlement] = message["FlexOrderSettlement"]
    assert order_settlement["@ContractID"] == "GV-2026-01"
    assert [(isp["@Start"], isp["@Duration"], isp["@DeliveredFlexPower"]) for isp in order_settlement["ISP"]] == [
        (isps[0], 4, -12_000)]
    [contract_settlement] = message["ContractSettlement"]
    assert contract_settlement["@ContractID"] == "GV-2026-01"
    [period] = contract_settlement["Period"]
    assert period["@Period"] == tomorrow.isoformat()
    assert [(isp["@Start"], isp["@Duration"], isp["@ReservedPower"], isp["@OrderedPower"]) for isp in period["ISP"]] \
        == [(isps[0], 4, -20_000, -12_000)]


def test_the_csv_has_a_row_per_order_and_isp(world: World, tomorrow: date, statement: Statement) -> None:
    response = api_client_for(world.gridco_user).get(f"/api/v1/settlement/statements/{statement.pk}/csv/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert list(rows[0]) == CSV_COLUMNS
    assert [row["isp"] for row in rows] == [str(isp) for isp in order_isps(tomorrow)]
    assert [(row["measured_w"], row["delivered_w"], row["deficiency_w"], row["paid_eur"]) for row in rows] == [
        ("48000", "12000", "0", "6.00"), ("54000", "6000", "6000", "3.00"), ("40000", "12000", "0", "6.00"),
        ("65000", "0", "17000", "0.00")]
    assert {row["statement"] for row in rows} == {str(statement.pk)}
    assert sum(Decimal(row["paid_eur"]) for row in rows) == statement.total_eur
    assert rows[0]["isp_start"].startswith(tomorrow.isoformat()) and rows[0]["isp_start"][-6:] in ("+01:00", "+02:00")


def test_the_printable_page_for_the_aggregator_and_the_portal(
    world: World, tomorrow: date, statement: Statement, client: Client
) -> None:
    page = api_client_for(world.voltflex_user).get(f"/api/v1/settlement/statements/{statement.pk}/print/")

    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    assert "<strong>EUR 15.00</strong>" in html
    assert statement.ledger_entry.entry_hash in html
    assert "@page" in html and "<script" not in html and "http" not in html.split("<body>")[1]

    client.force_login(world.gridco_user)
    assert client.get(reverse("portal:statement-print", args=[statement.pk])).content.decode().count("Order total") == 1
    xml = client.get(reverse("portal:statement-export-xml", args=[statement.pk]))
    assert xml.status_code == 200 and xml.content == flex_settlement_xml(statement)
    csv_download = client.get(reverse("portal:statement-export-csv", args=[statement.pk]))
    assert csv_download.status_code == 200 and csv_download.content.decode().count("\n") == 5
    client.force_login(world.otherdso_user)
    for name in ("portal:statement-print", "portal:statement-export-xml", "portal:statement-export-csv"):
        assert client.get(reverse(name, args=[statement.pk])).status_code == 404
