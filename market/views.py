"""DSO portal pages: congestion points, flex requests (with revisions, offer options and the clearing
recommendation), orders (statements: settlement.views).

Views stay thin: they check that the user acts for a DSO, read through the selectors (which keep each DSO
behind its own tenant wall, so another DSO's objects are simply not found: 404), validate a form and call
one service. What is computed here is presentation only: W to kW, ISP labels, totals and the SVG chart.
Every page renders times in Europe/Amsterdam (common.isp.MARKET_TZ); the database stays in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import wraps
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from common import isp as isp_time
from common import time as clock
from common.audit import audit_trail
from common.exceptions import ApplicationError
from market import selectors, services
from market.forms import FlexRequestCreateForm, FlexRequestReviseForm, OfferAcceptForm, RecommendationOrderForm
from market.models import (
    CongestionPoint,
    FlexOffer,
    FlexOfferOption,
    FlexOrder,
    FlexRequest,
    FlexRequestIsp,
    Participant,
    User,
)

View = Callable[..., HttpResponse]

W_PER_KW = Decimal(1000)
# Energy of one ISP at a constant power: kWh = kW x 15/60 h (exact as a Decimal, unlike common.isp.ISP_HOURS).
ISP_HOURS = Decimal(isp_time.ISP_MINUTES) / Decimal(60)
LATEST_REQUESTS = 10
# Presentation only: which request states still offer a "Cancel" button (market.services decides for real).
CANCELLABLE_REQUEST_STATUSES = (
    FlexRequest.Status.DRAFT,
    FlexRequest.Status.OPEN,
    FlexRequest.Status.PARTIALLY_ORDERED,
)
# Presentation only, as above: which request states offer "Revise" (market.services.requests.REVISABLE decides).
REVISABLE_REQUEST_STATUSES = (FlexRequest.Status.DRAFT, FlexRequest.Status.OPEN)


# --- access --------------------------------------------------------------------------------------------


def _participant(request: HttpRequest) -> Participant | None:
    user = request.user
    return user.participant if isinstance(user, User) and user.participant_id else None


def portal_dso(request: HttpRequest) -> Participant:
    """The DSO the signed-in user acts for (only call inside a @dso_required view)."""
    participant = _participant(request)
    if participant is None:
        raise RuntimeError("portal_dso() called outside a @dso_required view")
    return participant


def _actor(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None


def dso_required(view: View) -> View:
    """Signed-in users acting for an active DSO only; everyone else signed in gets a 403 page that says why."""

    @wraps(view)
    @login_required
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        participant = _participant(request)
        if participant is None or participant.role != Participant.Role.DSO or not participant.is_active:
            return render(request, "portal/forbidden.html", {"participant": participant}, status=403)
        with timezone.override(isp_time.MARKET_TZ):
            return view(request, *args, **kwargs)

    return wrapper


# --- presentation helpers -------------------------------------------------------------------------------


def w_to_kw(power_w: int) -> Decimal:
    return Decimal(power_w) / W_PER_KW


def _kwh(powers_w: Iterable[int]) -> Decimal:
    """Energy of a run of ISP powers, counting reductions and increases alike (absolute values)."""
    return (sum((abs(Decimal(p)) for p in powers_w), Decimal(0)) / W_PER_KW * ISP_HOURS).quantize(Decimal("0.001"))


def isp_label(period: date, index: int) -> str:
    return isp_time.isp_slot(period, index).label


def _end_label(period: date, index: int) -> str:
    return isp_time.isp_slot(period, index).end.astimezone(isp_time.MARKET_TZ).strftime("%H:%M")


def _count_by_point(queryset: QuerySet[Any]) -> dict[UUID, int]:
    rows = queryset.prefetch_related(None).order_by().values("congestion_point").annotate(n=Count("pk"))
    return {row["congestion_point"]: row["n"] for row in rows}


@dataclass(frozen=True)
class RequestSummary:
    """A flex request as one table row: its window and the largest reduction it needs."""

    request: FlexRequest
    window: str
    requested_isps: int
    needed_kw: Decimal

    @classmethod
    def of(cls, flex_request: FlexRequest) -> RequestSummary:
        requested = [row for row in flex_request.isps.all() if row.disposition == FlexRequestIsp.Disposition.REQUESTED]
        if not requested:
            return cls(request=flex_request, window="", requested_isps=0, needed_kw=Decimal(0))
        first = min(row.isp for row in requested)
        last = max(row.isp for row in requested)
        window = f"{isp_label(flex_request.period, first)}–{_end_label(flex_request.period, last)}"
        needed = max(row.requested_reduction_w for row in requested)
        return cls(request=flex_request, window=window, requested_isps=len(requested), needed_kw=w_to_kw(needed))


@dataclass(frozen=True)
class PointRow:
    point: CongestionPoint
    open_requests: int
    submitted_offers: int
    orders: int


@dataclass(frozen=True)
class IspRowView:
    index: int
    label: str
    disposition: str
    min_kw: Decimal
    max_kw: Decimal
    offered_kw: Decimal | None = None
    ordered_kw: Decimal | None = None


@dataclass(frozen=True)
class OfferedIsp:
    label: str
    kw: Decimal


@dataclass(frozen=True)
class OptionView:
    """One option of an offer as a table row: its price per kWh and what it offers in each requested ISP."""

    option: FlexOfferOption
    energy_kwh: Decimal
    eur_per_kwh: Decimal | None
    per_isp: list[OfferedIsp]
    ordered: bool

    @property
    def isps_with_flex(self) -> int:
        return sum(1 for item in self.per_isp if item.kw)

    @property
    def all_or_nothing(self) -> bool:
        return self.option.min_activation_factor >= Decimal("1.00")


@dataclass(frozen=True)
class OfferView:
    """An offer with its mutually exclusive options (at most one of them can be ordered)."""

    offer: FlexOffer
    options: list[OptionView]
    open: bool

    @property
    def cheapest_eur_per_kwh(self) -> Decimal | None:
        prices = [item.eur_per_kwh for item in self.options if item.eur_per_kwh is not None]
        return min(prices) if prices else None

    @property
    def order(self) -> FlexOrder | None:
        order: FlexOrder | None = getattr(self.offer, "order", None)
        return order


@dataclass(frozen=True)
class ChartBar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class ChartTick:
    position: float
    label: str


@dataclass
class Chart:
    """Geometry of the request chart (an inline SVG drawn by the template; no JS library)."""

    width: int = 640
    height: int = 240
    left: int = 52
    right: int = 22
    top: int = 14
    bottom: int = 30
    requested: list[ChartBar] = field(default_factory=list)
    ordered: list[ChartBar] = field(default_factory=list)
    offered_path: str = ""
    y_ticks: list[ChartTick] = field(default_factory=list)
    x_ticks: list[ChartTick] = field(default_factory=list)
    description: str = ""

    @property
    def plot_bottom(self) -> int:
        return self.height - self.bottom

    @property
    def plot_right(self) -> int:
        return self.width - self.right


def _nice_ceiling(value: Decimal) -> Decimal:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above `value` (an axis top that reads well)."""
    if value <= 0:
        return Decimal(1)
    magnitude = Decimal(10) ** (value.adjusted())
    for step in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def _request_chart(
    *, period: date, requested: dict[int, int], offered: dict[int, int], ordered: dict[int, int]
) -> Chart | None:
    """Requested reduction per ISP (bars), offered (step line; the caller sums each offer's largest option) and
    total ordered (inner bars), in kW."""
    if not requested:
        return None
    chart = Chart()
    indexes = list(range(min(requested), max(requested) + 1))
    reduction = {
        name: {i: max(Decimal(0), w_to_kw(-series.get(i, 0))) for i in indexes}
        for name, series in (("offered", offered), ("ordered", ordered))
    }
    need = {i: w_to_kw(requested.get(i, 0)) for i in indexes}
    top = _nice_ceiling(max([*need.values(), *reduction["offered"].values(), *reduction["ordered"].values()]))
    plot_w = chart.plot_right - chart.left
    plot_h = chart.plot_bottom - chart.top
    band = plot_w / len(indexes)

    def y_of(kw: Decimal) -> float:
        return round(chart.plot_bottom - float(kw / top) * plot_h, 1)

    path: list[str] = []
    slots = [isp_time.isp_slot(period, i) for i in indexes]
    hour_step = 1 if len(indexes) <= 32 else 2 if len(indexes) <= 64 else 4
    for position, slot in enumerate(slots):
        x = chart.left + position * band
        label = slot.label
        if slot.index in requested:
            chart.requested.append(ChartBar(
                x=round(x + band * 0.08, 1), y=y_of(need[slot.index]), width=round(band * 0.84, 1),
                height=round(chart.plot_bottom - y_of(need[slot.index]), 1),
                title=f"{label}: {need[slot.index]:.1f} kW requested"))
        ordered_kw = reduction["ordered"][slot.index]
        if ordered_kw:
            chart.ordered.append(ChartBar(
                x=round(x + band * 0.25, 1), y=y_of(ordered_kw), width=round(band * 0.5, 1),
                height=round(chart.plot_bottom - y_of(ordered_kw), 1), title=f"{label}: {ordered_kw:.1f} kW ordered"))
        offered_y = y_of(reduction["offered"][slot.index])
        path.append(f"{'M' if position == 0 else 'L'}{x:.1f} {offered_y} H{x + band:.1f}")
        local = slot.local_start
        if len(indexes) <= 4 or (local.minute == 0 and local.hour % hour_step == 0):
            chart.x_ticks.append(ChartTick(position=round(x, 1), label=local.strftime("%H:%M")))
    last = slots[-1].end.astimezone(isp_time.MARKET_TZ)
    if last.minute == 0 and last.hour % hour_step == 0:
        chart.x_ticks.append(ChartTick(position=float(chart.plot_right), label=last.strftime("%H:%M")))
    chart.offered_path = " ".join(path)
    chart.y_ticks = [ChartTick(position=y_of(top * k / 4), label=f"{top * k / 4:g}") for k in range(5)]
    chart.description = (
        f"Requested reduction up to {max(need.values()):.1f} kW; "
        f"offered up to {max(reduction['offered'].values()):.1f} kW; "
        f"ordered up to {max(reduction['ordered'].values()):.1f} kW."
    )
    return chart


