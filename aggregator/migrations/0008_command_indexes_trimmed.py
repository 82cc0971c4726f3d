"""Drop the indexes of aggregator_chargingprofilecommand that no query needs (see the model): session, flex_order and
status are served by the composite indexes that start with them, schedule is never queried.

Only the indexes are dropped (DROP INDEX); AlterField would also drop and re-add the foreign keys, which re-checks every
row of the outbox under a lock that blocks dispatch meanwhile.
"""

import django.db.models.deletion
from django.db import migrations, models

TABLE = "aggregator_chargingprofilecommand"
# (index, column, PostgreSQL operator class or "") as 0005 and earlier created them
DROPPED = [
    ("aggregator_chargingprofilecommand_flex_order_id_3e5cbcac", "flex_order_id", ""),
    ("aggregator_chargingprofilecommand_schedule_id_623baea5", "schedule_id", ""),
    ("aggregator_chargingprofilecommand_session_id_26a07308", "session_id", ""),
    ("aggregator_chargingprofilecommand_status_500015fd", "status", ""),
    ("aggregator_chargingprofilecommand_status_500015fd_like", "status", "varchar_pattern_ops"),
]


def drop_indexes(apps, schema_editor):
    for name, _, _ in DROPPED:
        schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')


def create_indexes(apps, schema_editor):
    postgresql = schema_editor.connection.vendor == "postgresql"
    for name, column, opclass in DROPPED:
        if opclass and not postgresql:
            continue
        schema_editor.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{TABLE}" ("{column}" {opclass})')


class Migration(migrations.Migration):

    dependencies = [
        ('aggregator', '0007_oscp_tokens_encrypted'),
        ('market', '0003_settlement_terms'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(drop_indexes, create_indexes)],
            state_operations=[
                migrations.AlterField(
                    model_name='chargingprofilecommand',
                    name='flex_order',
                    field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='market.flexorder'),
                ),
                migrations.AlterField(
                    model_name='chargingprofilecommand',
                    name='schedule',
                    field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='aggregator.sessionschedule'),
                ),
                migrations.AlterField(
                    model_name='chargingprofilecommand',
                    name='session',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='commands', to='aggregator.chargingsession'),
                ),
                migrations.AlterField(
                    model_name='chargingprofilecommand',
                    name='status',
                    field=models.CharField(choices=[('PENDING', 'Pending'), ('SENDING', 'Sending'), ('ACCEPTED', 'Accepted by CPO'), ('REJECTED', 'Rejected by CPO'), ('NOT_SUPPORTED', 'Not supported'), ('TOO_OFTEN', 'Too often'), ('UNKNOWN_SESSION', 'Unknown session'), ('FAILED', 'Failed'), ('SUPERSEDED', 'Superseded'), ('RESULT_ACCEPTED', 'Applied by charger'), ('RESULT_REJECTED', 'Refused by charger'), ('RESULT_UNKNOWN', 'Unknown at charger'), ('TIMED_OUT', "No result within the CPO's timeout"), ('DEAD_LETTER', 'Dead letter (attempts exhausted)')], default='PENDING', max_length=16),
                ),
            ],
        ),
    ]
