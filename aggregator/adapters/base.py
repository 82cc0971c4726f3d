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
    """Sends charging-profile commands for one session. Raises common.exceptions.AdapterError on transport
    failure (`permanent` says whether a retry can help). Implementations must be thread-safe: the delivery
    pipeline calls them from a pool of threads."""

    @abstractmethod
    def set_charging_profile(
        self, *, cpo: ChargePointOperator, session_id: str, body: dict[str, Any], correlation_id: str
    ) -> ProfileSendResult:
        raise NotImplementedError(".set_charging_profile() must be overridden")

    def get_active_profile(
        self, *, cpo: ChargePointOperator, session_id: str, duration_s: int, response_url: str, correlation_id: str
    ) -> ProfileSendResult:
        raise NotImplementedError(f"{type(self).__name__} cannot read active profiles")

    def clear_profile(
        self, *, cpo: ChargePointOperator, session_id: str, response_url: str, correlation_id: str
    ) -> ProfileSendResult:
        raise NotImplementedError(f"{type(self).__name__} cannot clear profiles")