def _ordered_option_id(offer: FlexOffer) -> int | None:
    order: FlexOrder | None = getattr(offer, "order", None)
    return order.option_id if order is not None else None


def _option_view(option: FlexOfferOption, *, period: date, requested_isps: list[int], ordered: bool) -> OptionView:
    powers = {row.isp: row.power_w for row in option.isps.all()}
    energy = _kwh(powers.values())
    eur_per_kwh = (option.price_eur / energy).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP) if energy else None
    return OptionView(
        option=option,
        energy_kwh=energy,
        eur_per_kwh=eur_per_kwh,
        per_isp=[OfferedIsp(label=isp_label(period, i), kw=w_to_kw(powers.get(i, 0))) for i in requested_isps],
        ordered=ordered,
    )


def _offer_view(offer: FlexOffer, requested_isps: list[int]) -> OfferView:
    ordered_id = _ordered_option_id(offer)
    return OfferView(
        offer=offer,
        options=[_option_view(option, period=offer.period, requested_isps=requested_isps,
                              ordered=option.pk == ordered_id) for option in offer.options.all()],
        open=offer.status == FlexOffer.Status.SUBMITTED,
    )


def _largest_option_by_isp(offer: FlexOffer) -> dict[int, int]:
    """Per ISP, the largest power change any one option of the offer brings (options are alternatives, so
    they never add up). An accepted offer counts only the option that was ordered."""
    ordered_id = _ordered_option_id(offer)
    largest: dict[int, int] = {}
    for option in offer.options.all():
        if ordered_id is not None and option.pk != ordered_id:
            continue
        for row in option.isps.all():
            if abs(row.power_w) > abs(largest.get(row.isp, 0)):
                largest[row.isp] = row.power_w
    return largest


