"""Builders for market objects in tests: a valid request, prognosis and offer with one call each."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from common import isp as isp_time
from market import services
from market.models import CongestionPoint, DPrognosis, FlexOffer, FlexRequest, Participant
from market.services import IspBand, IspPower, OfferOptionInput

EVENING = range(69, 85)  # 17:00-21:00 on a 96-ISP day


def evening_isps(day: date) -> list[int]:
    """ISP indexes of 17:00-21:00 local on `day` (shifted on DST days)."""
    return [slot.index for slot in isp_time.isp_slots(day) if 17 <= slot.local_start.hour < 21]


def make_request(
    *, dso: Participant, point: CongestionPoint, day: date, reduction_w: int = 20_000, expires_at: datetime | None = None,
    isps: list[int] | None = None,
) -> FlexRequest:
    indexes = isps or evening_isps(day)
    bands = [IspBand(isp=i, disposition="Requested", min_power_w=-2 * reduction_w, max_power_w=-reduction_w)
             for i in indexes]
    return services.flex_request_create(
        dso=dso, congestion_point=point, period=day, isps=bands,
        expires_at=expires_at or isp_time.isp_start(day, indexes[0]) - timedelta(hours=1),
    )


def make_prognosis(*, aggregator: Participant, point: CongestionPoint, day: date, power_w: int = 50_000) -> DPrognosis:
    rows = [IspPower(isp=i, power_w=power_w) for i in range(1, isp_time.isp_count(day) + 1)]
    return services.d_prognosis_submit(aggregator=aggregator, congestion_point=point, period=day, isps=rows)


def make_offer(
    *, aggregator: Participant, request: FlexRequest, power_w: int = -15_000, price: str = "12.50",
    isps: list[int] | None = None, min_activation_factor: str = "1.00",
) -> FlexOffer:
    if not request.period or not aggregator:
        raise ValueError("request and aggregator required")
    if not DPrognosis.objects.filter(aggregator=aggregator, congestion_point=request.congestion_point,
                                     period=request.period, status=DPrognosis.Status.ACCEPTED).exists():
        make_prognosis(aggregator=aggregator, point=request.congestion_point, day=request.period)
    indexes = isps or [row.isp for row in request.isps.filter(disposition="Requested")]
    return services.flex_offer_submit(
        aggregator=aggregator, congestion_point=request.congestion_point, period=request.period,
        options=[option(power_w=power_w, price=price, isps=indexes, min_activation_factor=min_activation_factor)],
        expires_at=request.expires_at, flex_request=request,
    )


def option(*, power_w: int, price: str, isps: list[int], reference: str = "1",
           min_activation_factor: str = "1.00") -> OfferOptionInput:
    """One offer option with the same power on every ISP."""
    return OfferOptionInput(option_reference=reference, price_eur=Decimal(price),
                            min_activation_factor=Decimal(min_activation_factor),
                            isps=[IspPower(isp=i, power_w=power_w) for i in isps])
