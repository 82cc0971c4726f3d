"""Aggregator models, one module per concern; Django finds them all through this package.

operators: CPOs and their protocol credentials. portfolio: charge points, sessions, schedules.
dispatch: the outbox of commands to CPOs. ocpi: CPO locations/EVSEs and sessions as received. drivers: EV drivers, their preferences and tokens.
Add a module for a new concern and import it here.
"""

from aggregator.models.dispatch import ChargingProfileCommand
from aggregator.models.drivers import Driver, DriverToken
from aggregator.models.ocpi import OcpiEvse, OcpiLocation, OcpiSession
from aggregator.models.operators import ChargePointOperator
from aggregator.models.oscp import (
    CapacityAdjustment,
    CapacityGroup,
    ComplianceError,
    GroupMeasurement,
    OscpInboundMessage,
    OscpOutboundMessage,
    OscpPeer,
)
from aggregator.models.portfolio import ChargePoint, ChargingSession, SessionSchedule

__all__ = [
    "CapacityAdjustment",
    "CapacityGroup",
    "ComplianceError",
    "GroupMeasurement",
    "OscpInboundMessage",
    "OscpOutboundMessage",
    "OscpPeer",
    "ChargePoint",
    "ChargePointOperator",
    "ChargingProfileCommand",
    "ChargingSession",
    "Driver",
    "DriverToken",
    "OcpiEvse",
    "OcpiLocation",
    "OcpiSession",
    "SessionSchedule",
]
