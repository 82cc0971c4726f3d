"""One USEF market day, end to end, through the real interfaces.

    a. The DSO (portal, over HTTP with a session login) opens a flex request per congestion point for the
       evening window, sized from its grid forecast against the transformer capacity.
    b. Each aggregator's bidding bot reads open requests from the bidding API, lets the optimiser propose
       an offer, and submits the D-prognosis and the offer through the API.
    c. The DSO orders each request's clearing recommendation in the portal (cheapest cover, partial activation).
    d. Each order is dispatched (Celery) as one OCPI SetChargingProfile per session to the sandbox CPO, which
       answers and posts the asynchronous result back; we wait until every command is final.
    e. The sandbox meters write the day's 15-minute readings from what the cars drew under their profiles.
    f. The nightly settlement runs for the day and issues statements.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
import numpy as np

from aggregator import portfolio
from aggregator.models import ChargingProfileCommand
from aggregator.services import flex_offer_propose
from common import isp as isp_time
from market.models import CongestionPoint, FlexOffer, FlexOrder, FlexRequest, Participant
from sandbox.meters import meters_simulate_day
from sandbox.scenario import DSO_LOGIN
from settlement.models import MeterReading, SettlementLine, Statement
from settlement.services import settle_day

Progress = Callable[[str], None]
WINDOW = ("17:00", "21:00")
CAPACITY_SHARE_OF_PEAK = 0.8  # the transformer limit the DSO plans against, as a share of the uncontrolled peak
COMMAND_WAIT_S = 300


@dataclass
class PointSummary:
    name: str
    requested_kw: float = 0.0
    offered_kw: float = 0.0
    ordered_kw: float = 0.0
    delivered_kw: float = 0.0
    settled_eur: Decimal = Decimal("0")


@dataclass
class DayResult:
    period: date
    points: list[PointSummary] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


class PortalSession:
    """A DSO operator's browser session: Django session login and CSRF-protected form posts."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        # Accepting an offer dispatches inline when Celery is eager: allow for it.
        self.client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(300.0, connect=5.0))
        self.client.get("/portal/login/")
        response = self.post("/portal/login/", {"username": username, "password": password})
        if response.status_code != 302:
            raise RuntimeError(f"portal login failed: HTTP {response.status_code}")

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        token = self.client.cookies.get("csrftoken", "")
        return self.client.post(path, data={**data, "csrfmiddlewaretoken": token},
                                headers={"Referer": str(self.client.base_url) + path})


def grid_forecast_kw(*, point: CongestionPoint, period: date) -> np.ndarray:
    """The DSO's uncontrolled load forecast for the point, per ISP of the day (kW)."""
    total = np.zeros(isp_time.isp_count(period))
    for aggregator in Participant.objects.filter(role=Participant.Role.AGR):
        snapshot = portfolio.portfolio_snapshot(aggregator=aggregator, congestion_point=point, period=period)
        day = list(snapshot.day_slots)
        total += snapshot.base_load_kw[day] + snapshot.uncontrolled_kw.sum(axis=0)[day]
    return total


def _window_isps(period: date) -> list[int]:
    start, end = (int(t.split(":")[0]) for t in WINDOW)
    return [slot.index for slot in isp_time.isp_slots(period) if start <= slot.local_start.hour < end]


def dso_opens_requests(*, portal: PortalSession, period: date, progress: Progress) -> list[FlexRequest]:
    requests = []
    window = _window_isps(period)
    for point in CongestionPoint.objects.order_by("name"):
        forecast = grid_forecast_kw(point=point, period=period)
        peak = float(forecast.max())
        capacity = round(CAPACITY_SHARE_OF_PEAK * peak, 1)
        CongestionPoint.objects.filter(pk=point.pk).update(capacity_kw=Decimal(str(capacity)))
        needed = max(float(forecast[i - 1]) - capacity for i in window)
        minimum = max(1.0, round(needed, 1))
        expires = isp_time.isp_start(period, window[0]) - timedelta(hours=1)
        response = portal.post(f"/portal/congestion-points/{point.pk}/requests/new/", {
            "period": period.isoformat(), "window_start": WINDOW[0], "window_end": WINDOW[1],
            "min_reduction_kw": f"{minimum:.1f}", "max_reduction_kw": f"{2 * minimum:.1f}",
            "expires_at": expires.astimezone(isp_time.MARKET_TZ).strftime("%Y-%m-%dT%H:%M"),
        })
        match = re.search(r"/portal/requests/([0-9a-f-]{36})/", response.headers.get("location", ""))
        if response.status_code != 302 or not match:
            raise RuntimeError(f"opening a request for {point.name} failed: HTTP {response.status_code}")
        requests.append(FlexRequest.objects.get(pk=match.group(1)))
        progress(f"  {point.name}: peak {peak:.0f} kW, capacity {capacity:.0f} kW -> request "
                 f"{minimum:.0f}-{2 * minimum:.0f} kW less, {WINDOW[0]}-{WINDOW[1]}")
    return requests


