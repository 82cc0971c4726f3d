"""POST /api/v1/settlement/meter-readings/ and the import reports: the DSO delivers for its own connections,
every rejection reason comes back per row, re-sending changes nothing, corrections become versions."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from common import isp as isp_time
from market.apikeys import api_key_create
from settlement.models import ConnectionCapacity, MeterImportBatch, MeterReading, MeterReadingVersion
from tests.conftest import World, api_client_for
from tests.factories import next_ean

pytestmark = pytest.mark.django_db

URL = "/api/v1/settlement/meter-readings/"
IMPORTS = "/api/v1/settlement/meter-imports/"


def local(day: date, isp: int) -> str:
    return isp_time.isp_start(day, isp).astimezone(isp_time.MARKET_TZ).isoformat()


def reading(ean: str, start: str, kwh_import: Any = "0.250", kwh_export: Any = "0.000", quality: Any = "0"
            ) -> dict[str, Any]:
    return {"connection_ean": ean, "isp_start": start, "kwh_import": kwh_import, "kwh_export": kwh_export,
            "quality": quality}


def post(world: World, readings: list[dict[str, Any]], user: Any = None, **extra: Any) -> Any:
    client = api_client_for(user or world.gridco_user)
    return client.post(URL, {"readings": readings, **extra}, format="json")


def test_the_dso_delivers_readings_and_gets_the_report(world: World, tomorrow: date) -> None:
    ean = world.voltflex_connections[0].ean
    response = post(world, [reading(ean, local(tomorrow, 1)), reading(ean, local(tomorrow, 2), 1.5, 0, 1)],
                    source_name="mdm-run-1")

    assert response.status_code == 201, response.content
    body = response.json()
    assert {key: body[key] for key in ("source_format", "source_name", "received", "accepted", "corrected",
                                       "unchanged", "rejected", "gaps", "rejections")} == {
        "source_format": "json", "source_name": "mdm-run-1", "received": 2, "accepted": 2, "corrected": 0,
        "unchanged": 0, "rejected": 0, "gaps": 0, "rejections": []}
    assert list(MeterReading.objects.filter(connection_id=ean).order_by("isp_start").values_list(
        "kwh_import", "quality")) == [(Decimal("0.250"), 0), (Decimal("1.500"), 1)]
    assert MeterImportBatch.objects.get(pk=body["id"]).submitted_by == world.gridco


def test_every_rejection_reason_comes_back_per_row(world: World, tomorrow: date) -> None:
    ean, other, small = (c.ean for c in world.voltflex_connections)
    ConnectionCapacity.objects.create(connection_id=small, max_power_kw=Decimal("4.0"))
    foreign = world.cp_far.connections.get().ean  # Otherdso's connection: not Gridco's to deliver
    naive = local(tomorrow, 5)[:19]
    off_quarter = (isp_time.isp_start(tomorrow, 6) + timedelta(minutes=7)).isoformat()
    readings = [
        reading(ean, local(tomorrow, 1)),
        reading(foreign, local(tomorrow, 1)),
        reading(next_ean(), local(tomorrow, 1)),
        reading(ean, naive),
        reading(ean, off_quarter),
        reading(ean, local(tomorrow, 7), "-0.001"),
        reading(small, local(tomorrow, 9), "1.001"),
        reading(other, local(tomorrow, 2), "0.100"),
        reading(other, local(tomorrow, 2), "0.200"),
        reading(ean, local(tomorrow, 2), "lots"),
        reading(ean, local(tomorrow, 4)),
    ]

    body = post(world, readings).json()

    assert [(r["row_number"], r["reason"], r["connection_ean"], r["isp_start"]) for r in body["rejections"]] == [
        (2, "unknown_connection", "", local(tomorrow, 1)),  # whose connection it is is not echoed
        (3, "unknown_connection", "", local(tomorrow, 1)),
        (4, "naive_datetime", ean, naive),
        (5, "isp_not_aligned", ean, off_quarter),
        (6, "negative_energy", ean, local(tomorrow, 7)),
        (7, "implausible_energy", small, local(tomorrow, 9)),
        (8, "duplicate_in_file", other, local(tomorrow, 2)),
        (9, "duplicate_in_file", other, local(tomorrow, 2)),
        (10, "malformed", ean, local(tomorrow, 2)),
        (None, "gap", ean, isp_time.isp_start(tomorrow, 2).isoformat()),
    ]
    assert (body["received"], body["accepted"], body["rejected"], body["gaps"]) == (11, 2, 9, 1)
    assert foreign not in {row[0] for row in MeterReading.objects.values_list("connection_id")}


def test_resending_the_same_readings_changes_nothing_and_answers_200(world: World, tomorrow: date) -> None:
    ean = world.voltflex_connections[0].ean
    readings = [reading(ean, local(tomorrow, isp)) for isp in (1, 2, 3)]
    first = post(world, readings)
    again = post(world, readings)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert MeterImportBatch.objects.count() == 1 and MeterReading.objects.count() == 3


def test_a_correction_is_a_new_version_and_the_old_value_is_kept(world: World, tomorrow: date) -> None:
    ean = world.voltflex_connections[0].ean
    post(world, [reading(ean, local(tomorrow, 1), "0.250"), reading(ean, local(tomorrow, 2), "0.300")])

    body = post(world, [reading(ean, local(tomorrow, 1), "0.275"), reading(ean, local(tomorrow, 2), "0.300")]).json()

    assert (body["accepted"], body["corrected"], body["unchanged"]) == (0, 1, 1)
    latest = MeterReading.objects.get(connection_id=ean, isp_start=isp_time.isp_start(tomorrow, 1))
    assert (latest.kwh_import, latest.version) == (Decimal("0.275"), 2)
    assert list(MeterReadingVersion.objects.values_list("version", "kwh_import")) == [(1, Decimal("0.250"))]


def test_aggregators_may_not_deliver_meter_data(world: World, tomorrow: date) -> None:
    ean = world.voltflex_connections[0].ean
    response = post(world, [reading(ean, local(tomorrow, 1))], user=world.voltflex_user)

    assert response.status_code == 403
    assert MeterReading.objects.count() == 0


def test_an_api_key_needs_the_meter_data_scope(world: World, tomorrow: date) -> None:
    from rest_framework.test import APIClient

    _, narrow = api_key_create(participant=world.gridco, name="reader", scopes=["settlement:read"])
    _, writer = api_key_create(participant=world.gridco, name="mdm", scopes=["meter-data:write"])
    body = {"readings": [reading(world.voltflex_connections[0].ean, local(tomorrow, 1))]}
    answers = []
    for key in (narrow, writer):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        answers.append(client.post(URL, body, format="json").status_code)

    assert answers == [403, 201]


@pytest.mark.parametrize(("body", "field"), [
    ({"readings": []}, "readings"),
    ({}, "readings"),
    ({"readings": [{"connection_ean": "871685000000000000"}]}, "readings[0].isp_start"),
])
def test_a_malformed_request_is_refused_with_the_error_contract(world: World, body: dict[str, Any],
                                                                field: str) -> None:
    response = api_client_for(world.gridco_user).post(URL, body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == field and error["code"] and error["message"]


def test_the_dso_lists_and_reads_only_its_own_deliveries(world: World, tomorrow: date) -> None:
    own = post(world, [reading(world.voltflex_connections[0].ean, local(tomorrow, 1)),
                       reading(next_ean(), local(tomorrow, 1))]).json()
    foreign = post(world, [reading(world.cp_far.connections.get().ean, local(tomorrow, 1))],
                   user=world.otherdso_user).json()

    gridco = api_client_for(world.gridco_user)
    listed = gridco.get(IMPORTS).json()["results"]
    assert [item["id"] for item in listed] == [own["id"]]
    assert [item["id"] for item in gridco.get(IMPORTS, {"with_rejections": "true"}).json()["results"]] == [own["id"]]
    assert gridco.get(IMPORTS, {"with_rejections": "false"}).json()["results"] == []
    detail = gridco.get(f"{IMPORTS}{own['id']}/")
    assert detail.status_code == 200 and detail.json()["rejections"][0]["reason"] == "unknown_connection"
    assert gridco.get(f"{IMPORTS}{foreign['id']}/").status_code == 404
    assert api_client_for(world.voltflex_user).get(IMPORTS).status_code == 403
