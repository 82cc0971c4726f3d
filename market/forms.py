"""DSO portal forms: turn what a grid operator types (local times, kW) into the market services' input (ISPs, W).

Besides the request form (also used, with the day fixed, to revise a request) there are two small POST forms:
which option of an offer to buy and how much of it, and the cost the DSO saw when ordering a recommendation.

Local wall-clock times are matched to ISPs only through common.isp (isp_slots), so DST days with 92 or
100 ISPs come out right: on the autumn day a window over 02:00-03:00 covers both runs of that hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django import forms

from common import isp as isp_time
from common import time as clock
from common.exceptions import ApplicationError
from market.models import FlexRequest, FlexRequestIsp
from market.services import IspBand

MIDNIGHT = time(0, 0)
DEFAULT_EXPIRY_LEAD = timedelta(hours=1)
# Note: a request that expires the moment it opens is useless; when the default would already have
# passed, give aggregators at least this long (still capped at the window start).
MINIMUM_EXPIRY_LEAD = timedelta(minutes=15)


FULL_ACTIVATION = Decimal("1.00")
CENT = Decimal("0.01")


def _kw_to_w(value_kw: Decimal) -> int:
    return int((value_kw * 1000).to_integral_value())


def _w_to_kw(power_w: int) -> Decimal:
    return Decimal(power_w) / 1000


def default_market_day() -> date:
    """Tomorrow's market day (Europe/Amsterdam)."""
    return isp_time.market_day_of(clock.now()) + timedelta(days=1)


@dataclass(frozen=True)
class RequestWindow:
    """The ISPs a DSO's local-time window covers on one market day."""

    period: date
    slots: list[isp_time.IspSlot]

    @property
    def start(self) -> datetime:
        return self.slots[0].start

    @property
    def end(self) -> datetime:
        return self.slots[-1].end


def request_window(*, period: date, start: time, end: time) -> RequestWindow:
    """ISPs of `period` whose local start lies in [start, end); an end of 00:00 means the end of the day."""
    slots = [
        slot
        for slot in isp_time.isp_slots(period)
        if start <= slot.local_start.time() and (end == MIDNIGHT or slot.local_start.time() < end)
    ]
    return RequestWindow(period=period, slots=slots)


