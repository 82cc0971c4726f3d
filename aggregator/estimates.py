"""Estimates for sessions that arrive without a departure time or an energy: from the driver's preferences,
the driver's history, or a population default (ElaadNL statistics), in that order.

The population tables are the ElaadNL aggregates shipped with EV2Gym (shared/data/ev-sessions, MIT):
`mean-session-length-per.csv` (mean connection time in hours) and `mean-demand-per-arrival.csv` (mean kWh per
session), per 30-minute local arrival slot and location type. They are copied here (rounded) because the product
must not read files outside its repository. Work arrivals 19:00-04:30 have no data; the public curve stands in.

The estimates are plain numbers; the safety margins that protect a driver against a wrong estimate are applied
where the plan is made (aggregator.portfolio.session_input), so the session keeps the estimate itself.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal

from django.conf import settings

from aggregator.models import ChargePoint, ChargingSession, Driver
from common.isp import MARKET_TZ

Source = ChargingSession.Source

# Index i = local arrival 00:00 + 30 min x i (sorted from the interleaved CSV rows).
_MEAN_STAY_H: dict[str, tuple[float | None, ...]] = {
    "home": (9.3, 8.9, 9.2, 8.6, 7.9, 6.5, 5.7, 5.65, 4.8, 4.5, 4.3, 4.35, 5.65, 3.6, 4.5, 4.55, 3.55, 2.8, 3.65,
             3.3, 3.4, 3.4, 3.7, 3.8, 4.1, 4.3, 4.6, 4.85, 6.8, 7.3, 14.3, 15.4, 15.5, 15.2, 14.9, 14.5, 13.9, 13.7,
             13.2, 12.8, 12.3, 12.0, 11.4, 10.9, 10.4, 9.9, 9.7, 9.5),
    "public": (10.0, 10.0, 10.0, 9.8, 9.7, 9.3, 8.9, 8.0, 7.3, 6.4, 5.8, 5.4, 5.3, 5.2, 5.1, 5.2, 5.1, 4.8, 4.3, 3.7,
               3.0, 2.9, 2.8, 2.9, 2.9, 3.0, 3.0, 3.0, 3.0, 3.1, 3.3, 3.8, 4.2, 5.1, 9.5, 12.4, 12.5, 12.4, 11.9,
               11.5, 11.3, 11.3, 11.2, 10.9, 10.6, 10.4, 10.2, 10.1),
    "work": (None, None, None, None, None, None, None, None, None, None, 8.4, 8.1, 8.5, 8.5, 8.4, 8.4, 8.1, 7.6, 6.6,
             5.8, 4.7, 4.8, 4.0, 4.05, 3.6, 3.7, 3.4, 3.1, 2.8, 2.5, 2.4, 2.1, 1.9, 2.25, 2.3, 2.9, 2.5, 2.6, None,
             None, None, None, None, None, None, None, None, None, None, None),
}
_MEAN_ENERGY_KWH: dict[str, tuple[float | None, ...]] = {
    "home": (30.8, 32.0, 32.4, 32.5, 29.5, 26.5, 25.5, 24.1, 20.7, 21.9, 22.0, 21.1, 20.6, 21.5, 17.5, 18.6, 14.6,
             12.0, 14.7, 14.3, 15.3, 14.0, 14.5, 15.0, 15.5, 15.5, 15.9, 16.5, 17.6, 18.3, 19.1, 20.0, 21.7, 22.1,
             22.2, 22.5, 24.4, 24.9, 27.0, 27.9, 28.7, 29.5, 28.7, 29.5, 29.9, 30.4, 30.5, 31.1),
    "public": (20.9, 20.9, 21.0, 21.4, 21.6, 21.3, 21.6, 21.0, 19.5, 20.6, 20.3, 19.7, 19.1, 18.7, 16.7, 15.2, 13.5,
               12.5, 12.3, 12.7, 12.5, 12.8, 12.7, 13.0, 12.8, 13.0, 13.0, 13.4, 13.8, 14.6, 15.1, 15.9, 16.4, 16.7,
               16.7, 16.4, 16.2, 16.8, 17.3, 18.1, 18.7, 19.6, 20.3, 20.6, 20.5, 20.3, 20.4, 20.6),
    "work": (None, None, None, None, None, None, None, None, None, None, 10.9, 13.5, 12.3, 13.5, 11.9, 15.0, 15.5,
             15.5, 14.9, 14.7, 14.4, 14.8, 14.5, 14.0, 14.3, 15.3, 14.0, 13.7, 12.8, 12.3, 12.5, 12.2, 11.5, 11.5,
             12.6, 15.2, 12.7, 12.0, None, None, None, None, None, None, None, None, None, None, None, None),
}
# A departure estimate never lies closer to the arrival than this: a stay the plan can still use.
_MIN_STAY = timedelta(minutes=30)


@dataclass(frozen=True)
class Estimate:
    departure: datetime
    departure_source: str
    energy_kwh: Decimal
    energy_source: str


def _slot(arrival: datetime) -> int:
    local = arrival.astimezone(MARKET_TZ)
    return (local.hour * 60 + local.minute) // 30


def _population_value(table: dict[str, tuple[float | None, ...]], location: str, arrival: datetime) -> float:
    value = table.get(location, table["public"])[_slot(arrival)]
    if value is None:
        value = table["public"][_slot(arrival)]
    assert value is not None  # the public curve covers every slot
    return value


def population_stay(*, location: str, arrival: datetime) -> timedelta:
    return timedelta(hours=_population_value(_MEAN_STAY_H, location, arrival))


def population_energy_kwh(*, location: str, arrival: datetime) -> Decimal:
    return Decimal(str(_population_value(_MEAN_ENERGY_KWH, location, arrival)))


def next_local_time(*, after: datetime, at: time, min_gap: timedelta = _MIN_STAY) -> datetime:
    """The first instant at local clock time `at` that is at least `min_gap` after `after` (DST-safe: the
    wall-clock time of each candidate day is resolved on that day)."""
    local_after = after.astimezone(MARKET_TZ)
    for days in range(0, 3):
        day = local_after.date() + timedelta(days=days)
        candidate = datetime.combine(day, at, tzinfo=MARKET_TZ)
        # A wall-clock time inside the spring-forward gap does not exist; zoneinfo moves it by the offset change.
        if candidate - after >= min_gap:
            return candidate
    raise AssertionError("unreachable: a local time recurs within three days")


def history(*, driver: Driver, before: datetime) -> list[ChargingSession]:
    """The driver's most recent completed sessions that ended before `before` (newest first)."""
    return list(
        ChargingSession.objects.filter(driver=driver, status=ChargingSession.Status.COMPLETED,
                                       ended_at__isnull=False, ended_at__lte=before)
        .order_by("-arrival_at")[: settings.AGGREGATOR_HISTORY_MAX_SESSIONS]
    )


