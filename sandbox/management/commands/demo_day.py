"""`manage.py demo_day`: load the demo scenario on an empty database, run one market day end to end,
print a summary (and a JSON line), then keep serving the portal unless --no-serve."""

from __future__ import annotations

import json
import time
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from common import isp as isp_time
from common import time as clock
from market.models import Participant
from sandbox.demo import run_market_day
from sandbox.scenario import ADMIN_LOGIN, AGGREGATOR_LOGINS, DSO_LOGIN, demo_scenario_load
from sandbox.server import BackgroundServer


class Command(BaseCommand):
    help = "Run one USEF market day on the demo scenario through portal, API, OCPI and settlement."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000, help="0 picks a free port.")
        parser.add_argument("--no-serve", action="store_true", help="Exit after the day instead of serving.")
        parser.add_argument("--reset", action="store_true", help="Flush the database first.")
        parser.add_argument("--date", type=date.fromisoformat, default=None,
                            help="Market day (default: tomorrow, Europe/Amsterdam).")
        parser.add_argument("--charge-points-per-point", type=int, default=180)
        parser.add_argument("--seed", type=int, default=2026)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["reset"]:
            call_command("flush", interactive=False, verbosity=0)
        if Participant.objects.exists():
            raise CommandError("The database is not empty: run with --reset (make demo does) or on a fresh database.")
        period = options["date"] or isp_time.market_day_of(clock.now()) + timedelta(days=1)
        if isp_time.day_start(period) <= clock.now():
            raise CommandError("The market day must lie in the future (trading is day-ahead).")

        started = time.monotonic()
        server = BackgroundServer(options["host"], options["port"]).start()
        settings.PUBLIC_BASE_URL = server.base_url  # response_url and the CPO address must reach this process
        say = self.stdout.write
        say(f"Serving on {server.base_url}; market day {period.isoformat()} "
            f"({isp_time.isp_count(period)} ISPs, Europe/Amsterdam)")
        say("Loading the demo scenario (ElaadNL-based home charging sessions)...")
        world = demo_scenario_load(period=period, base_url=server.base_url,
                                   charge_points_per_congestion_point=options["charge_points_per_point"],
                                   seed=options["seed"])
        say(f"  1 DSO, 2 aggregators, {len(world.congestion_points)} congestion points, "
            f"{world.charge_points} charge points, {world.sessions} sessions")
        def progress(line: str) -> None:
            say(f"[{time.monotonic() - started:6.1f} s] {line}")

        try:
            result = run_market_day(base_url=server.base_url, period=period, api_tokens=world.api_tokens,
                                    progress=progress)
        except Exception:
            server.stop()
            raise
        self._print_summary(result)
        figures = {**result.figures, "charge_points": world.charge_points, "sessions": world.sessions,
                   "total_s": round(time.monotonic() - started, 2)}
        self._print_logins(server.base_url, world.api_tokens)
        if options["no_serve"]:
            server.stop()
            say(json.dumps(figures))
            return
        say(json.dumps(figures))
        say(f"Portal: {server.base_url}/portal/  (Ctrl+C to stop)")
        try:
            server.thread.join()
        except KeyboardInterrupt:
            server.stop()

    def _print_summary(self, result: Any) -> None:
        say = self.stdout.write
        say("")
        say(f"{'congestion point':40} {'requested':>10} {'offered':>10} {'ordered':>10} {'delivered':>10} {'settled':>10}")
        say(f"{'':40} {'kW':>10} {'kW':>10} {'kW':>10} {'kW':>10} {'EUR':>10}")
        for point in result.points:
            say(f"{point.name:40} {point.requested_kw:10.1f} {point.offered_kw:10.1f} {point.ordered_kw:10.1f} "
                f"{point.delivered_kw:10.1f} {point.settled_eur:10.2f}")
        say("(kW = average over the requested ISPs)")

    def _print_logins(self, base_url: str, tokens: dict[str, str]) -> None:
        say = self.stdout.write
        say("")
        say(f"DSO portal   {base_url}/portal/   login {DSO_LOGIN[0]} / {DSO_LOGIN[1]}")
        say(f"Admin        {base_url}/admin/    login {ADMIN_LOGIN[0]} / {ADMIN_LOGIN[1]}")
        say(f"API docs     {base_url}/api/docs/")
        for username, token in tokens.items():
            say(f"API token    {username:9} {token}   (user {username} / {AGGREGATOR_LOGINS[username]})")
