"""Baselines from the portfolio's own metered history (ANCHORS.md section 4).

All three compare like with like by local clock time, so a 92- or 100-ISP day is matched to ordinary days
ISP by ISP (settlement.baselines.base.same_local_time_start); history days are those the portfolio behind the
point is represented on the settled day (today's connections, their past load).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from common import isp as isp_time
from common.exceptions import ApplicationError
from settlement.baselines.base import (
    BaselineMethod,
    BaselineRequest,
    BaselineResult,
    event_days,
    measured_w_at,
    previous_days,
    same_local_time_start,
    to_w,
)

DayValues = dict[int, Decimal]  # ISP of the settled day -> W on a history day (absent: clock time missing that day)


def _history(request: BaselineRequest, days: Sequence[date]) -> dict[date, DayValues]:
    """Per history day with complete data for the requested ISPs: its W at the same local clock times."""
    mapping: dict[date, dict[int, datetime]] = {}
    for day in days:
        found = {isp: same_local_time_start(day, request.period, isp) for isp in request.isps}
        mapping[day] = {isp: start for isp, start in found.items() if start is not None}
    measured = measured_w_at(request.connections, {start for starts in mapping.values() for start in starts.values()})
    complete: dict[date, DayValues] = {}
    for day, starts in mapping.items():
        if starts and all(start in measured for start in starts.values()):
            complete[day] = {isp: measured[start] for isp, start in starts.items()}
    return complete


def _mean(values: Sequence[Decimal]) -> Decimal:
    return sum(values, Decimal(0)) / len(values)


def _average_days(request: BaselineRequest, chosen: Sequence[DayValues]) -> dict[int, Decimal]:
    result: dict[int, Decimal] = {}
    for isp in request.isps:
        values = [day[isp] for day in chosen if isp in day]
        if not values:  # only possible when every chosen day lacks this clock time
            raise ApplicationError(f"No history for ISP {isp}.", code="insufficient_history", field="baseline")
        result[isp] = _mean(values)
    return result


def _is_weekend(day: date) -> bool:
    return day.weekday() >= 5


def _shift_local(instant: datetime, days: int) -> datetime | None:
    """The same local clock time `days` days later (None if it does not exist then)."""
    local = instant.astimezone(isp_time.MARKET_TZ)
    naive = local.replace(tzinfo=None) + timedelta(days=days)
    shifted = naive.replace(tzinfo=isp_time.MARKET_TZ, fold=local.fold).astimezone(UTC)
    return shifted if shifted.astimezone(isp_time.MARKET_TZ).replace(tzinfo=None) == naive else None


class HighXOfY(BaselineMethod):
    """High X of Y (PJM High 4 of 5 family): of the Y most recent eligible days (same day type, no event of this
    aggregator on this point, complete data) in the look-back, keep the X with the highest load over the event
    ISPs and average them per ISP. Then a same-day adjustment: the mean difference between actual and baseline
    over `adjustment_window_isps` ISPs ending `adjustment_gap_isps` before the event, applied to every event ISP
    only when it raises the baseline (upward-only: it never penalises the portfolio) and capped at
    `adjustment_cap_pct` % of the baseline's event mean (so inflating load before an event buys little)."""

    default_parameters: ClassVar[dict[str, Any]] = {
        "x": 4, "y": 5, "lookback_days": 45, "same_day_type": True,
        "adjustment": True, "adjustment_window_isps": 12, "adjustment_gap_isps": 4, "adjustment_cap_pct": 20,
    }

    def compute(self, request: BaselineRequest, parameters: dict[str, Any]) -> BaselineResult:
        x, y = int(parameters["x"]), int(parameters["y"])
        if not 1 <= x <= y:
            raise ApplicationError("High X of Y needs 1 <= x <= y.", code="invalid_baseline_parameters",
                                   field="baseline_parameters")
        days = previous_days(request.period, int(parameters["lookback_days"]))
        if parameters["same_day_type"]:
            days = [day for day in days if _is_weekend(day) == _is_weekend(request.period)]
        excluded = event_days(request, days)
        days = [day for day in days if day not in excluded]
        history = _history(request, days)
        eligible = [day for day in days if day in history][:y]  # most recent first
        if len(eligible) < x:
            raise ApplicationError(f"High {x} of {y}: only {len(eligible)} eligible days with complete meter data.",
                                   code="insufficient_history", field="baseline")
        ranked = sorted(eligible, key=lambda day: (_mean(list(history[day].values())), day), reverse=True)
        chosen = ranked[:x]
        baseline = _average_days(request, [history[day] for day in chosen])
        inputs: dict[str, Any] = {"eligible_days": [d.isoformat() for d in eligible],
                                  "chosen_days": [d.isoformat() for d in sorted(chosen)]}
        adjustment = Decimal(0)
        if parameters["adjustment"]:
            adjustment, inputs["adjustment"] = self._adjustment(request, parameters, chosen, baseline)
        return BaselineResult(values_w={isp: to_w(value + adjustment) for isp, value in baseline.items()},
                              inputs=inputs)

    def _adjustment(self, request: BaselineRequest, parameters: dict[str, Any], chosen: Sequence[date],
                    baseline: dict[int, Decimal]) -> tuple[Decimal, dict[str, Any]]:
        first = isp_time.isp_start(request.period, request.isps[0])
        gap, width = int(parameters["adjustment_gap_isps"]), int(parameters["adjustment_window_isps"])
        window = [first - (gap + width - k) * isp_time.ISP for k in range(width)]
        actual = measured_w_at(request.connections, window)
        shifted = {(day, start): _shift_local(start, (day - request.period).days) for day in chosen for start in window}
        past = measured_w_at(request.connections, {s for s in shifted.values() if s is not None})
        if len(actual) < width or any(s is None or s not in past for s in shifted.values()):
            return Decimal(0), {"applied_w": 0, "note": "no complete meter data in the adjustment window"}
        actual_mean = _mean([actual[start] for start in window])
        baseline_mean = _mean([past[s] for s in shifted.values() if s is not None])
        raw = actual_mean - baseline_mean
        cap = Decimal(parameters["adjustment_cap_pct"]) / 100 * abs(_mean(list(baseline.values())))
        applied = min(max(Decimal(0), raw), cap)
        return applied, {"raw_w": to_w(raw), "cap_w": to_w(cap), "applied_w": to_w(applied),
                         "window_start": window[0].isoformat(), "window_isps": width}


