"""Dispatch throughput and loss: N charging profiles for one order through the outbox to a sandbox CPO.

    .venv/bin/python -m bench.dispatch [--profiles 10000] [--error-rate 0.01] [--workers 2] [--deadline-s 120]
        [--server-workers 2] [--server-threads 8]

Creates (and afterwards drops) its own PostgreSQL database and uses its own Redis database, then runs, each as
its own OS process: our web server (gunicorn, config.wsgi; receives the CPO's asynchronous results on our OCPI
endpoint), the sandbox CPO (gunicorn, sandbox.cpo_wsgi: SetChargingProfile receiver failing `--error-rate` of its
calls with HTTP 500, posting each result from its own threads) and `--workers` Celery worker processes on the
`dispatch` queue. The timed part starts when the order's commands are written to the outbox (one
delivery.outbox_put, included) and ends when every command is final (or the deadline passes).

Figures: lost = commands not final at the end or ending without reaching the charger (DEAD_LETTER, FAILED,
TIMED_OUT, ...); duplicated = commands the CPO applied more than once; retries = send attempts beyond the first;
cpu_s = CPU seconds each process group used in the timed part (postgres: the backends serving this database).
Last line: {"profiles", "seconds", "lost", "duplicated", "retries", "profiles_per_s", ...}.

Environment: BENCH_POSTGRES_URL (server to create the database on; default postgres://postgres@127.0.0.1:5432/postgres),
BENCH_REDIS_URL (default redis://127.0.0.1:6379/13; flushed).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench._cpu import cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "flexmarket_bench_dispatch"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def database_url(server_url: str, name: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path="/" + name))


def recreate_database(server_url: str, name: str, *, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def wait_http(url: str, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def warm_up(bases: list[str], clients: int = 32, requests: int = 10) -> None:
    """Let every server process and thread load its URL configuration and views and open its database connection
    (/healthz reads the database) before the clock starts, as long-running servers have; else each does it on its
    first request, inside the timed part. Many concurrent clients on fresh connections, so every thread gets some."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def hammer(base: str) -> None:
        for _ in range(requests):
            httpx.get(f"{base}/healthz", timeout=10)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(hammer, [base for base in bases for _ in range(clients // len(bases))]))


@contextmanager
def processes(specs: list[tuple[str, list[str], dict[str, str]]], log_dir: Path) -> Iterator[dict[str, int]]:
    """Start each spec; yields {name: pid}."""
    running: list[subprocess.Popen[bytes]] = []
    try:
        for name, command, env in specs:
            log = (log_dir / f"{name}.log").open("wb")
            running.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        yield {name: process.pid for (name, _, _), process in zip(specs, running, strict=True)}
    finally:
        for process in running:
            process.terminate()
        for process in running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def setup_world(profiles: int, cpo_base: str) -> tuple[Any, list[Any]]:
    """An aggregator with one CPO (registered at the sandbox CPO), `profiles` sessions, and one placed order."""
    from aggregator.models import ChargePoint, ChargePointOperator, ChargingSession
    from common.ean import ean18_from_data
    from market.models import CongestionPoint, Connection, FlexOrder, Participant
    from sandbox.models import SandboxCpoClient

    dso = Participant.objects.create(name="Bench DSO", role=Participant.Role.DSO, domain="dso.bench.example")
    agr = Participant.objects.create(name="Bench AGR", role=Participant.Role.AGR, domain="agr.bench.example")
    point = CongestionPoint.objects.create(ean=ean18_from_data("87169000000000001"), dso=dso, name="Bench point")
    connections = Connection.objects.bulk_create(
        Connection(ean=ean18_from_data(f"8716850{index:010d}"), congestion_point=point) for index in range(100))
    token_for_cpo, token_from_cpo = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    cpo = ChargePointOperator.objects.create(
        aggregator=agr, name="Sandbox CPO", country_code="NL", party_id="SBX",
        chargingprofiles_url=f"{cpo_base}/sandbox/cpo/ocpi/2.2.1/chargingprofiles",
        token_for_cpo=token_for_cpo, token_from_cpo=token_from_cpo)
    SandboxCpoClient.objects.create(name="bench", token_from_client=token_for_cpo, token_for_client=token_from_cpo)
    points = ChargePoint.objects.bulk_create(
        ChargePoint(cpo=cpo, connection=connections[index % len(connections)], evse_uid=f"NL*SBX*E{index:06d}",
                    max_power_w=11_000) for index in range(profiles))
    arrival = datetime.now(tz=UTC).replace(microsecond=0)
    sessions = ChargingSession.objects.bulk_create(
        ChargingSession(charge_point=charge_point, cpo_session_id=f"SBX{index:07d}", arrival_at=arrival,
                        expected_departure_at=arrival + timedelta(hours=8), energy_requested_kwh=20,
                        max_power_w=11_000, status=ChargingSession.Status.ACTIVE)
        for index, charge_point in enumerate(points))
    order = FlexOrder.objects.create(
        congestion_point=point, period=arrival.date(), dso=dso, aggregator=agr,
        order_reference=f"BENCH-{uuid.uuid4().hex[:8]}", price_eur=100, status=FlexOrder.Status.DISPATCHED)
    return order, sessions


def commands_for(order: Any, sessions: list[Any]) -> list[Any]:
    from aggregator.adapters.ocpi import set_charging_profile_body
    from aggregator.delivery import response_url_for
    from aggregator.models import ChargingProfileCommand

    start = datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    commands = []
    for index, session in enumerate(sessions):
        command = ChargingProfileCommand(kind=ChargingProfileCommand.Kind.SET, cpo=session.charge_point.cpo,
                                         session=session, flex_order=order)
        limits = [11_000, 11_000, 3_700 + (index % 7) * 500, 0, 0, 7_400, 11_000, 11_000]
        command.request_body = set_charging_profile_body(start=start, limits_w=limits,
                                                         response_url=response_url_for(command.id))
        commands.append(command)
    return commands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=10_000)
    parser.add_argument("--error-rate", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--deadline-s", type=float, default=120)
    parser.add_argument("--server-workers", type=int, default=2, help="gunicorn processes of our server and the CPO")
    parser.add_argument("--server-threads", type=int, default=8, help="gunicorn threads per process")
    parser.add_argument("--web-app", default="config.wsgi:application",
                        help="our server's WSGI application (config.wsgi:django_application: without the OCPI result "
                             "front)")
    parser.add_argument("--keep-logs", action="store_true", help="print where the process logs are")
    args = parser.parse_args()

    server_url = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    db_url = database_url(server_url, DB_NAME)
    web_port, cpo_port = free_port(), free_port()
    web_base, cpo_base = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{cpo_port}"
    log_dir = ROOT / "var" / "bench-dispatch"
    log_dir.mkdir(parents=True, exist_ok=True)

    base_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "SQLITE"))},
        "DATABASE_URL": db_url, "CELERY_BROKER_URL": redis_url, "DEBUG": "false", "SANDBOX_ENABLED": "true",
        "SECRET_KEY": "bench-dispatch-not-secret", "ALLOWED_HOSTS": "127.0.0.1,localhost", "LOG_LEVEL": "WARNING",
        "PUBLIC_BASE_URL": web_base, "DJANGO_SETTINGS_MODULE": "config.settings", "DB_CONN_MAX_AGE": "600",
        "DISPATCH_SWEEP_INTERVAL_S": "5", "SECURE_COOKIES": "false",
    }
    os.environ.update(base_env)
    recreate_database(server_url, DB_NAME)
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=base_env, check=True)

    import django

    django.setup()
    from django.db import connection, transaction

    from aggregator import delivery
    from aggregator.models import ChargingProfileCommand
    from sandbox.models import SandboxChargingProfile

    order, sessions = setup_world(args.profiles, cpo_base)
    commands = commands_for(order, sessions)
    connection.close()

    gunicorn = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread",
                "--workers", str(args.server_workers), "--threads", str(args.server_threads), "--keep-alive", "30",
                "--log-level", "warning"]
    celery = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "dispatch", "--concurrency",
              str(args.workers), "--prefetch-multiplier", "1", "-l", "WARNING", "--without-gossip",
              "--without-mingle", "-n", f"bench-{uuid.uuid4().hex[:6]}@localhost"]
    beat = [sys.executable, "-m", "celery", "-A", "config", "beat", "-l", "WARNING",
            "--schedule", str(log_dir / "beat-schedule")]
    specs = [
        ("web", [*gunicorn, "--bind", f"127.0.0.1:{web_port}", args.web_app], base_env),
        # The CPO answers profile PUTs straight from WSGI (sandbox.cpo_wsgi): it stands in for another company's
        # system, which would not share our two cores.
        ("cpo", [*gunicorn, "--bind", f"127.0.0.1:{cpo_port}", "sandbox.cpo_wsgi:application"],
         {**base_env, "SANDBOX_CPO_CONFIG": f"error_rate={args.error_rate},results=thread"}),
        ("worker", celery, base_env),
        ("beat", beat, base_env),
    ]
    figures: dict[str, Any] = {}
    try:
        with processes(specs, log_dir) as pids:
            wait_http(f"{web_base}/healthz")
            wait_http(f"{cpo_base}/healthz")
            warm_up([web_base, cpo_base])
            from config.celery import app

            deadline = time.monotonic() + 60
            while not app.control.ping(timeout=1.0):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Celery workers did not start; see {log_dir}/worker.log")
            print(f"{args.profiles} profiles -> sandbox CPO at {cpo_base} ({args.error_rate:.0%} HTTP 500), "
                  f"{args.workers} worker processes", flush=True)

            cpu_before = cpu_seconds(pids, database=DB_NAME)
            started = time.monotonic()
            with transaction.atomic():
                delivery.outbox_put(commands)
            queued_s = time.monotonic() - started
            final = set(ChargingProfileCommand.FINAL_STATUSES)
            # Counted through the (flex_order, status) index: only the open commands' entries are read, not all.
            still_open = [status for status in ChargingProfileCommand.Status.values if status not in final]
            last_print = started
            while True:
                open_count = ChargingProfileCommand.objects.filter(flex_order=order, status__in=still_open).count()
                now = time.monotonic()
                if open_count == 0 or now - started > args.deadline_s:
                    break
                if now - last_print >= 5:
                    print(f"  {now - started:5.1f} s: {args.profiles - open_count} final", flush=True)
                    last_print = now
                time.sleep(0.2)
            seconds = time.monotonic() - started
            cpu_after = cpu_seconds(pids, database=DB_NAME)

            rows = ChargingProfileCommand.objects.filter(flex_order=order)
            by_status: dict[str, int] = {}
            for status in rows.values_list("status", flat=True):
                by_status[status] = by_status.get(status, 0) + 1
            retries = sum(max(0, attempts - 1) for attempts in rows.values_list("attempts", flat=True))
            applied: dict[str, int] = {}
            for url in SandboxChargingProfile.objects.filter(sync_result="ACCEPTED").values_list(
                    "response_url", flat=True):
                applied[url] = applied.get(url, 0) + 1
            figures = {
                "profiles": args.profiles,
                "seconds": round(seconds, 2),
                "lost": args.profiles - by_status.get(ChargingProfileCommand.Status.RESULT_ACCEPTED, 0),
                "duplicated": sum(1 for count in applied.values() if count > 1),
                "retries": retries,
                "profiles_per_s": round(args.profiles / seconds, 1),
                "applied_at_cpo": len(applied),
                "statuses": by_status,
                "outbox_put_s": round(queued_s, 2),
                "workers": args.workers,
                "error_rate": args.error_rate,
                "load_1m": round(os.getloadavg()[0], 2),
                # Where the time went: CPU seconds per process group during the timed part.
                "cpu_s": {label: round(cpu_after[label] - cpu_before.get(label, 0.0), 1) for label in cpu_after},
            }
            connection.close()
    finally:
        from django.db import connections

        connections.close_all()
        recreate_database(server_url, DB_NAME, drop_only=True)
    if args.keep_logs:
        print(f"process logs in {log_dir}")
    print(f"final: {figures['profiles'] - figures['lost']} of {figures['profiles']} accepted by chargers in "
          f"{figures['seconds']} s; lost {figures['lost']}, duplicated {figures['duplicated']}, "
          f"retries {figures['retries']}", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
