"""Smart-meter simulator: 15-minute readings per connection that follow what the cars actually drew.

Each car charges at min(EVSE/car max power, the limit of the newest profile the CPO accepted for the
session) while plugged in, until its battery has the energy the driver asked for (the car does not know
the plan; it stops when full). A household base load, drawn noisily around the forecast shape in
aggregator.baseload, is added. Sessions are then reported complete, as the CPO would.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from aggregator import baseload
from aggregator.adapters.ocpi import parse_ocpi_datetime
from aggregator.models import ChargingSession
from aggregator.services import charging_session_complete
from common import isp as isp_time
from common.exceptions import TransitionError
from market.models import Connection
from sandbox.models import SandboxChargingProfile
from settlement.ingest.csv_format import csv_text
from settlement.services import meter_csv_import

BASE_LOAD_NOISE = 0.15  # lognormal sigma per ISP


@dataclass(frozen=True)
class MeterSimulation:
    readings: int
    stored: int
    sessions_completed: int
    ev_energy_kwh: float


def _profile_limit_w(profile: dict | None, at: datetime) -> float | None:
    """The limit (W) a charging profile imposes at `at`, or None outside it. Only W profiles are simulated."""
    if not profile or profile.get("charging_rate_unit") != "W":
        return None
    start = parse_ocpi_datetime(profile["start_date_time"]) if profile.get("start_date_time") else None
    if start is None or at < start:
        return None
    offset = (at - start).total_seconds()
    if profile.get("duration") is not None and offset >= profile["duration"]:
        return None
    limit = None
    for period in profile.get("charging_profile_period", []):
        if period["start_period"] <= offset:
            limit = float(period["limit"])
    return limit


def simulate_session_kwh(*, session: ChargingSession, profile: dict | None) -> dict[datetime, float]:
    """Energy per ISP start (UTC) the car draws over its whole stay, under the profile if any."""
    remaining = float(session.energy_requested_kwh)
    energy: dict[datetime, float] = {}
    for slot_start in isp_time.iter_isp_starts(session.arrival_at, session.expected_departure_at):
        if remaining <= 1e-9:
            break
        slot_end = slot_start + isp_time.ISP
        plugged = (min(slot_end, session.expected_departure_at) - max(slot_start, session.arrival_at))
        plugged_h = max(0.0, plugged.total_seconds() / 3600)
        limit_w = _profile_limit_w(profile, slot_start)
        power_kw = session.max_power_w / 1000 if limit_w is None else min(session.max_power_w, limit_w) / 1000
        drawn = min(remaining, power_kw * plugged_h)
        if drawn > 0:
            energy[slot_start] = drawn
            remaining -= drawn
    return energy


def meters_simulate_day(*, period: date, seed: int = 7) -> MeterSimulation:
    """Write readings for every ISP of the day for every connection with a charge point, and end the sessions."""
    rng = random.Random(seed)
    day_starts = [slot.start for slot in isp_time.isp_slots(period)]
    day_start, day_end = isp_time.day_start(period), isp_time.day_end(period)
    sessions = list(
        ChargingSession.objects.filter(
            arrival_at__lt=day_end, expected_departure_at__gt=day_start,
            status__in=[ChargingSession.Status.PENDING, ChargingSession.Status.ACTIVE],
        ).select_related("charge_point")
    )
    active_profiles = {
        (row.session_id, row.client.token_from_client): row.charging_profile
        for row in SandboxChargingProfile.objects.filter(is_active=True).select_related("client")
    }
    ev_kwh: dict[str, dict[datetime, float]] = {}
    completed = 0
    total_ev = 0.0
    for session in sessions:
        profile = active_profiles.get((session.cpo_session_id, session.charge_point.cpo.token_for_cpo))
        drawn = simulate_session_kwh(session=session, profile=profile)
        per_connection = ev_kwh.setdefault(session.charge_point.connection_id, {})
        for start, kwh in drawn.items():
            per_connection[start] = per_connection.get(start, 0.0) + kwh
        delivered = sum(drawn.values())
        total_ev += sum(kwh for start, kwh in drawn.items() if day_start <= start < day_end)
        try:
            charging_session_complete(session=session, ended_at=session.expected_departure_at,
                                      energy_delivered_kwh=Decimal(str(round(delivered, 3))))
            completed += 1
        except TransitionError:
            pass

    # The meters' day goes in as a metering company delivers it: the documented CSV, through the same import
    # as any file (COPY on PostgreSQL).
    lines: list[tuple[str, str, str, str, str]] = []
    connections = Connection.objects.filter(charge_points__isnull=False).distinct().order_by("ean")
    for connection in connections:
        forecast = baseload.household_profile_kw(annual_kwh=connection.annual_consumption_kwh, slot_starts=day_starts)
        ev = ev_kwh.get(connection.ean, {})
        for start, base_kw in zip(day_starts, forecast, strict=True):
            noise = rng.lognormvariate(-(BASE_LOAD_NOISE**2) / 2, BASE_LOAD_NOISE)  # mean 1: forecast is unbiased
            base_kwh = base_kw * isp_time.ISP_HOURS * noise
            kwh = base_kwh + ev.get(start, 0.0)
            lines.append((connection.ean, start.astimezone(isp_time.MARKET_TZ).isoformat(), f"{kwh:.3f}", "0.000",
                          "0"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"meters-{period.isoformat()}.csv"
        path.write_text(csv_text(lines), encoding="utf-8")
        result = meter_csv_import(path=path)
    return MeterSimulation(readings=result.received, stored=result.stored, sessions_completed=completed,
                           ev_energy_kwh=total_ev)


