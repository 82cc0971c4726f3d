"""The clean shape of a meter-data CSV line: what the bulk path (settlement.services.meter_day_load) may hand to
PostgreSQL typed, because every rule that needs the text as delivered already holds for it.

An EAN of digits; an ISP start with an offset, on a quarter-hour (minutes 00/15/30/45, seconds 00, offset minutes
00/15/30/45, so the UTC instant is on a quarter-hour too), with hour, month, day, year (1970 on) and offset (at most
14 h) in range; kWh as plain digits with at most 9 integer digits and 3 decimals; quality 0 or 1; LF or CRLF.
That is rules 1, 2, 4 and 5 of meter_rules passed. A day the calendar lacks (30 February) passes here and makes
COPY fail, which sends the file to the general engine as well.

No Django here: for a large file the check runs as its own process (`python -m settlement.ingest.clean_csv FILE`,
exit status 0 when clean, 1 when not), on the second core while PostgreSQL parses the file.
"""

from __future__ import annotations

import re
import sys

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


def lines_clean(data: bytes) -> bool:
    """Every line of `data` (whole lines, the last one ending in a newline) has the clean shape."""
    return _CLEAN_LINES.fullmatch(data) is not None


def file_clean(path: str) -> bool:
    """Every data line of the CSV file (after the header) has the clean shape; a last line without its newline
    counts as if it had one."""
    rest = b""
    with open(path, "rb") as handle:
        handle.readline()
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            if not _CLEAN_LINES.fullmatch(data, 0, cut):
                return False
            rest = data[cut:]
    return not rest or lines_clean(rest + b"\n")


if __name__ == "__main__":
    sys.exit(0 if file_clean(sys.argv[1]) else 1)