class FlexRequestCreateForm(forms.Form):
    """A downward flex request for one window of one market day, with optional headroom for the other ISPs."""

    period = forms.DateField(
        label="Market day",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        help_text="Calendar day in Europe/Amsterdam.",
    )
    window_start = forms.TimeField(
        label="Window start",
        initial=time(17, 0),
        widget=forms.TimeInput(attrs={"type": "time", "step": 900}, format="%H:%M"),
        help_text="Local time, in 15-minute steps.",
    )
    window_end = forms.TimeField(
        label="Window end",
        initial=time(21, 0),
        widget=forms.TimeInput(attrs={"type": "time", "step": 900}, format="%H:%M"),
        help_text="Local time, exclusive; 00:00 means midnight at the end of the day.",
    )
    min_reduction_kw = forms.DecimalField(
        label="Reduction needed (kW)",
        min_value=Decimal("0.1"),
        max_digits=10,
        decimal_places=1,
        widget=forms.NumberInput(attrs={"step": "0.1", "inputmode": "decimal"}),
        help_text="The least reduction that relieves the congestion, in every ISP of the window.",
    )
    max_reduction_kw = forms.DecimalField(
        label="Largest useful reduction (kW)",
        required=False,
        min_value=Decimal("0.1"),
        max_digits=10,
        decimal_places=1,
        widget=forms.NumberInput(attrs={"step": "0.1", "inputmode": "decimal"}),
        help_text="Defaults to twice the reduction needed.",
    )
    headroom_kw = forms.DecimalField(
        label="Headroom outside the window (kW)",
        required=False,
        min_value=Decimal("0"),
        max_digits=10,
        decimal_places=1,
        widget=forms.NumberInput(attrs={"step": "0.1", "inputmode": "decimal"}),
        help_text="How far load may move up or down in every other ISP of the day (Available).",
    )
    expires_at = forms.DateTimeField(
        label="Offers due by",
        required=False,
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": 60}, format="%Y-%m-%dT%H:%M"),
        help_text="Local time. Default: 1 hour before the window starts.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["period"].initial = default_market_day
        self.window: RequestWindow | None = None

    def clean_window_start(self) -> time:
        return self._quarter_hour("window_start")

    def clean_window_end(self) -> time:
        return self._quarter_hour("window_end")

    def _quarter_hour(self, name: str) -> time:
        value: time = self.cleaned_data[name]
        if value.minute % isp_time.ISP_MINUTES or value.second or value.microsecond:
            raise forms.ValidationError("Use a quarter-hour (:00, :15, :30 or :45).", code="not_isp_aligned")
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        period: date | None = cleaned.get("period")
        start: time | None = cleaned.get("window_start")
        end: time | None = cleaned.get("window_end")
        if start is not None and end is not None and end != MIDNIGHT and end <= start:
            self.add_error("window_end", forms.ValidationError("The window must end after it starts.",
                                                               code="window_order"))
        elif period is not None and start is not None and end is not None:
            window = request_window(period=period, start=start, end=end)
            if not window.slots:
                self.add_error("window_start", "That window covers no ISP of the day (the clock skips this hour).")
            else:
                self.window = window

        min_kw: Decimal | None = cleaned.get("min_reduction_kw")
        max_kw: Decimal | None = cleaned.get("max_reduction_kw")
        if min_kw is not None and max_kw is not None and max_kw < min_kw:
            self.add_error("max_reduction_kw", "The largest useful reduction cannot be below the reduction needed.")

        expires_at: datetime | None = cleaned.get("expires_at")
        if self.window is not None and expires_at is not None and expires_at > self.window.start:
            self.add_error("expires_at", "Offers must be due no later than the start of the window.")
        return cleaned

    # --- service input (call only after is_valid()) ------------------------------------------------------

    def isp_bands(self) -> list[IspBand]:
        """Requested bands for the window; Available bands for every other ISP when headroom is given."""
        window = self._valid_window()
        min_kw: Decimal = self.cleaned_data["min_reduction_kw"]
        max_kw: Decimal = self.cleaned_data["max_reduction_kw"] or min_kw * 2
        headroom_kw: Decimal | None = self.cleaned_data["headroom_kw"]
        in_window = {slot.index for slot in window.slots}
        bands = [
            IspBand(isp=index, disposition=FlexRequestIsp.Disposition.REQUESTED,
                    min_power_w=-_kw_to_w(max_kw), max_power_w=-_kw_to_w(min_kw))
            for index in sorted(in_window)
        ]
        if headroom_kw is not None:
            headroom_w = _kw_to_w(headroom_kw)
            bands += [
                IspBand(isp=slot.index, disposition=FlexRequestIsp.Disposition.AVAILABLE,
                        min_power_w=-headroom_w, max_power_w=headroom_w)
                for slot in isp_time.isp_slots(window.period)
                if slot.index not in in_window
            ]
        return sorted(bands, key=lambda band: band.isp)

    def expiry(self) -> datetime:
        """The given expiry, or 1 hour before the window; never after the window start, never already past."""
        window = self._valid_window()
        given: datetime | None = self.cleaned_data["expires_at"]
        if given is not None:
            return given
        window_start = window.start
        return min(window_start, max(window_start - DEFAULT_EXPIRY_LEAD, clock.now() + MINIMUM_EXPIRY_LEAD))

    def _valid_window(self) -> RequestWindow:
        if self.window is None:
            raise RuntimeError("The form has no valid window; call is_valid() first.")
        return self.window

    def add_application_error(self, error: ApplicationError) -> None:
        """Show a service refusal on the field it names, or above the form when no field matches."""
        field = error.field if error.field in self.fields else None
        self.add_error(field, forms.ValidationError(error.message, code=error.code))


def revision_initial(flex_request: FlexRequest) -> dict[str, Any]:
    """The request form's fields as the request now stands, so a revision starts from what was asked."""
    rows = list(flex_request.isps.all())
    requested = [row for row in rows if row.disposition == FlexRequestIsp.Disposition.REQUESTED]
    available = [row for row in rows if row.disposition == FlexRequestIsp.Disposition.AVAILABLE]
    initial: dict[str, Any] = {"period": flex_request.period, "expires_at": flex_request.expires_at}
    if requested:
        first = isp_time.isp_slot(flex_request.period, min(row.isp for row in requested))
        last = isp_time.isp_slot(flex_request.period, max(row.isp for row in requested))
        initial.update(
            window_start=first.local_start.time(),
            window_end=last.end.astimezone(isp_time.MARKET_TZ).time(),
            min_reduction_kw=_w_to_kw(max(row.requested_reduction_w for row in requested)),
            max_reduction_kw=_w_to_kw(max(-row.min_power_w for row in requested)),
        )
    if available:
        initial["headroom_kw"] = _w_to_kw(max(row.max_power_w for row in available))
    return initial


class FlexRequestReviseForm(FlexRequestCreateForm):
    """The request form for a new revision: same congestion point and market day, everything else editable."""

    def __init__(self, *args: Any, flex_request: FlexRequest, **kwargs: Any) -> None:
        kwargs.setdefault("initial", revision_initial(flex_request))
        super().__init__(*args, **kwargs)
        # Note: a disabled field ignores what is posted and keeps its initial value, so the day cannot change.
        self.fields["period"].disabled = True
        self.fields["period"].help_text = "A revision keeps the request's market day and congestion point."


class OfferAcceptForm(forms.Form):
    """Which option of an offer to buy and at what activation factor; the service checks the option's minimum."""

    option_reference = forms.CharField(max_length=64, required=False)
    activation_factor = forms.DecimalField(
        required=False, min_value=CENT, max_value=FULL_ACTIVATION, max_digits=3, decimal_places=2,
    )

    def clean_option_reference(self) -> str | None:
        """Blank means "the offer's only option" (the service refuses a blank one when there are several)."""
        return self.cleaned_data["option_reference"] or None

    def clean_activation_factor(self) -> Decimal:
        value: Decimal | None = self.cleaned_data["activation_factor"]
        return FULL_ACTIVATION if value is None else value.quantize(CENT)


class RecommendationOrderForm(forms.Form):
    """The total cost of the recommendation as shown: the service orders nothing if the cost has moved since."""

    expected_cost_eur = forms.DecimalField(min_value=Decimal(0), max_digits=14, decimal_places=2)
