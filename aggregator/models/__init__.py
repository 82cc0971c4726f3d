"""Aggregator models, one module per concern; Django finds them all through this package.

operators: CPOs and their protocol credentials. portfolio: charge points, sessions, schedules.
dispatch: the outbox of commands to CPOs. Add a module for a new concern and import it here.
"""

from aggregator.models.dispatch import ChargingProfileCommand
from aggregator.models.operators import ChargePointOperator
from aggregator.models.portfolio import ChargePoint, ChargingSession, SessionSchedule

__all__ = ["ChargePoint", "ChargePointOperator", "ChargingProfileCommand", "ChargingSession", "SessionSchedule"]
