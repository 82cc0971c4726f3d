"""The row rules of meter data in, written once for the Python engine and mirrored in SQL by meter_copy.

Each rule has a reason code (MeterImportRejection.Reason); the first that applies names the rejection:
  1 malformed        empty EAN; ISP start not `YYYY-MM-DD[T ]HH:MM:SS` + (`±HH:MM` | `Z`) or not a real instant;
                     kWh not a finite decimal with at most 3 decimals; quality not 0 or 1
  2 naive_datetime   ISP start without offset
  3 unknown_connection  no such connection, or (API) not one behind the sender's congestion points
  4 isp_not_aligned  ISP start not on a quarter-hour
  5 negative_energy  kWh import or export below zero
  6 implausible_energy  kWh above the connection's limit x 0.25 h (ConnectionCapacity, else 3 x 80 A)
  7 duplicate_in_file  the same (connection, ISP) more than once among the rows that passed 1-6: every such
                     row is refused, as the delivery does not say which value is right
The checks are plain string and number tests (no regular expressions) so that PostgreSQL can run exactly the
same ones over millions of rows cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from settlement.models import MeterImportRejection

Reason = MeterImportRejection.Reason

DETAIL: dict[str, str] = {
    Reason.MALFORMED: "Expected an EAN, an ISO-8601 ISP start with offset, kWh with at most 3 decimals and "
                      "quality 0 or 1.",
    Reason.NAIVE_DATETIME: "isp_start needs a UTC offset (e.g. +01:00 or Z).",
    Reason.UNKNOWN_CONNECTION: "No connection with this EAN that you may deliver meter data for.",
    Reason.ISP_NOT_ALIGNED: "isp_start must be on a quarter-hour.",
    Reason.NEGATIVE_ENERGY: "Energy values are non-negative (export has its own column).",
    Reason.IMPLAUSIBLE_ENERGY: "More energy than the connection's physical limit allows in 15 minutes.",
    Reason.DUPLICATE_IN_FILE: "The delivery has this connection and ISP more than once.",
}

_DIGITS_TO_ZERO = str.maketrans("123456789", "000000000")
# The shapes an ISP start may have once every digit is 0 (the SQL engine uses the same list with translate()).
AWARE_SHAPES = (
    "0000-00-00T00:00:00+00:00", "0000-00-00T00:00:00-00:00", "0000-00-00T00:00:00Z",
    "0000-00-00 00:00:00+00:00", "0000-00-00 00:00:00-00:00", "0000-00-00 00:00:00Z",
)
NAIVE_SHAPES = ("0000-00-00T00:00:00", "0000-00-00 00:00:00")
MIN_YEAR = "1970"
DECIMALS = 3


def _last_day(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (datetime(year, month + 1, 1) - datetime(year, month, 1)).days  # noqa: DTZ001  (calendar arithmetic)


def isp_text_shape(text: str) -> str:
    """'aware', 'naive' or 'bad' for an ISP start as delivered (ranges checked as the SQL engine does)."""
    shape = text.translate(_DIGITS_TO_ZERO)
    if shape in NAIVE_SHAPES:
        kind = "naive"
    elif shape in AWARE_SHAPES:
        kind = "aware"
    else:
        return "bad"
    if not ("01" <= text[5:7] <= "12" and "01" <= text[8:10] <= "31" and text[11:13] <= "23"
            and text[14:16] <= "59" and text[17:19] <= "59" and text[0:4] >= MIN_YEAR):
        return "bad"
    if len(text) == 25 and not (text[20:22] <= "14" and text[23:25] <= "59"):
        return "bad"
    if text[8:10] > "28" and int(text[8:10]) > _last_day(int(text[0:4]), int(text[5:7])):
        return "bad"
    return kind


def kwh_parse(text: str) -> Decimal | None:
    """A finite decimal with at most 3 decimals (PostgreSQL numeric input rules), else None."""
    if "_" in text:
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -DECIMALS:
        return None
    return value


def quality_parse(text: str) -> int | None:
    stripped = text.strip()
    if "_" in stripped or not stripped.isascii():
        return None
    try:
        value = int(stripped)
    except ValueError:
        return None
    return value if value in (0, 1) else None


Span = tuple[datetime, datetime, int]  # first ISP, last ISP, readings of one connection in a delivery


@dataclass
class MergeCounts:
    accepted: int = 0
    corrected: int = 0
    unchanged: int = 0


@dataclass(frozen=True)
class CheckedRow:
    """A row that passed the row-local rules 1, 2, 4, 5 (connection-dependent rules come after)."""

    row_number: int
    connection_ean: str
    isp_start: datetime
    kwh_import: Decimal
    kwh_export: Decimal
    quality: int
