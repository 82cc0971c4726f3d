"""The clean shape of a meter-data CSV line: what the bulk path (settlement.services.meter_day_load) may hand to
PostgreSQL typed, because every rule that needs the text as delivered already holds for it.

An EAN of digits; an ISP start with an offset, on a quarter-hour (minutes 00/15/30/45, seconds 00, offset minutes
00/15/30/45, so the UTC instant is on a quarter-hour too), with hour, month, day, year (1970 on) and offset (at most
14 h) in range; kWh as plain digits with at most 9 integer digits and 3 decimals; quality 0 or 1; LF or CRLF.
That is rules 1, 2, 4 and 5 of meter_rules passed. A day the calendar lacks (30 February) passes here and makes
COPY fail, which sends the file to the general engine as well.

No Django here: for a large file the check runs as its own process (`python -m settlement.ingest.clean_csv FILE`:
exit status 0 and the file's EANs one per line when clean, 1 when not), on the second core while PostgreSQL
parses the file.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

CHUNK = 1 << 20
_KWH = rb"[0-9]{1,9}(?:\.[0-9]{1,3})?"  # numeric(12, 3) without rounding: 9 integer digits, 3 decimals, no sign
_QUARTER = rb"(?:00|15|30|45)"
CLEAN_LINE = (
    rb"[0-9]{1,18},"
    rb"(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[T ](?:[01][0-9]|2[0-3]):"
    + _QUARTER + rb":00(?:Z|[+-](?:0[0-9]|1[0-4]):" + _QUARTER + rb"),"
    + _KWH + rb"," + _KWH + rb",[01]\r?\n"
)
_CLEAN_LINES = re.compile(rb"(?:" + CLEAN_LINE + rb")*")
_AFTER_EAN = CLEAN_LINE[len(rb"[0-9]{1,18},"):]
# A run of clean lines with the same EAN (a file is usually connection by connection): one match, one EAN object
# per run rather than per line.
_CLEAN_RUN = re.compile(rb"([0-9]{1,18}),(?:" + _AFTER_EAN + rb")(?:\1,(?:" + _AFTER_EAN + rb"))*")


def lines_clean(data: bytes) -> bool:
    """Every line of `data` (whole lines, the last one ending in a newline) has the clean shape."""
    return _CLEAN_LINES.fullmatch(data) is not None


def clean_runs(data: bytes) -> list[tuple[bytes, int, int]] | None:
    """The runs of lines with one EAN that tile `data` (whole lines) as (EAN, start, end), or None if a line is
    not clean: the runs must follow each other without a byte between."""
    runs: list[tuple[bytes, int, int]] = []
    end = 0
    for run in _CLEAN_RUN.finditer(data):
        if run.start() != end:
            return None
        end = run.end()
        runs.append((run.group(1), run.start(), end))
    return runs if end == len(data) else None


def _eans_of_clean_lines(data: bytes) -> set[bytes] | None:
    """The EANs of `data` (whole lines) if every line is clean."""
    runs = clean_runs(data)
    return None if runs is None else {ean for ean, _, _ in runs}


def line_blocks(path: str) -> Iterator[tuple[bytes, int]]:
    """The data lines of a CSV file (after the header) in blocks of whole lines, each with the file offset
    reached; a last line without its newline gets one."""
    rest = b""
    with open(path, "rb") as handle:
        handle.readline()
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut:
                yield data[:cut], handle.tell() - len(rest)
        if rest:
            yield rest + b"\n", handle.tell()


def file_eans(path: str) -> set[bytes] | None:
    """The EANs of a CSV file whose data lines (after the header) all have the clean shape, else None."""
    eans: set[bytes] = set()
    for data, _ in line_blocks(path):
        found = _eans_of_clean_lines(data)
        if found is None:
            return None
        eans.update(found)
    return eans


if __name__ == "__main__":
    clean_eans = file_eans(sys.argv[1])
    if clean_eans is None:
        sys.exit(1)
    sys.stdout.buffer.write(b"\n".join(sorted(clean_eans)))
