"""Offer submissions through the real bidding API: gunicorn + PostgreSQL, N concurrent clients, fixed duration.

    .venv/bin/python -m bench.api_offers [--clients 8 --seconds 60 --workers 4 --threads 1 --aggregators 8]

Creates a fresh PostgreSQL database (DATABASE_URL's server, database `flexmarket_bench`), migrates it, seeds one
DSO with an open flex request and `--aggregators` aggregators (each with a D-prognosis and an API token), starts
gunicorn (DEBUG off) and lets the clients POST valid solicited offers (16 ISPs each) as fast as they are
answered. Every 201 is an accepted offer, checked afterwards against the database.
Target (issue 3): >= 300 accepted offers/s with p99 < 200 ms and zero 5xx on the 2-core machine.
Last line: one JSON object with offers_per_s, p50_ms, p99_ms, errors_5xx (and more).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

from bench._cpu import cpu_seconds
from bench._http import KeepAliveConnection

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "flexmarket_bench"
REQUESTS_PER_CONNECTION = 50


def database_urls() -> tuple[str, str]:
    """(admin URL on the server's `postgres` database, URL of the bench database)."""
    base = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    parts = urlsplit(base)
    admin = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
    bench = urlunsplit(parts._replace(path=f"/{BENCH_DB}"))
    return admin, bench


def recreate_database(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{BENCH_DB}"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SEED = r"""
import json, sys
from datetime import timedelta
from django.utils import timezone
from rest_framework.authtoken.models import Token
from common import isp as isp_time
from common.ean import ean18_from_data
from market import services
from market.models import AggregatorConnection, CongestionPoint, Connection, Participant, User

aggregators = int(sys.argv[1])
day = isp_time.market_day_of(timezone.now()) + timedelta(days=2)
dso = Participant.objects.create(name="Bench DSO", role="DSO", domain="bench-dso.example")
point = CongestionPoint.objects.create(ean=ean18_from_data("87169000099000001"), dso=dso, name="Bench point")
isps = [slot.index for slot in isp_time.isp_slots(day) if 17 <= slot.local_start.hour < 21]
request = services.flex_request_create(
    dso=dso, congestion_point=point, period=day,
    isps=[services.IspBand(isp=i, disposition="Requested", min_power_w=-500_000, max_power_w=-100_000) for i in isps],
    expires_at=isp_time.isp_start(day, isps[0]) - timedelta(hours=2))
tokens = []
for n in range(aggregators):
    agr = Participant.objects.create(name=f"Bench AGR {n}", role="AGR", domain=f"bench-agr{n}.example")
    connection = Connection.objects.create(ean=ean18_from_data(f"871687990{n:08d}"), congestion_point=point)
    AggregatorConnection.objects.create(aggregator=agr, connection=connection, valid_from=day - timedelta(days=1))
    services.d_prognosis_submit(aggregator=agr, congestion_point=point, period=day,
                                isps=[services.IspPower(isp=s.index, power_w=80_000) for s in isp_time.isp_slots(day)])
    user = User.objects.create(username=f"bench-agr-{n}", participant=agr)
    tokens.append(Token.objects.create(user=user).key)
print(json.dumps({"request": str(request.pk), "isps": isps, "expires_at": request.expires_at.isoformat(),
                  "tokens": tokens}))
"""


def django_env(bench_url: str, port: int, *, server_side_binding: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "CACHE_URL")}
    env.update({
        "DATABASE_URL": bench_url, "DEBUG": "false", "SECRET_KEY": "bench-only-not-secret-" + "x" * 30,
        "ALLOWED_HOSTS": "127.0.0.1,localhost", "SANDBOX_ENABLED": "false", "LOG_LEVEL": "WARNING",
        "API_THROTTLE_RATE": "100000000/min",  # measure throughput, not the throttle
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "SECURE_COOKIES": "false",
        "DB_SERVER_SIDE_BINDING": "true" if server_side_binding else "false",
    })
    return env


def run(cmd: list[str], env: dict[str, str]) -> str:
    return subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout


async def client_loop(connection: KeepAliveConnection, token: str, body: bytes, deadline: float,
                      latencies: list[float], statuses: dict[int, int]) -> None:
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    sent = 0
    while time.perf_counter() < deadline:
        sent += 1
        if sent % REQUESTS_PER_CONNECTION == 0:
            # A fresh connection now and then: a kept-alive one stays pinned to the worker that accepted it, and
            # with few workers one of them can end up with no connection at all.
            connection.close()
        started = time.perf_counter()
        try:
            code, _ = await connection.request("POST", "/api/v1/market/flex-offers/create/", headers=headers, body=body)
        except (OSError, asyncio.IncompleteReadError):
            code = 599  # transport failure counts as a server-side error
        latencies.append((time.perf_counter() - started) * 1000)
        statuses[code] = statuses.get(code, 0) + 1


async def load(port: int, seed: dict[str, Any], clients: int, seconds: float) -> tuple[list[float], dict[int, int],
                                                                                    float]:
    body = json.dumps({
        "flex_request": seed["request"], "expires_at": seed["expires_at"],
        "options": [{"price_eur": "12.50", "min_activation_factor": "0.50",
                     "isps": [{"isp": isp, "power_w": -20_000} for isp in seed["isps"]]}],
    }).encode()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connections = [KeepAliveConnection("127.0.0.1", port) for _ in range(clients)]
    # Warm-up: every worker imports, connects to the database and serves once before the clock starts.
    for _ in range(3):
        await asyncio.gather(*(c.request("GET", "/healthz", headers={}) for c in connections))
    started = time.perf_counter()
    deadline = started + seconds
    tokens = seed["tokens"]
    await asyncio.gather(*(client_loop(connections[i], tokens[i % len(tokens)], body, deadline, latencies, statuses)
                           for i in range(clients)))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return latencies, statuses, elapsed


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes (2 x cores: hides database waits)")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker")
    parser.add_argument("--aggregators", type=int, default=8)
    parser.add_argument("--no-server-side-binding", dest="server_side_binding", action="store_false",
                        help="measure without DB_SERVER_SIDE_BINDING (the deploy/.env.example setting is on)")
    args = parser.parse_args()

    admin_url, bench_url = database_urls()
    recreate_database(admin_url)
    port = free_port()
    env = django_env(bench_url, port, server_side_binding=args.server_side_binding)
    manage = [sys.executable, "manage.py"]
    run([*manage, "migrate", "--verbosity", "0"], env)
    run([*manage, "collectstatic", "--noinput", "--verbosity", "0"], env)
    seed = json.loads(run([*manage, "shell", "-c", SEED.replace("sys.argv[1]", str(args.aggregators))],
                          env).strip().splitlines()[-1])

    # gthread workers keep connections alive (sync workers close each one: a TCP handshake per request).
    command = [sys.executable, "-m", "gunicorn", "config.wsgi", "--workers", str(args.workers), "--worker-class",
               "gthread", "--threads", str(args.threads), "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
               "--keep-alive", "30"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)  # noqa: S603
    try:
        base_url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        cpu_before, client_before = cpu_seconds({"server": server.pid}, database=BENCH_DB), time.process_time()
        latencies, statuses, elapsed = asyncio.run(load(port, seed, args.clients, args.seconds))
        cpu_after, client_cpu = cpu_seconds({"server": server.pid}, database=BENCH_DB), time.process_time() - client_before
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    stored = int(run([*manage, "shell", "-c",
                      "from market.models import FlexOffer; print(FlexOffer.objects.count())"], env).split()[-1])
    accepted = statuses.get(201, 0)
    errors_5xx = sum(count for code, count in statuses.items() if code >= 500)
    print(f"{accepted} offers accepted in {elapsed:.1f} s by {args.clients} clients on {args.workers} gunicorn "
          f"workers; statuses {dict(sorted(statuses.items()))}; offers in the database: {stored}")
    print(json.dumps({
        "offers_per_s": round(accepted / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "errors_5xx": errors_5xx,
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        "requests": len(latencies),
        "offers_stored": stored,
        "clients": args.clients,
        "workers": args.workers,
        "threads": args.threads,
        "server_side_binding": args.server_side_binding,
        "seconds": round(elapsed, 1),
        "target_ratio": round(accepted / elapsed / 300, 2),
        # CPU per accepted offer (warm-up included): where the 2 cores go.
        "cpu_ms_per_offer": {label: round(1000 * (cpu_after[label] - cpu_before[label]) / max(accepted, 1), 2)
                             for label in ("server", "postgres")} | {
                                 "client": round(1000 * client_cpu / max(accepted, 1), 2)},
    }))


if __name__ == "__main__":
    main()
