"""The aggregator's cost model for pricing offers: driver compensation per kWh shifted, plus a margin."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings

MINIMUM_PRICE_EUR = Decimal("0.01")


def offer_price_eur(*, energy_shift_kwh: float) -> Decimal:
    """Asking price for an offer that moves `energy_shift_kwh` out of the requested ISPs (EUR, 2 decimals)."""
    compensation = Decimal(settings.AGGREGATOR_COMPENSATION_EUR_PER_KWH)
    margin = Decimal(settings.AGGREGATOR_MARGIN_PCT) / Decimal(100)
    raw = Decimal(str(round(energy_shift_kwh, 6))) * compensation * (1 + margin)
    return max(MINIMUM_PRICE_EUR, raw.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
