"""Ledger rows are append-only in PostgreSQL itself: UPDATE and DELETE raise, whoever issues them.

TRUNCATE is left alone on purpose: the test runner flushes tables with it between transactional tests.
Other databases rely on the model-level guard (settlement.models.ledger).
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION settlement_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'settlement_ledgerentry is append-only: % refused for entry %', TG_OP, OLD.sequence
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;
"""
TRIGGER = """
CREATE TRIGGER settlement_ledger_append_only
BEFORE UPDATE OR DELETE ON settlement_ledgerentry
FOR EACH ROW EXECUTE FUNCTION settlement_ledger_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS settlement_ledger_append_only ON settlement_ledgerentry;
DROP FUNCTION IF EXISTS settlement_ledger_append_only();
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION, params=None)  # no parameters: the % in RAISE is literal
        schema_editor.execute(TRIGGER)


def remove(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("settlement", "0003_engine_baselines_ledger_disputes_rewards")]

    operations = [migrations.RunPython(install, remove)]
