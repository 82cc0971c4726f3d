"""`manage.py import_meter_data FILE [--format csv|uftp|dsmr]`: a meter-data delivery in, with its report.

Prints progress lines while it works, then the counts (accepted / corrected / unchanged / rejected / gaps) and
the rejection report. Re-running with the same file changes nothing (the first report is shown again).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.exceptions import ApplicationError
from market.models import Participant
from settlement.ingest.dsmr import SPECIFICATIONS
from settlement.services.meter_data import meter_file_import

FORMATS = ("csv", "uftp", "dsmr")
BY_SUFFIX = {".csv": "csv", ".xml": "uftp", ".txt": "dsmr", ".p1": "dsmr", ".dsmr": "dsmr"}


class ProgressLines:
    """One line per 10 % of work (or every 5 s), on stderr: readable in a terminal and in a log."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.last: tuple[str, int] = ("", -1)
        self.last_at = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        tenth = int(done * 10 / total) if total else -1
        if (stage, tenth) == self.last and now - self.last_at < 5:
            return
        self.last, self.last_at = (stage, tenth), now
        if stage == "copy":
            text = f"copy {done / 1e6:,.0f} of {total / 1e6:,.0f} MB ({done * 100 // max(total, 1)} %)"
        elif stage == "merge":
            text = f"validating and merging {done or total:,} rows"
        elif stage == "index":
            text = (f"indexing {total:,} rows of a new day (bulk path)" if total
                    else "indexing a new day (bulk path, one piece per core)")
        else:
            text = f"{stage} {done:,}"
        self.stream.write(f"[{now - self.started:6.1f} s] {text}\n")
        self.stream.flush()


class Command(BaseCommand):
    help = ("Import meter data from FILE: the documented CSV (connection_ean,isp_start,kwh_import,kwh_export,"
            "quality), a UFTP Metering message (XML) or DSMR P1 telegrams. Valid rows are stored (corrections as "
            "new versions), refused rows are reported with their reason.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--format", choices=FORMATS, help="Default: from the file name (.csv, .xml, .txt/.p1).")
        parser.add_argument("--connection", default="", help="DSMR: EAN of the connection the meter reads.")
        parser.add_argument("--dsmr-spec", choices=sorted(SPECIFICATIONS), help="DSMR: default detected per telegram.")
        parser.add_argument("--engine", choices=("auto", "copy", "python"), default="auto",
                            help="CSV: copy (PostgreSQL COPY + set-based SQL, the default there) or python.")
        parser.add_argument("--dso", help="Domain of the DSO delivering: limits the rows to its connections.")
        parser.add_argument("--report-limit", type=int, default=100,
                            help="Rejections to print (default 100; 0 prints all).")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path} is not a file.")
        file_format = options["format"] or BY_SUFFIX.get(path.suffix.lower())
        if file_format is None:
            raise CommandError(f"Cannot tell the format of {path.name}: give --format ({', '.join(FORMATS)}).")
        dso = None
        if options["dso"]:
            dso = Participant.objects.filter(domain=options["dso"], role=Participant.Role.DSO).first()
            if dso is None:
                raise CommandError(f"No DSO with domain {options['dso']}.")
        try:
            result = meter_file_import(
                path=path, file_format=file_format, connection_ean=options["connection"],
                dsmr_specification=options["dsmr_spec"], submitted_by=dso, engine=options["engine"],
                actor_label="manage.py import_meter_data", progress=ProgressLines(sys.stderr),
            )
        except ApplicationError as exc:
            raise CommandError(f"{exc.message} ({exc.code})") from exc
        batch = result.batch
        if result.replayed:
            self.stdout.write(self.style.WARNING(
                f"{path.name}: the same content was imported before (batch {batch.pk}, "
                f"{batch.created_at:%Y-%m-%d %H:%M}); nothing changed. Its report:"))
        self.stdout.write(
            f"{path.name} [{file_format}, {batch.engine}]: received {batch.received:,}, accepted {batch.accepted:,}, "
            f"corrected {batch.corrected:,}, unchanged {batch.unchanged:,}, rejected {batch.rejected:,}, "
            f"gaps {batch.gaps:,} ({batch.duration_ms / 1000:.1f} s, batch {batch.pk})")
        rejections = result.rejections()
        limit = options["report_limit"] or len(rejections)
        for rejection in rejections[:limit]:
            where = f"row {rejection.row_number}" if rejection.row_number is not None else "gap"
            self.stdout.write(f"  {where}: {rejection.reason} {rejection.connection_ean} {rejection.isp_start} - "
                              f"{rejection.detail}")
        if len(rejections) > limit:
            self.stdout.write(f"  ... and {len(rejections) - limit:,} more (--report-limit 0 prints all)")
        self.stdout.write(self.style.SUCCESS("done") if not rejections else self.style.WARNING(
            f"done with {batch.rejected:,} rejected rows and {batch.gaps:,} gaps"))