def _sum_by_isp(rows: Iterable[tuple[int, int]]) -> dict[int, int]:
    totals: dict[int, int] = {}
    for isp, power_w in rows:
        totals[isp] = totals.get(isp, 0) + power_w
    return totals


@dataclass(frozen=True)
class RecommendedRow:
    offer: FlexOffer
    option_reference: str
    activation_factor: Decimal
    cost_eur: Decimal
    energy_kwh: Decimal | None


@dataclass(frozen=True)
class CoverRow:
    index: int
    label: str
    need_kw: Decimal
    covered_kw: Decimal
    short_kw: Decimal

    @property
    def short(self) -> bool:
        return self.short_kw > 0


@dataclass(frozen=True)
class RecommendationView:
    """The clearing recommendation as the panel shows it; `expected_cost` is posted back unchanged."""

    recommendation: services.Recommendation
    chosen: list[RecommendedRow]
    isps: list[CoverRow]
    expected_cost: str
    gap: str

    @property
    def short_isps(self) -> list[CoverRow]:
        return [row for row in self.isps if row.short]


def _recommendation_view(recommendation: services.Recommendation, offers: list[OfferView]) -> RecommendationView:
    period = recommendation.flex_request.period
    options = {(view.offer.pk, item.option.option_reference): item for view in offers for item in view.options}
    chosen = []
    for item in recommendation.chosen:
        shown = options.get((item.offer.pk, item.option_reference))
        chosen.append(RecommendedRow(
            offer=item.offer, option_reference=item.option_reference, activation_factor=item.activation_factor,
            cost_eur=item.cost_eur,
            energy_kwh=(shown.energy_kwh * item.activation_factor).quantize(Decimal("0.001")) if shown else None,
        ))
    isps = [
        CoverRow(index=i, label=isp_label(period, i), need_kw=w_to_kw(need),
                 covered_kw=w_to_kw(recommendation.covered_w.get(i, 0)),
                 short_kw=w_to_kw(recommendation.short_w.get(i, 0)))
        for i, need in sorted(recommendation.need_w.items())
    ]
    gap = recommendation.mip_gap
    return RecommendationView(
        recommendation=recommendation,
        chosen=chosen,
        isps=isps,
        expected_cost=str(recommendation.total_cost_eur),
        gap=f"{gap:.2%}" if math.isfinite(gap) else "unknown",
    )