def aggregators_bid(*, base_url: str, api_tokens: dict[str, str], progress: Progress) -> int:
    """Each aggregator's bot: read open requests from the API, optimise, submit prognosis and offer."""
    offers = 0
    for username, token in api_tokens.items():
        api = httpx.Client(base_url=base_url, timeout=60.0, headers={"Authorization": f"Token {token}"})
        aggregator = Participant.objects.get(users__username=username)
        open_requests = api.get("/api/v1/market/flex-requests/").raise_for_status().json()["results"]
        for item in open_requests:
            proposal = flex_offer_propose(aggregator=aggregator, flex_request=FlexRequest.objects.get(pk=item["id"]))
            prognosis = api.post("/api/v1/market/d-prognoses/create/", json={
                "congestion_point": proposal.congestion_point_ean, "period": proposal.period,
                "isps": [{"isp": r.isp, "power_w": r.power_w} for r in proposal.d_prognosis_isps],
            })
            _raise_for_api_error(prognosis)
            if proposal.is_empty:
                progress(f"  {aggregator.name}: no flexibility to offer on {item['congestion_point']}")
                continue
            offer = api.post("/api/v1/market/flex-offers/create/", json={
                "flex_request": item["id"], "d_prognosis": prognosis.json()["id"],
                "expires_at": proposal.expires_at.isoformat(),
                "options": [{"price_eur": str(proposal.price_eur),
                             "min_activation_factor": str(proposal.min_activation_factor),
                             "isps": [{"isp": r.isp, "power_w": r.power_w} for r in proposal.offer_isps]}],
            })
            _raise_for_api_error(offer)
            offers += 1
            mean_kw = -sum(r.power_w for r in proposal.offer_isps) / len(proposal.offer_isps) / 1000
            progress(f"  {aggregator.name}: {proposal.sessions} sessions -> offer {mean_kw:.0f} kW over "
                     f"{len(proposal.offer_isps)} ISPs for EUR {proposal.price_eur}")
    return offers


