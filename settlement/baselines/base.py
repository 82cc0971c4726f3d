"""The baseline interface, method lookup by dotted path, and the meter-series helper the methods share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar

from django.db.models import Count, Max, Sum
from django.utils.module_loading import import_string

from common import isp as isp_time
from common.exceptions import ApplicationError
from market.models import CongestionPoint, DPrognosis, FlexOrder, Participant

DEFAULT_METHOD = "settlement.baselines.d_prognosis.UsefDPrognosis"
W_PER_KWH_PER_ISP = Decimal(1000) / Decimal(str(isp_time.ISP_HOURS))  # kWh in one ISP -> average W


@dataclass(frozen=True)
class BaselineRequest:
    """What a baseline is asked for: one aggregator's connections behind one point, for ISPs of one day."""

    aggregator: Participant
    congestion_point: CongestionPoint
    period: date
    isps: Sequence[int]  # the ISPs that need a baseline (the ordered ISPs), ascending
    connections: Sequence[str]  # EANs represented on `period`
    d_prognosis: DPrognosis | None = None
    measured_w: dict[int, Decimal] = field(default_factory=dict)  # metered average W of `isps`, when known
    d_prognosis_w: dict[int, int] | None = None  # the prognosis values of `isps`, when the caller loaded them


@dataclass(frozen=True)
class BaselineResult:
    values_w: dict[int, int]  # ISP -> baseline W
    inputs: dict[str, Any] = field(default_factory=dict)  # what the method drew on, for the record


class BaselineMethod:
    """A baseline method. Subclasses set `default_parameters` and implement `compute`."""

    default_parameters: ClassVar[dict[str, Any]] = {}

    @classmethod
    def path(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    def parameters(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults overlaid with `given`; unknown names are refused so a typo never silently uses a default."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.default_parameters))
        if unknown:
            raise ApplicationError(f"Unknown parameters for baseline {self.path()}: {unknown}.",
                                   code="invalid_baseline_parameters", field="baseline_parameters")
        return {**self.default_parameters, **given}

    def compute(self, request: BaselineRequest, parameters: dict[str, Any]) -> BaselineResult:
        raise NotImplementedError(".compute() must be overridden")


def baseline_method_load(path: str) -> BaselineMethod:
    try:
        cls = import_string(path or DEFAULT_METHOD)
    except ImportError as exc:
        raise ApplicationError(f"Unknown baseline method {path!r}.", code="unknown_baseline_method",
                               field="baseline_method") from exc
    if not (isinstance(cls, type) and issubclass(cls, BaselineMethod)):
        raise ApplicationError(f"{path!r} is not a baseline method.", code="unknown_baseline_method",
                               field="baseline_method")
    return cls()


def baseline_terms_for(order: FlexOrder) -> tuple[str, dict[str, Any]]:
    """(method path, parameters) for an order: its contract's, else its market's, else the USEF default."""
    contract = order.contract
    if contract is not None and contract.baseline_method:
        return contract.baseline_method, dict(contract.baseline_parameters or {})
    market = order.congestion_point.market
    if market.baseline_method:
        return market.baseline_method, dict(market.baseline_parameters or {})
    return DEFAULT_METHOD, {}


# --- meter series ---------------------------------------------------------------------------------------------


def measured_w_at(connections: Sequence[str], starts: Iterable[datetime]) -> dict[datetime, Decimal]:
    """Average net W of the connections per ISP start, only where every connection has a reading."""
    from settlement.models import MeterReading  # settlement.models imports nothing from here; avoid a cycle

    starts = list(starts)
    if not connections or not starts:
        return {}
    rows = (
        MeterReading.objects.filter(connection_id__in=list(connections), isp_start__in=starts)
        .values("isp_start")
        .annotate(kwh_in=Sum("kwh_import"), kwh_out=Sum("kwh_export"), readings=Count("id"), newest=Max("received_at"))
    )
    wanted = len(set(connections))
    return {
        row["isp_start"].astimezone(UTC): (row["kwh_in"] - row["kwh_out"]) * W_PER_KWH_PER_ISP
        for row in rows
        if row["readings"] == wanted
    }


def same_local_time_start(day: date, target_day: date, isp: int) -> datetime | None:
    """UTC start of the ISP on `day` at the same local clock time as ISP `isp` of `target_day`; None when that
    clock time does not exist on `day` (the hour skipped on the spring DST day). The repeated autumn hour maps
    to the same clock time, so both of its ISPs share a value."""
    local = isp_time.isp_start(target_day, isp).astimezone(isp_time.MARKET_TZ)
    naive = datetime.combine(day, local.time())
    candidate = naive.replace(tzinfo=isp_time.MARKET_TZ, fold=local.fold).astimezone(UTC)
    if candidate.astimezone(isp_time.MARKET_TZ).replace(tzinfo=None) != naive:
        return None
    return candidate


def event_days(request: BaselineRequest, days: Iterable[date]) -> set[date]:
    """Days on which this aggregator had flex orders on this point (their load is not 'normal')."""
    return set(
        FlexOrder.objects.filter(aggregator=request.aggregator, congestion_point=request.congestion_point,
                                 period__in=list(days)).values_list("period", flat=True)
    )


def to_w(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def previous_days(day: date, count: int) -> list[date]:
    return [day - timedelta(days=offset) for offset in range(1, count + 1)]