# --- pages -----------------------------------------------------------------------------------------------


@dso_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """My congestion points with their activity, and the latest flex requests."""
    dso = portal_dso(request)
    open_requests = _count_by_point(
        selectors.flex_requests_for_dso(dso=dso).filter(status__in=selectors.OPEN_REQUEST_STATUSES)
    )
    submitted_offers = _count_by_point(selectors.flex_offers_for_dso(dso=dso).filter(status=FlexOffer.Status.SUBMITTED))
    orders = _count_by_point(selectors.flex_orders_for_dso(dso=dso))
    points = [
        PointRow(
            point=point,
            open_requests=open_requests.get(point.pk, 0),
            submitted_offers=submitted_offers.get(point.pk, 0),
            orders=orders.get(point.pk, 0),
        )
        for point in selectors.congestion_points_for_dso(dso=dso)
    ]
    latest = selectors.flex_requests_for_dso(dso=dso).order_by("-created_at")[:LATEST_REQUESTS]
    return render(request, "portal/dashboard.html", {
        "points": points,
        "latest": [RequestSummary.of(r) for r in latest],
    })


@dso_required
def congestion_point_detail(request: HttpRequest, pk: UUID) -> HttpResponse:
    dso = portal_dso(request)
    point = get_object_or_404(selectors.congestion_points_for_dso(dso=dso), pk=pk)
    requests = (
        selectors.flex_requests_for_dso(dso=dso)
        .filter(congestion_point=point)
        .annotate(open_offers=Count("offers", filter=Q(offers__status=FlexOffer.Status.SUBMITTED)))
        .order_by("-created_at")
    )
    return render(request, "portal/congestion_point_detail.html", {
        "point": point,
        "requests": [RequestSummary.of(r) for r in requests],
    })


