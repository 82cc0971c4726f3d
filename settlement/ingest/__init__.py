"""Meter data formats in: each parser turns a delivery into RawRows, which settlement.services.meter_data validates.

A RawRow keeps every value as delivered (text), so a malformed value becomes a per-row rejection with the
text that was sent, never an exception that loses the rest of the delivery.
"""

from settlement.ingest.rows import CSV_COLUMNS, RawRow

__all__ = ["CSV_COLUMNS", "RawRow"]