class NodesFiveDay(BaselineMethod):
    """NODES standard baseline: per ISP, the average of the same clock time over the `days` preceding working
    days (Monday-Friday) with complete data, skipping this aggregator's event days on the point."""

    default_parameters: ClassVar[dict[str, Any]] = {"days": 5, "lookback_days": 21, "exclude_event_days": True}

    def compute(self, request: BaselineRequest, parameters: dict[str, Any]) -> BaselineResult:
        wanted = int(parameters["days"])
        days = [day for day in previous_days(request.period, int(parameters["lookback_days"])) if day.weekday() < 5]
        if parameters["exclude_event_days"]:
            excluded = event_days(request, days)
            days = [day for day in days if day not in excluded]
        history = _history(request, days)
        used = [day for day in days if day in history][:wanted]
        if len(used) < wanted:
            raise ApplicationError(f"5-day average: only {len(used)} working days with complete meter data.",
                                   code="insufficient_history", field="baseline")
        baseline = _average_days(request, [history[day] for day in used])
        return BaselineResult(values_w={isp: to_w(value) for isp, value in baseline.items()},
                              inputs={"days": [d.isoformat() for d in sorted(used)]})


class MeterBeforeAfter(BaselineMethod):
    """Meter before / meter after (NAESB): the mean metered load over `before_isps` ISPs just before the event
    window and `after_isps` just after it (each `gap_isps` away), flat over the event ISPs. Using the after
    window too makes pre-event inflation pointless. The windows may cross midnight (elapsed time, DST-safe)."""

    default_parameters: ClassVar[dict[str, Any]] = {"before_isps": 4, "after_isps": 4, "gap_isps": 0}

    def compute(self, request: BaselineRequest, parameters: dict[str, Any]) -> BaselineResult:
        before, after, gap = (int(parameters[name]) for name in ("before_isps", "after_isps", "gap_isps"))
        if before + after == 0:
            raise ApplicationError("Meter before/after needs a window.", code="invalid_baseline_parameters",
                                   field="baseline_parameters")
        start = isp_time.isp_start(request.period, request.isps[0])
        end = isp_time.isp_end(request.period, request.isps[-1])
        window = [start - (gap + before - k) * isp_time.ISP for k in range(before)]
        window += [end + (gap + k) * isp_time.ISP for k in range(after)]
        measured = measured_w_at(request.connections, window)
        missing = [instant for instant in window if instant not in measured]
        if missing:
            raise ApplicationError(f"Meter before/after: no complete meter data at {missing[0].isoformat()}.",
                                   code="meter_data_incomplete", field="flex_order")
        value = to_w(_mean([measured[instant] for instant in window]))
        return BaselineResult(values_w={isp: value for isp in request.isps},
                              inputs={"before": [w.isoformat() for w in window[:before]],
                                      "after": [w.isoformat() for w in window[before:]]})
