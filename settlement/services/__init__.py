"""Settlement writes, one module per concern: meter_data (readings in) and settle (orders settled into statements).

Callers import from `settlement.services`; each module owns its concern.
"""

from settlement.services.meter_data import (
    ImportResult,
    MeterReadingRow,
    meter_csv_import,
    meter_readings_import,
    meter_rows_import,
)
from settlement.services.settle import (
    SETTLEMENT_LOOKBACK_DAYS,
    StatementIssueResult,
    settle_day,
    settle_due,
    settle_range,
    statement_issue,
)

__all__ = [
    "SETTLEMENT_LOOKBACK_DAYS",
    "ImportResult",
    "MeterReadingRow",
    "StatementIssueResult",
    "meter_csv_import",
    "meter_readings_import",
    "meter_rows_import",
    "settle_day",
    "settle_due",
    "settle_range",
    "statement_issue",
]