def _raise_for_api_error(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise RuntimeError(f"API {response.request.method} {response.request.url.path}: {response.text[:500]}")


def dso_orders_recommendations(*, portal: PortalSession, requests: list[FlexRequest], progress: Progress) -> list[str]:
    """The DSO reviews each request's clearing recommendation in the portal and orders it in one action."""
    references = []
    for request in requests:
        page = portal.client.get(f"/portal/requests/{request.pk}/")
        match = re.search(r'name="expected_cost_eur" value="([0-9.]+)"', page.text)
        if page.status_code != 200 or not match:
            progress(f"  {request.congestion_point.name}: no recommendation to order")
            continue
        response = portal.post(f"/portal/requests/{request.pk}/order-recommendation/",
                               {"expected_cost_eur": match.group(1)})
        if response.status_code != 302:
            raise RuntimeError(f"ordering the recommendation for {request.pk} failed: HTTP {response.status_code}")
        orders = list(FlexOrder.objects.filter(flex_offer__flex_request=request).select_related("aggregator")
                      .order_by("created_at"))
        if not orders:
            raise RuntimeError(f"the recommendation for {request.congestion_point.name} placed no order")
        references += [order.order_reference for order in orders]
        placed = ", ".join(f"{o.aggregator.name} at {o.activation_factor:.2f} (EUR {o.price_eur})" for o in orders)
        progress(f"  {request.congestion_point.name}: ordered the recommendation: {placed}")
    return references


def wait_for_commands(*, progress: Progress, timeout_s: float = COMMAND_WAIT_S) -> dict[str, int]:
    """Until every charging-profile command has its final state (the CPO's async result included)."""
    waiting = (ChargingProfileCommand.Status.PENDING, ChargingProfileCommand.Status.SENDING,
               ChargingProfileCommand.Status.ACCEPTED)
    deadline = time.monotonic() + timeout_s
    total = ChargingProfileCommand.objects.count()
    last = -1
    while True:
        open_count = ChargingProfileCommand.objects.filter(status__in=waiting).count()
        if open_count != last:
            progress(f"  profiles final: {total - open_count}/{total}")
            last = open_count
        if open_count == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{open_count} charging-profile commands still open after {timeout_s:.0f} s")
        time.sleep(0.2)
    counts: dict[str, int] = {}
    for status in ChargingProfileCommand.objects.values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def summarise(*, period: date, requests: list[FlexRequest]) -> list[PointSummary]:
    points = []
    for request in requests:
        summary = PointSummary(name=request.congestion_point.name)
        requested = [row for row in request.isps.all() if row.disposition == "Requested"]
        n = len(requested) or 1
        summary.requested_kw = sum(-row.max_power_w for row in requested) / n / 1000
        offers = FlexOffer.objects.filter(flex_request=request).prefetch_related("options__isps")
        # Options of one offer are alternatives: count each offer's largest.
        summary.offered_kw = sum(
            max(-sum(r.power_w for r in option.isps.all()) for option in offer.options.all()) for offer in offers
        ) / n / 1000
        orders = FlexOrder.objects.filter(flex_offer__flex_request=request).prefetch_related("isps")
        summary.ordered_kw = -sum(r.power_w for o in orders for r in o.isps.all()) / n / 1000
        lines = SettlementLine.objects.filter(order_settlement__flex_order__in=orders,
                                              order_settlement__statement__status=Statement.Status.ISSUED)
        summary.delivered_kw = sum(line.delivered_w for line in lines) / n / 1000
        summary.settled_eur = sum((line.paid_eur for line in lines), Decimal("0"))
        points.append(summary)
    return points


def run_market_day(*, base_url: str, period: date, api_tokens: dict[str, str], progress: Progress) -> DayResult:
    started = time.monotonic()
    result = DayResult(period=period)
    portal = PortalSession(base_url, *DSO_LOGIN)

    progress("a. DSO opens flex requests in the portal")
    requests = dso_opens_requests(portal=portal, period=period, progress=progress)
    progress("b. aggregators optimise and bid through the API")
    offers = aggregators_bid(base_url=base_url, api_tokens=api_tokens, progress=progress)
    progress("c. DSO orders the clearing recommendation in the portal (each order is dispatched on commit)")
    orders = dso_orders_recommendations(portal=portal, requests=requests, progress=progress)
    progress("d. OCPI SetChargingProfile per session to the CPO; waiting for its results")
    commands = wait_for_commands(progress=progress)
    progress("e. smart meters record the day")
    meters = meters_simulate_day(period=period)
    progress(f"  {meters.readings} readings, {meters.sessions_completed} sessions ended, "
             f"{meters.ev_energy_kwh:.0f} kWh charged that day")
    progress("f. nightly settlement")
    statements = settle_day(period=period)
    for item in statements:
        if item.statement:
            progress(f"  statement {item.statement.aggregator.name}: {item.settled_orders} orders, "
                     f"EUR {item.statement.total_eur}")
        for reference, reason in item.waiting_orders.items():
            progress(f"  {reference} not settled: {reason}")

    result.points = summarise(period=period, requests=requests)
    delivered_kwh = sum(
        max(0, line.delivered_w) for line in SettlementLine.objects.filter(
            order_settlement__statement__status=Statement.Status.ISSUED)
    ) / 1000 * isp_time.ISP_HOURS
    result.figures = {
        "period": period.isoformat(),
        "flex_requests": len(requests),
        "offers": offers,
        "orders": len(orders),
        "sessions_scheduled": ChargingProfileCommand.objects.values("session").distinct().count(),
        "profiles_sent": ChargingProfileCommand.objects.filter(sent_at__isnull=False).count(),
        "profiles_accepted": commands.get(ChargingProfileCommand.Status.RESULT_ACCEPTED, 0),
        "meter_readings": MeterReading.objects.count(),
        "statements": Statement.objects.filter(status=Statement.Status.ISSUED).count(),
        "delivered_kwh": round(delivered_kwh, 3),
        "settled_eur": str(sum((p.settled_eur for p in result.points), Decimal("0"))),
        "wall_s": round(time.monotonic() - started, 2),
    }
    return result
