"""`manage.py verify_ledger`: recompute the settlement ledger's hash chain; exit 1 naming the first broken entry."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from settlement.services.ledger import ledger_head, ledger_verify


class Command(BaseCommand):
    help = ("Recompute the hash chain of issued statement versions from the database and name the first entry "
            "that does not verify (exit status 1).")

    def handle(self, *args: Any, **options: Any) -> None:
        checked, problem = ledger_verify()
        if problem is not None:
            raise CommandError(
                f"ledger broken at entry #{problem.sequence} (id {problem.entry_id}, statement "
                f"{problem.statement_id}): {problem.reason}; {checked} entries before it verified.",
                returncode=1,
            )
        head = ledger_head()
        self.stdout.write(self.style.SUCCESS(f"ledger OK: {checked} entries, head {head['head']}"))
