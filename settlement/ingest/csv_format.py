"""The meter-data CSV: header `connection_ean,isp_start,kwh_import,kwh_export,quality`, one reading per line.

    871687400000000016,2026-11-26T00:00:00+01:00,0.047,0.000,0

isp_start is ISO-8601 with a UTC offset (`+01:00`, `+02:00` or `Z`), kWh have at most 3 decimals (Wh),
quality is 0 (measured) or 1 (estimated). LF or CRLF line endings; blank lines are skipped but keep their
number, so a rejection's row number is the file's line number minus one (the header).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import IO

from common.exceptions import ApplicationError
from settlement.ingest.rows import CSV_COLUMNS, RawRow

HEADER_LINE = ",".join(CSV_COLUMNS)


def header_check(first_line: str) -> None:
    """Refuse a file whose header is not the documented one (a wrong file is not a list of bad rows)."""
    found = first_line.lstrip("\ufeff").strip().replace(" ", "")
    if found.lower() != HEADER_LINE:
        raise ApplicationError(
            f"The CSV header must be `{HEADER_LINE}`; found `{first_line.strip()[:120]}`.",
            code="csv_header", field="file",
        )


def csv_rows(stream: IO[str]) -> Iterator[RawRow]:
    """Rows of a meter-data CSV (text stream), header checked. A row with the wrong number of fields keeps
    what it has, so validation rejects it as malformed."""
    first = stream.readline()
    if not first:
        raise ApplicationError("The file is empty.", code="csv_header", field="file")
    header_check(first)
    for number, fields in enumerate(csv.reader(stream), start=1):
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if len(fields) != len(CSV_COLUMNS):
            # The wrong shape: keep the EAN and ISP start for the report; the "?" quality makes it malformed.
            known = [*fields[:2], "", ""][:2]
            yield RawRow(number, known[0], known[1], "", "", "?")
            continue
        yield RawRow(number, *fields)


def csv_text_rows(text: str) -> list[RawRow]:
    return list(csv_rows(io.StringIO(text)))


def csv_text(rows: list[tuple[str, str, str, str, str]]) -> str:
    """A meter-data CSV from value tuples (used by tests, the sandbox and the bench)."""
    return "\n".join([HEADER_LINE, *(",".join(row) for row in rows)]) + "\n"
