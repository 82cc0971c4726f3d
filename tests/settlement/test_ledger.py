"""The ledger: every issued statement version is chained by SHA-256; verify_ledger finds the first broken entry;
rows cannot be changed through the ORM (and not at all on PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from settlement.models import LedgerEntry, SettlementLine, Statement
from settlement.models.ledger import GENESIS_HASH, LedgerImmutableError
from settlement.services import meter_readings_import, statement_issue
from settlement.services.ledger import canonical_json, ledger_verify
from tests.conftest import World
from tests.settlement.test_settle import issue_reference_statement, meter_row, order_isps

pytestmark = pytest.mark.django_db


def two_versions(world: World, day: date) -> tuple[Statement, Statement]:
    first = issue_reference_statement(world, day)
    meter_readings_import(rows=[meter_row(world.voltflex_connections[0], day, order_isps(day)[3], "1.250")])
    second = statement_issue(dso=world.gridco, aggregator=world.voltflex, period_start=day, period_end=day).statement
    assert second is not None and second.version == 2
    return first, second


def test_each_issued_version_is_appended_and_chained(world: World, tomorrow: date) -> None:
    first, second = two_versions(world, tomorrow)

    entries = list(LedgerEntry.objects.order_by("sequence"))
    assert [(e.sequence, e.statement_id) for e in entries] == [(1, first.pk), (2, second.pk)]
    assert entries[0].previous_hash == GENESIS_HASH
    assert entries[1].previous_hash == entries[0].entry_hash
    for entry in entries:
        # Recomputed by hand from the stored document: SHA-256 of the canonical JSON of statement + previous hash.
        expected = hashlib.sha256(json.dumps(
            {"previous_hash": entry.previous_hash, "sequence": entry.sequence, "statement": json.loads(entry.document)},
            sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
        assert entry.entry_hash == expected
        assert entry.document == canonical_json(json.loads(entry.document))
    document = json.loads(entries[1].document)
    assert (document["version"], document["total_eur"], document["previous_version"]) == (2, "20.50", str(first.pk))
    assert len(document["order_settlements"]) == 1 and len(document["order_settlements"][0]["sha256"]) == 64


def test_verify_ledger_passes_on_an_untouched_chain(world: World, tomorrow: date) -> None:
    two_versions(world, tomorrow)
    out = StringIO()

    call_command("verify_ledger", stdout=out)

    assert "ledger OK: 2 entries" in out.getvalue()
    assert ledger_verify() == (2, None)


def test_the_orm_cannot_change_or_remove_a_ledger_row(world: World, tomorrow: date) -> None:
    issue_reference_statement(world, tomorrow)
    entry = LedgerEntry.objects.get()

    entry.document = "{}"
    with pytest.raises(LedgerImmutableError):
        entry.save()
    with pytest.raises(LedgerImmutableError):
        entry.delete()
    with pytest.raises(LedgerImmutableError):
        LedgerEntry.objects.filter(pk=entry.pk).update(document="{}")
    with pytest.raises(LedgerImmutableError):
        LedgerEntry.objects.all().delete()
    entry.refresh_from_db()
    assert entry.document != "{}"
    assert ledger_verify() == (1, None)


def test_a_settlement_line_changed_behind_the_ledgers_back_is_caught(world: World, tomorrow: date) -> None:
    first, second = two_versions(world, tomorrow)
    line = SettlementLine.objects.filter(order_settlement__statement=first).order_by("isp").first()
    assert line is not None

    with connection.cursor() as cursor:  # the tamper: pay EUR 600 instead of EUR 6 for the first ISP of version 1
        cursor.execute("UPDATE settlement_settlementline SET paid_eur = %s WHERE id = %s", [Decimal("600.00"), line.pk])

    checked, problem = ledger_verify()
    assert checked == 0 and problem is not None
    assert (problem.sequence, problem.statement_id) == (1, str(first.pk))
    assert "differs from the document" in problem.reason
    with pytest.raises(CommandError) as raised:
        call_command("verify_ledger")
    assert raised.value.returncode == 1
    assert "entry #1" in str(raised.value)


def test_a_ledger_row_tampered_with_raw_sql_is_caught_or_refused(world: World, tomorrow: date) -> None:
    _, second = two_versions(world, tomorrow)
    entry = LedgerEntry.objects.get(sequence=2)
    forged = entry.document.replace('"total_eur":"20.50"', '"total_eur":"2050.00"')
    assert forged != entry.document

    if connection.vendor == "postgresql":
        # The trigger refuses the change whoever sends it.
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE settlement_ledgerentry SET document = %s WHERE id = %s", [forged, entry.pk])
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM settlement_ledgerentry WHERE id = %s", [entry.pk])
        assert ledger_verify() == (2, None)
        return

    # SQLite: raw SQL goes past the model guard (this is the tamper); the chain no longer verifies at entry #2.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE settlement_ledgerentry SET document = %s WHERE id = %s", [forged, entry.pk])
    checked, problem = ledger_verify()
    assert checked == 1 and problem is not None
    assert (problem.sequence, problem.statement_id) == (2, str(second.pk))
    assert "SHA-256" in problem.reason

    # Forging the hashes too does not help: the next check compares with the statement in the database.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE settlement_ledgerentry SET document_sha256 = %s WHERE id = %s",
                       [hashlib.sha256(forged.encode()).hexdigest(), entry.pk])
    assert ledger_verify()[1].reason == "entry_hash does not match the document and the previous hash"


def test_a_removed_entry_breaks_the_sequence(world: World, tomorrow: date) -> None:
    two_versions(world, tomorrow)
    if connection.vendor == "postgresql":
        pytest.skip("the trigger refuses DELETE on PostgreSQL (see the test above)")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM settlement_ledgerentry WHERE sequence = 1")

    checked, problem = ledger_verify()
    assert checked == 0 and problem is not None
    assert problem.sequence == 2 and "missing" in problem.reason


def test_the_aggregator_verifies_its_entry_from_the_api(world: World, tomorrow: date) -> None:
    from tests.conftest import api_client_for

    _, second = two_versions(world, tomorrow)
    body = api_client_for(world.voltflex_user).get(f"/api/v1/settlement/statements/{second.pk}/ledger/").json()

    recomputed = hashlib.sha256(json.dumps(
        {"previous_hash": body["previous_hash"], "sequence": body["sequence"], "statement": body["document"]},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    assert recomputed == body["entry_hash"] == second.ledger_entry.entry_hash
    assert body["document"]["total_eur"] == "20.50" and body["document"]["aggregator"] == "voltflex.example.com"
    previous = api_client_for(world.gridco_user).get(f"/api/v1/settlement/statements/{second.previous_version_id}/"
                                                     "ledger/").json()
    assert previous["entry_hash"] == body["previous_hash"]  # the chain, link by link
    other = api_client_for(world.chargeco_user).get(f"/api/v1/settlement/statements/{second.pk}/ledger/")
    assert other.status_code == 404
