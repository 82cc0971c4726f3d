"""The row every meter-data format is turned into."""

from __future__ import annotations

from dataclasses import dataclass

# The documented CSV header (README, "Meter data in"); also the order of RawRow's value fields.
CSV_COLUMNS = ("connection_ean", "isp_start", "kwh_import", "kwh_export", "quality")


@dataclass(frozen=True)
class RawRow:
    """One delivered reading, values as text. row_number is 1-based over the delivery's data rows."""

    row_number: int
    connection_ean: str
    isp_start: str
    kwh_import: str
    kwh_export: str
    quality: str = "0"
