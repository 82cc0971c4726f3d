"""Settlement models, one module per concern (meter: meter data in; statements: settlement results).

Django finds them all through this package; add a module for a new concern and import it here.
"""

from settlement.models.baselines import BaselineRecord
from settlement.models.disputes import Dispute
from settlement.models.ledger import LedgerEntry
from settlement.models.meter import (
    ConnectionCapacity,
    MeterImportBatch,
    MeterImportRejection,
    MeterReading,
    MeterReadingVersion,
)
from settlement.models.rewards import SessionReward
from settlement.models.statements import OrderSettlement, SettlementLine, SettlementRun, Statement

__all__ = [
    "BaselineRecord",
    "Dispute",
    "LedgerEntry",
    "SessionReward",
    "SettlementRun",
    "ConnectionCapacity",
    "MeterImportBatch",
    "MeterImportRejection",
    "MeterReading",
    "MeterReadingVersion",
    "OrderSettlement",
    "SettlementLine",
    "Statement",
]
