"""Settlement models, one module per concern (meter: meter data in; statements: settlement results).

Django finds them all through this package; add a module for a new concern and import it here.
"""

from settlement.models.meter import (
    ConnectionCapacity,
    MeterImportBatch,
    MeterImportRejection,
    MeterReading,
    MeterReadingVersion,
)
from settlement.models.statements import OrderSettlement, SettlementLine, Statement

__all__ = [
    "ConnectionCapacity",
    "MeterImportBatch",
    "MeterImportRejection",
    "MeterReading",
    "MeterReadingVersion",
    "OrderSettlement",
    "SettlementLine",
    "Statement",
]