@dso_required
def flex_request_create(request: HttpRequest, pk: UUID) -> HttpResponse:
    """A form in local time and kW; the service validates it as a UFTP receiver would and opens the request."""
    dso = portal_dso(request)
    point = get_object_or_404(selectors.congestion_points_for_dso(dso=dso), pk=pk)
    form = FlexRequestCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            flex_request = services.flex_request_create(
                dso=dso,
                congestion_point=point,
                period=form.cleaned_data["period"],
                isps=form.isp_bands(),
                expires_at=form.expiry(),
                actor=_actor(request),
            )
        except ApplicationError as error:
            form.add_application_error(error)
        else:
            summary = RequestSummary.of(flex_request)
            messages.success(
                request,
                f"Flex request opened for {point.name} on {flex_request.period:%a %d %b %Y}, {summary.window}; "
                f"offers due by {timezone.localtime(flex_request.expires_at):%d %b %H:%M}.",
            )
            return redirect("portal:flex-request-detail", pk=flex_request.pk)
    return render(request, "portal/flex_request_form.html", {"point": point, "form": form})


@dso_required
@require_safe
def flex_request_detail(request: HttpRequest, pk: UUID) -> HttpResponse:
    """The request per ISP, a chart of requested vs offered vs ordered, the clearing recommendation, and the
    offers' options with Accept (and activation factor) / Reject. Reads only: nothing is ordered here."""
    dso = portal_dso(request)
    flex_request = get_object_or_404(selectors.flex_requests_for_dso(dso=dso), pk=pk)
    offers = list(selectors.flex_offers_for_dso(dso=dso).filter(flex_request=flex_request).select_related("order"))
    ordered = selectors.flex_request_ordered_power_by_isp(flex_request=flex_request)
    live_offers = (FlexOffer.Status.SUBMITTED, FlexOffer.Status.ACCEPTED)
    offered = _sum_by_isp(
        item for offer in offers if offer.status in live_offers for item in _largest_option_by_isp(offer).items()
    )
    rows = list(flex_request.isps.all())
    requested_rows = [r for r in rows if r.disposition == FlexRequestIsp.Disposition.REQUESTED]
    requested_isps = [r.isp for r in requested_rows]

    def row_view(row: FlexRequestIsp, *, with_totals: bool) -> IspRowView:
        return IspRowView(
            index=row.isp,
            label=isp_label(flex_request.period, row.isp),
            disposition=row.get_disposition_display(),
            min_kw=w_to_kw(row.min_power_w),
            max_kw=w_to_kw(row.max_power_w),
            offered_kw=w_to_kw(offered.get(row.isp, 0)) if with_totals else None,
            ordered_kw=w_to_kw(ordered.get(row.isp, 0)) if with_totals else None,
        )

    offer_views = sorted(
        (_offer_view(offer, requested_isps) for offer in offers),
        # Open offers first, cheapest option per kWh first; then the decided ones, newest first.
        key=lambda v: (not v.open, v.cheapest_eur_per_kwh if v.open and v.cheapest_eur_per_kwh is not None
                       else Decimal(0), -v.offer.created_at.timestamp()),
    )
    at = clock.now()
    recommendation = None
    if flex_request.status in selectors.OPEN_REQUEST_STATUSES and any(
        view.open and view.offer.expires_at > at for view in offer_views
    ):
        recommendation = _recommendation_view(
            services.flex_request_recommend(flex_request=flex_request, dso=dso), offer_views
        )
    conversation = (
        selectors.flex_requests_for_dso(dso=dso)
        .filter(conversation_id=flex_request.conversation_id)
        .prefetch_related(None)
    )
    return render(request, "portal/flex_request_detail.html", {
        "flex_request": flex_request,
        "summary": RequestSummary.of(flex_request),
        "requested_rows": [row_view(r, with_totals=True) for r in requested_rows],
        "available_rows": [row_view(r, with_totals=False) for r in rows if r not in requested_rows],
        "offers": offer_views,
        "chart": _request_chart(
            period=flex_request.period,
            requested={r.isp: r.requested_reduction_w for r in requested_rows},
            offered=offered,
            ordered=ordered,
        ),
        "recommendation": recommendation,
        "cancellable": flex_request.status in CANCELLABLE_REQUEST_STATUSES,
        "revisable": flex_request.status in REVISABLE_REQUEST_STATUSES,
        "newer_revision": conversation.filter(revision__gt=flex_request.revision).order_by("-revision").first(),
        "previous_revision": conversation.filter(revision__lt=flex_request.revision).order_by("-revision").first(),
        "now": at,
    })


