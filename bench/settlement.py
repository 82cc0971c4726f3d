"""Meter data at national scale: one day for N connections imported, then settled for M orders, on PostgreSQL.

    DATABASE_URL=postgres://... .venv/bin/python -m bench.settlement [--connections 100000 --orders 1000]

Creates a fresh database `flexmarket_bench_settlement` on DATABASE_URL's server (dropped at the end unless
--keep-db), migrates it and bulk-inserts the market: one DSO, one aggregator, one congestion point per 100
connections, the connections (all represented by the aggregator), a D-prognosis per point and `--orders`
orders (one per point, 16 evening ISPs). Then, each step timed on its own:

1. generate the day's readings to var/bench/settlement_<N>.csv (documented CSV, connection-major, with
   offsets, 30 % of connections exporting; not timed);
2. raw_copy_s: `COPY` of that file into a bare table (text, timestamptz, numeric, numeric, smallint) through
   psycopg 3, commit included -- the reference (LIMITS.md, row (a));
3. import_s: settlement.services.meter_csv_import(engine="copy"), the path `import_meter_data` takes: file hash,
   batch, every row validated, readings stored with their (connection, ISP) unique index, report and commit. A
   clean file for a new day takes the bulk path (COPY into a new table, index built after, attached as the
   day's partition of MeterReading); `bulk_path` in the last line says whether it did;
4. vacuum_s: VACUUM (ANALYZE) of the readings table afterwards (reported, not part of import_s);
5. settle_s: settlement.services.settle_day(period=day) for the day's orders.

Targets (issue 6): import_ratio = import_s / raw_copy_s <= 2 and settle_s <= 60.
Last line: one JSON object with readings, import_s, raw_copy_s, import_ratio, rows_per_s, orders, settle_s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "flexmarket_bench_settlement"
CONNECTIONS_PER_POINT = 100
EVENING_ISPS = range(69, 85)  # 17:00-21:00 local on a 96-ISP day


def database_urls() -> tuple[str, str]:
    """(admin URL on the server's `postgres` database, URL of the bench database)."""
    base = os.environ.get("DATABASE_URL") or ""
    if not base.startswith(("postgres://", "postgresql://")):
        sys.exit("bench.settlement needs DATABASE_URL pointing to a PostgreSQL server")
    parts = urlsplit(base)
    admin = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
    return admin, urlunsplit(parts._replace(path=f"/{BENCH_DB}"))


def database_recreate(admin_url: str, *, drop_only: bool = False) -> None:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        if not drop_only:
            connection.execute(f'CREATE DATABASE "{BENCH_DB}"')


def eans(count: int, prefix: str) -> list[str]:
    from common.ean import ean18_from_data

    return [ean18_from_data(f"{prefix}{n:0{17 - len(prefix)}d}") for n in range(count)]


def csv_generate(path: Path, connection_eans: list[str], day: date, seed: int = 11) -> int:
    """One day of 15-minute readings per connection, connection-major, as a metering party delivers it."""
    from common import isp as isp_time
    from settlement.ingest.csv_format import HEADER_LINE

    rng = random.Random(seed)
    starts = [slot.local_start.isoformat() for slot in isp_time.isp_slots(day)]
    shuffled = connection_eans[:]
    rng.shuffle(shuffled)
    rows = 0
    with path.open("w", encoding="ascii", newline="\n") as handle:
        handle.write(HEADER_LINE + "\n")
        for ean in shuffled:
            exports = rng.random() < 0.3
            lines = []
            for index, start in enumerate(starts):
                hour = index / 4
                base = 0.04 + 0.08 * (17 <= hour < 22) + rng.random() * 0.06
                ev = 2.75 if 18 <= hour < 21 and rng.random() < 0.25 else 0.0
                solar = 0.3 * rng.random() if exports and 10 <= hour < 15 else 0.0
                quality = 1 if rng.random() < 0.02 else 0
                lines.append(f"{ean},{start},{base + ev:.3f},{solar:.3f},{quality}\n")
            handle.write("".join(lines))
            rows += len(lines)
    return rows


def raw_copy(url: str, path: Path) -> float:
    """The reference: COPY of the file into a bare table, from connecting to COMMIT (LIMITS.md row (a))."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS bench_raw_meter")
        connection.execute("""CREATE TABLE bench_raw_meter (connection_ean text NOT NULL, isp_start timestamptz
            NOT NULL, kwh_import numeric(12,3) NOT NULL, kwh_export numeric(12,3) NOT NULL, quality smallint NOT NULL)
            WITH (autovacuum_enabled = false)""")
        connection.execute("CHECKPOINT")
    started = time.perf_counter()
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        with cursor.copy("COPY bench_raw_meter FROM STDIN (FORMAT csv, HEADER true)") as copy, path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                copy.write(chunk)
        connection.commit()
    elapsed = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE bench_raw_meter")
        connection.execute("CHECKPOINT")
    return elapsed


def market_seed(connection_eans: list[str], orders: int, day: date) -> None:
    """The market objects, bulk-inserted: DSO, aggregator, points, connections, representations, prognoses,
    orders."""
    from common import isp as isp_time
    from market.models import (
        AggregatorConnection,
        CongestionPoint,
        Connection,
        DPrognosis,
        DPrognosisIsp,
        FlexOrder,
        FlexOrderIsp,
        Participant,
    )

    dso = Participant.objects.create(name="Bench DSO", role="DSO", domain="bench-dso.example")
    agr = Participant.objects.create(name="Bench AGR", role="AGR", domain="bench-agr.example")
    point_count = max(1, len(connection_eans) // CONNECTIONS_PER_POINT)
    points = CongestionPoint.objects.bulk_create([
        CongestionPoint(ean=ean, dso=dso, name=f"Bench point {n}") for n, ean in enumerate(eans(point_count, "8716"))
    ])
    Connection.objects.bulk_create([
        Connection(ean=ean, congestion_point=points[n % point_count]) for n, ean in enumerate(connection_eans)
    ], batch_size=10_000)
    AggregatorConnection.objects.bulk_create([
        AggregatorConnection(aggregator=agr, connection_id=ean, valid_from=day - timedelta(days=30))
        for ean in connection_eans
    ], batch_size=10_000)
    slots = isp_time.isp_slots(day)
    per_point = len(connection_eans) / point_count
    prognoses = DPrognosis.objects.bulk_create([
        DPrognosis(congestion_point=point, period=day, aggregator=agr, status=DPrognosis.Status.ACCEPTED)
        for point in points
    ])
    # Baseline: what the generator's households draw on average plus the uncontrolled EV evening peak.
    DPrognosisIsp.objects.bulk_create([
        DPrognosisIsp(d_prognosis=prognosis, isp=slot.index, power_w=int(per_point * 1000 * 4 * (
            0.07 + (0.08 if 17 <= (slot.index - 1) / 4 < 22 else 0) + (0.6875 if 18 <= (slot.index - 1) / 4 < 21
                                                                      else 0))))
        for prognosis in prognoses for slot in slots
    ], batch_size=10_000)
    placed = FlexOrder.objects.bulk_create([
        FlexOrder(congestion_point=points[n % point_count], period=day, dso=dso, aggregator=agr,
                  d_prognosis=prognoses[n % point_count], order_reference=f"BENCH-{n:05d}-{uuid.uuid4().hex[:8]}",
                  price_eur=Decimal("40.00"), status=FlexOrder.Status.PLACED)
        for n in range(orders)
    ])
    FlexOrderIsp.objects.bulk_create([
        FlexOrderIsp(flex_order=order, isp=isp, power_w=-int(per_point * 300)) for order in placed
        for isp in EVENING_ISPS
    ], batch_size=10_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=1_000)
    parser.add_argument("--keep-db", action="store_true", help="leave the bench database for inspection")
    args = parser.parse_args()
    if args.orders > max(1, args.connections // CONNECTIONS_PER_POINT):
        sys.exit("--orders is at most one per congestion point (connections / 100)")

    admin_url, bench_url = database_urls()
    database_recreate(admin_url)
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.pop("CELERY_BROKER_URL", None)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from common import isp as isp_time
    from common import time as clock
    from settlement.services import meter_csv_import, settle_day

    try:
        call_command("migrate", verbosity=0)
        day = isp_time.market_day_of(clock.now()) - timedelta(days=1)
        while isp_time.isp_count(day) != 96:  # a plain day: the orders' evening ISPs are 17:00-21:00
            day -= timedelta(days=1)
        connection_eans = eans(args.connections, "8717")
        path = ROOT / "var" / "bench" / f"settlement_{args.connections}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        readings = csv_generate(path, connection_eans, day)
        print(f"generated {readings} readings ({path.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - started:.1f} s: {path}", flush=True)
        market_seed(connection_eans, args.orders, day)
        print(f"market: {args.connections} connections, {args.orders} orders for {day}", flush=True)

        raw_copy_s = raw_copy(bench_url.replace("postgres://", "postgresql://", 1), path)
        print(f"raw COPY into a bare table: {raw_copy_s:.1f} s", flush=True)

        connection.close()
        started = time.perf_counter()
        result = meter_csv_import(path=path, engine="copy")
        import_s = time.perf_counter() - started
        print(f"import: {import_s:.1f} s; accepted {result.accepted}, rejected {result.rejected}, "
              f"gaps {result.gaps}", flush=True)
        if result.accepted != readings:
            sys.exit(f"import stored {result.accepted} of {readings} readings")
        from settlement.services.meter_day_load import partition_name

        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [partition_name(day)])
            bulk_path = bool(cursor.fetchone()[0])

        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE) settlement_meterreading")
        vacuum_s = time.perf_counter() - started
        print(f"VACUUM (ANALYZE) after the load: {vacuum_s:.1f} s", flush=True)

        started = time.perf_counter()
        outcomes = settle_day(period=day)
        settle_s = time.perf_counter() - started
        settled = sum(outcome.settled_orders for outcome in outcomes)
        waiting = sum(len(outcome.waiting_orders) for outcome in outcomes)
        print(f"settle_day: {settle_s:.1f} s; {settled} orders settled, {waiting} waiting", flush=True)
        load = os.getloadavg()
        print(json.dumps({
            "readings": readings,
            "import_s": round(import_s, 2),
            "raw_copy_s": round(raw_copy_s, 2),
            "import_ratio": round(import_s / raw_copy_s, 2),
            "rows_per_s": round(readings / import_s),
            "orders": args.orders,
            "settle_s": round(settle_s, 2),
            "orders_settled": settled,
            "vacuum_s": round(vacuum_s, 2),
            "bulk_path": bulk_path,
            "connections": args.connections,
            "load_avg_1m": round(load[0], 2),
        }))
    finally:
        connection.close()
        if not args.keep_db:
            database_recreate(admin_url, drop_only=True)


if __name__ == "__main__":
    main()
