"""`manage.py settle [--from D --to D]`: what the nightly job does, by hand, for a range of market days."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common import isp as isp_time
from common import time as clock
from common.exceptions import ApplicationError
from settlement.services import settle_range


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise CommandError(f"{text!r} is not a date (YYYY-MM-DD).") from exc


class Command(BaseCommand):
    help = ("Settle every order of each market day in [--from, --to] (default: yesterday) and issue new statement "
            "versions where anything changed. Idempotent: a second run changes nothing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="date_from", type=_day, help="First market day (YYYY-MM-DD).")
        parser.add_argument("--to", dest="date_to", type=_day, help="Last market day (default: --from).")

    def handle(self, *args: Any, **options: Any) -> None:
        yesterday = isp_time.market_day_of(clock.now()) - timedelta(days=1)
        date_from = options["date_from"] or options["date_to"] or yesterday
        date_to = options["date_to"] or date_from
        try:
            results = settle_range(date_from=date_from, date_to=date_to)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        for result in results:
            if result.statement is not None:
                version = result.statement.version
                state = f"v{version} issued" if result.issued else f"v{version} unchanged"
                self.stdout.write(f"{result.statement.aggregator.domain} {result.statement.period_start:%Y-%m}: "
                                  f"{state}, {result.settled_orders} orders settled, "
                                  f"{len(result.waiting_orders)} waiting")
            for reference, reason in sorted(result.waiting_orders.items()):
                self.stdout.write(f"  {reference} waits: {reason}")
        issued = sum(1 for r in results if r.issued)
        self.stdout.write(self.style.SUCCESS(
            f"{date_from}..{date_to}: {issued} statement versions issued, "
            f"{sum(r.settled_orders for r in results)} orders settled, "
            f"{sum(len(r.waiting_orders) for r in results)} waiting"))