@dso_required
def flex_request_revise(request: HttpRequest, pk: UUID) -> HttpResponse:
    """A new revision of a draft or open request (same day and congestion point); the old one is superseded."""
    dso = portal_dso(request)
    flex_request = get_object_or_404(selectors.flex_requests_for_dso(dso=dso), pk=pk)
    form = FlexRequestReviseForm(request.POST or None, flex_request=flex_request)
    if request.method == "POST" and form.is_valid():
        try:
            revision = services.flex_request_revise(
                flex_request=flex_request,
                dso=dso,
                isps=form.isp_bands(),
                expires_at=form.expiry(),
                actor=_actor(request),
            )
        except ApplicationError as error:
            form.add_application_error(error)
        else:
            messages.success(
                request,
                f"Revision {revision.revision} {'opened' if revision.status == FlexRequest.Status.OPEN else 'saved'}; "
                f"revision {flex_request.revision} is superseded and its open offers were rejected.",
            )
            return redirect("portal:flex-request-detail", pk=revision.pk)
    return render(request, "portal/flex_request_form.html", {
        "point": flex_request.congestion_point,
        "form": form,
        "revising": flex_request,
        "revisable": flex_request.status in REVISABLE_REQUEST_STATUSES,
    })


@dso_required
@require_POST
def flex_request_order_recommendation(request: HttpRequest, pk: UUID) -> HttpResponse:
    """Order the recommendation the DSO saw, all chosen options in one go, or nothing if it has changed."""
    dso = portal_dso(request)
    flex_request = get_object_or_404(selectors.flex_requests_for_dso(dso=dso), pk=pk)
    form = RecommendationOrderForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Nothing was ordered: the recommendation's cost was missing. Review it and try again.")
        return redirect("portal:flex-request-detail", pk=flex_request.pk)
    try:
        orders = services.flex_request_order_recommendation(
            flex_request=flex_request, dso=dso, actor=_actor(request),
            expected_cost_eur=form.cleaned_data["expected_cost_eur"],
        )
    except ApplicationError as error:
        messages.error(request, f"Nothing was ordered: {error.message}")
    else:
        total = sum((order.price_eur for order in orders), Decimal(0))
        messages.success(
            request,
            f"Recommendation ordered: {len(orders)} order{'s' if len(orders) != 1 else ''} "
            f"({', '.join(order.order_reference for order in orders)}) for € {total:.2f}.",
        )
    return redirect("portal:flex-request-detail", pk=flex_request.pk)


@dso_required
@require_POST
def flex_request_cancel(request: HttpRequest, pk: UUID) -> HttpResponse:
    dso = portal_dso(request)
    flex_request = get_object_or_404(selectors.flex_requests_for_dso(dso=dso), pk=pk)
    try:
        services.flex_request_cancel(flex_request=flex_request, actor=_actor(request))
    except ApplicationError as error:
        messages.error(request, f"The request was not cancelled: {error.message}")
    else:
        messages.success(request, "Flex request cancelled; its open offers were rejected. Placed orders stay binding.")
    return redirect("portal:flex-request-detail", pk=flex_request.pk)


