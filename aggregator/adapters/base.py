"""The dispatch adapter interface: how a charging-profile command reaches a CPO."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from aggregator.models import ChargePointOperator


@dataclass(frozen=True)
class ProfileSendResult:
    """The CPO's synchronous answer to a profile command (OCPI ChargingProfileResponse semantics)."""

    result: str  # ACCEPTED | REJECTED | NOT_SUPPORTED | TOO_OFTEN | UNKNOWN_SESSION
    timeout_s: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class ChargingProfileAdapter(ABC):
    """Sends one charging profile for one session. Raises common.exceptions.AdapterError on transport failure."""

    @abstractmethod
    def set_charging_profile(
        self, *, cpo: ChargePointOperator, session_id: str, body: dict[str, Any], correlation_id: str
    ) -> ProfileSendResult:
        raise NotImplementedError(".set_charging_profile() must be overridden")
