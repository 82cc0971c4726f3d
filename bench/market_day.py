"""Time the demo market day (scenario load + a-f) on a fresh SQLite database, several runs.

    .venv/bin/python -m bench.market_day [--runs 3] [--charge-points-per-point 180]

Last line: {"runs", "charge_points", "sessions", "total_s_median", "day_s_median", "profiles_sent",
"profiles_per_s", "total_s_runs"}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_once(charge_points_per_point: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
        env["SQLITE_PATH"] = str(Path(tmp) / "bench.sqlite3")
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--verbosity", "0"], env=env, check=True, cwd=ROOT)
        completed = subprocess.run(
            [*manage, "demo_day", "--no-serve", "--port", "0", "--charge-points-per-point",
             str(charge_points_per_point)],
            env=env, check=True, cwd=ROOT, capture_output=True, text=True,
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--charge-points-per-point", type=int, default=180)
    args = parser.parse_args()
    results = []
    for index in range(args.runs):
        figures = run_once(args.charge_points_per_point)
        results.append(figures)
        print(f"run {index + 1}: total {figures['total_s']} s, day {figures['wall_s']} s, "
              f"{figures['profiles_sent']} profiles, {figures['sessions']} sessions", flush=True)
    day_median = statistics.median(float(r["wall_s"]) for r in results)
    profiles = int(results[0]["profiles_sent"])
    print(json.dumps({
        "runs": args.runs,
        "charge_points": results[0]["charge_points"],
        "sessions": results[0]["sessions"],
        "total_s_median": statistics.median(float(r["total_s"]) for r in results),
        "day_s_median": day_median,
        "profiles_sent": profiles,
        "profiles_per_s": round(profiles / day_median, 1),
        "total_s_runs": [r["total_s"] for r in results],
    }))


if __name__ == "__main__":
    main()