def _after_offer_decision(offer: FlexOffer) -> HttpResponse:
    if offer.flex_request_id:
        return redirect("portal:flex-request-detail", pk=offer.flex_request_id)
    return redirect("portal:congestion-point", pk=offer.congestion_point_id)


@dso_required
@require_POST
def flex_offer_accept(request: HttpRequest, pk: UUID) -> HttpResponse:
    """Buy one option of the offer at an activation factor: the service places a binding FlexOrder (or explains
    why not)."""
    dso = portal_dso(request)
    offer = get_object_or_404(selectors.flex_offers_for_dso(dso=dso), pk=pk)
    form = OfferAcceptForm(request.POST)
    if not form.is_valid():
        problems = " ".join(str(error) for errors in form.errors.values() for error in errors)
        messages.error(request, f"The offer from {offer.aggregator.name} was not accepted: {problems}")
        return _after_offer_decision(offer)
    try:
        order = services.flex_offer_accept(
            flex_offer=offer, dso=dso, actor=_actor(request),
            option_reference=form.cleaned_data["option_reference"],
            activation_factor=form.cleaned_data["activation_factor"],
        )
    except ApplicationError as error:
        messages.error(request, f"The offer from {offer.aggregator.name} was not accepted: {error.message}")
    else:
        option = order.option.option_reference if order.option else ""
        messages.success(
            request,
            f"Order {order.order_reference} placed with {offer.aggregator.name}: option {option} "
            f"at activation factor {order.activation_factor:.2f}, for € {order.price_eur:.2f}.",
        )
    return _after_offer_decision(offer)


@dso_required
@require_POST
def flex_offer_reject(request: HttpRequest, pk: UUID) -> HttpResponse:
    dso = portal_dso(request)
    offer = get_object_or_404(selectors.flex_offers_for_dso(dso=dso), pk=pk)
    try:
        services.flex_offer_reject(flex_offer=offer, dso=dso, actor=_actor(request))
    except ApplicationError as error:
        messages.error(request, f"The offer from {offer.aggregator.name} was not rejected: {error.message}")
    else:
        messages.success(request, f"Offer from {offer.aggregator.name} rejected.")
    return _after_offer_decision(offer)


@dataclass(frozen=True)
class OrderRow:
    order: FlexOrder
    energy_kwh: Decimal


@dso_required
def order_list(request: HttpRequest) -> HttpResponse:
    dso = portal_dso(request)
    orders = selectors.flex_orders_for_dso(dso=dso).select_related("option").order_by("-period", "-created_at")
    rows = [OrderRow(order=o, energy_kwh=_kwh(row.power_w for row in o.isps.all())) for o in orders]
    return render(request, "portal/order_list.html", {"orders": rows})


@dataclass(frozen=True)
class OrderIspView:
    label: str
    index: int
    kw: Decimal
    kwh: Decimal


@dso_required
def order_detail(request: HttpRequest, pk: UUID) -> HttpResponse:
    """An order's ISPs and its audit trail (who did what, when)."""
    dso = portal_dso(request)
    order = get_object_or_404(
        selectors.flex_orders_for_dso(dso=dso).select_related("flex_offer", "option", "contract", "created_by"), pk=pk
    )
    isps = [
        OrderIspView(label=isp_label(order.period, row.isp), index=row.isp, kw=w_to_kw(row.power_w),
                     kwh=_kwh([row.power_w]))
        for row in order.isps.all()
    ]
    return render(request, "portal/order_detail.html", {
        "order": order,
        "isps": isps,
        "energy_kwh": _kwh(row.power_w for row in order.isps.all()),
        "flex_request_id": order.flex_offer.flex_request_id if order.flex_offer else None,
        "audit": audit_trail(order),
    })
