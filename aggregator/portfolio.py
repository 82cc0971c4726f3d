"""The flexibility model: turns the portfolio behind one congestion point on one market day into
optimiser inputs (sessions, horizon, forecast base load) and back into market quantities (W per ISP).

Horizon: from the start of the market day to the last departure (at least the end of the day), in
15-minute elapsed-time slots, so ISP n of the day is horizon slot n-1 and DST days need no special case.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

import numpy as np
from django.conf import settings

from aggregator import baseload, selectors
from aggregator.models import ChargingSession
from aggregator.optimiser import DeviationBand, Horizon, SessionInput, availability, uncontrolled_kw
from common import isp as isp_time
from market import selectors as market_selectors
from market.models import CongestionPoint, FlexRequest, FlexRequestIsp, Participant
from market.services import IspPower

W_PER_KW = 1000.0


@dataclass
class PortfolioSnapshot:
    """Everything the optimiser needs about one aggregator at one congestion point for one day."""

    aggregator: Participant
    congestion_point: CongestionPoint
    period: date
    horizon: Horizon
    sessions: list[ChargingSession]
    inputs: list[SessionInput]
    avail: np.ndarray  # (sessions, slots)
    uncontrolled_kw: np.ndarray  # (sessions, slots)
    base_load_kw: np.ndarray  # (slots,) forecast household load of the represented connections

    def slot_of_isp(self, isp: int) -> int:
        return self.horizon.slot_of(isp_time.isp_start(self.period, isp))

    @property
    def day_slots(self) -> range:
        """Horizon slots that are ISPs of the market day."""
        first = self.slot_of_isp(1)
        return range(first, first + isp_time.isp_count(self.period))


def departure_margin(session: ChargingSession) -> timedelta:
    """How long before the expected departure the plan must be done: a driver-given departure can be a little
    late, an estimated one much more (settings AGGREGATOR_*DEPARTURE_MARGIN_MINUTES)."""
    if session.departure_source in ChargingSession.ESTIMATED_SOURCES:
        return timedelta(minutes=settings.AGGREGATOR_ESTIMATED_DEPARTURE_MARGIN_MINUTES)
    if session.departure_source == ChargingSession.Source.DRIVER:
        return timedelta(minutes=settings.AGGREGATOR_DEPARTURE_MARGIN_MINUTES)
    return timedelta(0)  # measured: the car is gone at that time, no more and no less


def planned_departure(session: ChargingSession, *, arrival: datetime | None = None,
                      energy_kwh: float | None = None) -> datetime:
    """When the plan wants the car full: the expected departure minus the safety margin (never more than half the
    stay), but never so early that full power could no longer deliver the energy (from `arrival`, default the
    session's): a margin must not cost a driver energy."""
    arrival = arrival or session.arrival_at
    energy = planned_energy_kwh(session) if energy_kwh is None else energy_kwh
    stay = session.expected_departure_at - arrival
    due = session.expected_departure_at - min(departure_margin(session), max(stay, timedelta(0)) / 2)
    if session.max_power_w > 0:
        at_full_power = arrival + timedelta(hours=energy / (session.max_power_w / W_PER_KW))
        due = max(due, at_full_power)
    return min(due, session.expected_departure_at)


def planned_energy_kwh(session: ChargingSession) -> float:
    """The energy the plan aims for: the request, plus AGGREGATOR_ESTIMATED_ENERGY_MARGIN_PCT when estimated."""
    energy = float(session.energy_requested_kwh)
    if session.energy_source in ChargingSession.ESTIMATED_SOURCES:
        energy *= 1 + settings.AGGREGATOR_ESTIMATED_ENERGY_MARGIN_PCT / 100
        if session.battery_capacity_kwh is not None:
            energy = min(energy, float(session.battery_capacity_kwh))
    return energy


def max_discharge_kw(session: ChargingSession) -> float:
    """V2G only for a capable car whose driver consented, and only while above its floor: the optimiser keeps
    the energy by departure, so a car that arrived below its floor does not discharge at all."""
    if not session.v2g_capable or not session.max_discharge_power_w:
        return 0.0
    if session.driver is None or not session.driver.v2g_allowed:
        return 0.0
    if session.v2g_floor_kwh is None or session.v2g_floor_kwh >= 0:
        return 0.0
    return session.max_discharge_power_w / W_PER_KW


def session_input(session: ChargingSession) -> SessionInput:
    """The optimiser's view of a whole session, with the safety margins applied."""
    departure = planned_departure(session)
    minimum: tuple[tuple[datetime, float], ...] = ()
    if session.min_energy_kwh is not None and session.min_energy_by is not None:
        minimum = ((min(session.min_energy_by, departure), float(session.min_energy_kwh)),)
    return SessionInput(
        key=str(session.pk),
        arrival=session.arrival_at,
        departure=departure,
        energy_kwh=planned_energy_kwh(session),
        max_power_kw=session.max_power_w / W_PER_KW,
        min_power_kw=min(session.min_power_w, session.max_power_w) / W_PER_KW,
        max_discharge_kw=max_discharge_kw(session),
        min_energy_by=minimum,
        flexible=session.is_flexible,
    )


def remaining_session_input(session: ChargingSession, *, now: datetime, delivered_kwh: float) -> SessionInput | None:
    """For re-optimisation from `now`: a session already plugged in is planned from `now` with only the energy
    still missing after `delivered_kwh` (and what is still missing of a minimum not yet due); None when its
    planned stay is over. A session that has not arrived yet is planned whole."""
    whole = session_input(session)
    if whole.arrival >= now:
        return whole
    remaining_kwh = max(0.0, whole.energy_kwh - delivered_kwh)
    departure = planned_departure(session, arrival=now, energy_kwh=remaining_kwh)
    if departure <= now:
        return None
    return replace(
        whole,
        arrival=now,
        departure=departure,
        energy_kwh=remaining_kwh,
        min_energy_by=tuple((min(by, departure), max(0.0, kwh - delivered_kwh))
                            for by, kwh in whole.min_energy_by if by > now),
    )


def portfolio_snapshot(*, aggregator: Participant, congestion_point: CongestionPoint, period: date) -> PortfolioSnapshot:
    sessions = list(selectors.portfolio_sessions(aggregator=aggregator, congestion_point=congestion_point,
                                                 period=period))
    inputs = [session_input(session) for session in sessions]
    horizon = Horizon.covering(start=isp_time.day_start(period), sessions=inputs, min_end=isp_time.day_end(period))
    avail = availability(horizon=horizon, sessions=inputs)
    slot_starts = [horizon.slot_start(i) for i in range(horizon.slots)]
    connections = market_selectors.represented_connections(
        aggregator=aggregator, congestion_point=congestion_point, day=period
    )
    annual_total_kwh = sum(connection.annual_consumption_kwh for connection in connections)
    # The base-load profile is linear in annual consumption, so one curve scaled by the sum serves all connections.
    base_load = baseload.household_profile_kw(annual_kwh=annual_total_kwh, slot_starts=slot_starts)
    return PortfolioSnapshot(
        aggregator=aggregator,
        congestion_point=congestion_point,
        period=period,
        horizon=horizon,
        sessions=sessions,
        inputs=inputs,
        avail=avail,
        uncontrolled_kw=uncontrolled_kw(horizon=horizon, sessions=inputs, avail=avail),
        base_load_kw=base_load,
    )


def d_prognosis_isps(snapshot: PortfolioSnapshot) -> list[IspPower]:
    """Baseline per ISP of the day: forecast base load plus uncontrolled charging, integer W."""
    total_kw = snapshot.base_load_kw + snapshot.uncontrolled_kw.sum(axis=0)
    first = snapshot.slot_of_isp(1)
    return [
        IspPower(isp=index, power_w=int(round(total_kw[first + index - 1] * W_PER_KW)))
        for index in range(1, isp_time.isp_count(snapshot.period) + 1)
    ]


def request_caps_and_bands(
    snapshot: PortfolioSnapshot, flex_request: FlexRequest
) -> tuple[dict[int, float], dict[int, DeviationBand]]:
    """Translate a FlexRequest into optimiser terms (horizon slot -> kW).

    Requested downward ISPs: the most reduction worth offering is |MinPower|. Available ISPs: the DSO's
    band on our deviation from the baseline, [MinPower, MaxPower].
    """
    caps: dict[int, float] = {}
    bands: dict[int, DeviationBand] = {}
    for row in flex_request.isps.all():
        slot = snapshot.slot_of_isp(row.isp)
        if row.disposition == FlexRequestIsp.Disposition.REQUESTED:
            if row.max_power_w <= 0:
                caps[slot] = -row.min_power_w / W_PER_KW
            # Upward requests (more consumption) are not offered by this EV model yet.
        else:
            bands[slot] = DeviationBand(min_kw=row.min_power_w / W_PER_KW, max_kw=row.max_power_w / W_PER_KW)
    return caps, bands


def slots_to_isps(snapshot: PortfolioSnapshot, values_kw: dict[int, float], *, sign: int) -> list[IspPower]:
    """Map horizon-slot kW values that fall on the market day to ISP rows in W (sign -1 for reductions)."""
    rows: list[IspPower] = []
    first = snapshot.slot_of_isp(1)
    for slot, value in sorted(values_kw.items()):
        isp = slot - first + 1
        if 1 <= isp <= isp_time.isp_count(snapshot.period):
            power_w = int(np.floor(value * W_PER_KW + 1e-6))  # floor: never offer more than the LP found
            if power_w > 0:
                rows.append(IspPower(isp=isp, power_w=sign * power_w))
    return rows


def isps_to_slots(snapshot: PortfolioSnapshot, rows: Iterable[tuple[int, int]], *, sign: int) -> dict[int, float]:
    """(isp, power_w) pairs of the market day -> horizon slot -> kW (sign -1 turns reductions positive)."""
    totals: dict[int, float] = {}
    for isp, power_w in rows:
        slot = snapshot.slot_of_isp(isp)
        totals[slot] = totals.get(slot, 0.0) + sign * power_w / W_PER_KW
    return totals
