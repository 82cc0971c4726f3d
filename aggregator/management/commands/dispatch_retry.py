"""Re-try dead-lettered (or failed / timed-out) dispatch commands: by id, or every dead letter of a CPO.

    manage.py dispatch_retry <command-id> [...]
    manage.py dispatch_retry --dead-letters [--cpo <cpo-id>]
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aggregator.delivery import commands_retry
from aggregator.models import ChargingProfileCommand
from common.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Put dead-lettered / failed / timed-out charging-profile commands back in the outbox and queue them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("command_ids", nargs="*", help="ChargingProfileCommand ids")
        parser.add_argument("--dead-letters", action="store_true", help="every DEAD_LETTER command")
        parser.add_argument("--cpo", help="with --dead-letters: only this CPO's (id)")

    def handle(self, *args: Any, **options: Any) -> None:
        ids = list(options["command_ids"])
        if options["dead_letters"]:
            rows = ChargingProfileCommand.objects.filter(status=ChargingProfileCommand.Status.DEAD_LETTER)
            if options["cpo"]:
                rows = rows.filter(cpo_id=options["cpo"])
            ids += [str(pk) for pk in rows.values_list("pk", flat=True)]
        if not ids:
            raise CommandError("Name command ids or use --dead-letters.")
        try:
            result = commands_retry(command_ids=ids, actor_label="manage.py dispatch_retry")
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"requeued {result['requeued']}, superseded {result['superseded']}")