def _seconds_of_day(instant: datetime) -> int:
    local = instant.astimezone(MARKET_TZ)
    return local.hour * 3600 + local.minute * 60 + local.second


def history_departure(*, past: list[ChargingSession], arrival: datetime) -> datetime | None:
    """Median of the driver's past departure clock times, each taken as its next occurrence after this arrival.

    Measuring each past departure as "time of day after this arrival's time of day" keeps a median across
    midnight right: departures at 23:30 and 00:30 give about midnight, not noon.
    """
    if len(past) < settings.AGGREGATOR_HISTORY_MIN_SESSIONS:
        return None
    arrival_s = _seconds_of_day(arrival)
    offsets = []
    for session in past:
        ended = session.ended_at or session.expected_departure_at
        offset = (_seconds_of_day(ended) - arrival_s) % 86_400
        offsets.append(offset if offset >= _MIN_STAY.total_seconds() else offset + 86_400)
    return arrival + timedelta(seconds=statistics.median(offsets))


def history_energy_kwh(*, past: list[ChargingSession]) -> Decimal | None:
    """Median energy the driver's past sessions really took (delivered, else requested)."""
    values = [session.energy_delivered_kwh if session.energy_delivered_kwh is not None
              else session.energy_requested_kwh for session in past]
    if len(values) < settings.AGGREGATOR_HISTORY_MIN_SESSIONS:
        return None
    return Decimal(statistics.median(values)).quantize(Decimal("0.001"))


def session_estimate(
    *, arrival: datetime, charge_point: ChargePoint, driver: Driver | None,
    departure: datetime | None = None, energy_kwh: Decimal | None = None,
) -> Estimate:
    """Fill in what is unknown (None): departure from the driver's usual departure time, else their history, else
    the population default for the charger's location type; energy from the driver's history, else the population
    default. Known values pass through as given by the driver (DRIVER)."""
    past = history(driver=driver, before=arrival) if driver is not None else []
    location = charge_point.location_type
    departure_source = Source.DRIVER
    if departure is None:
        if driver is not None and driver.usual_departure_time is not None:
            departure = next_local_time(after=arrival, at=driver.usual_departure_time)
        else:
            departure = history_departure(past=past, arrival=arrival)
            departure_source = Source.HISTORY
            if departure is None:
                departure = arrival + max(_MIN_STAY, population_stay(location=location, arrival=arrival))
                departure_source = Source.POPULATION
    energy_source = Source.DRIVER
    if energy_kwh is None:
        energy_kwh = history_energy_kwh(past=past)
        energy_source = Source.HISTORY
        if energy_kwh is None:
            energy_kwh = population_energy_kwh(location=location, arrival=arrival)
            energy_source = Source.POPULATION
        if driver is not None and driver.battery_capacity_kwh is not None:
            energy_kwh = min(energy_kwh, driver.battery_capacity_kwh)  # no car takes more than its battery
    return Estimate(departure=departure, departure_source=departure_source, energy_kwh=energy_kwh,
                    energy_source=energy_source)
