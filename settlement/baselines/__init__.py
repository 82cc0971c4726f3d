"""Settlement baselines: what the aggregator's portfolio would have drawn without the flex order.

One small interface (`BaselineMethod.compute(request, parameters) -> BaselineResult`), chosen per market or per
contract by dotted path (FlexContract.baseline_method overrides Market.baseline_method; blank = USEF D-prognosis).
Every result is stored as a BaselineRecord with the method, the parameters as used and what it drew on.

Methods (ANCHORS.md section 4):
- settlement.baselines.d_prognosis.UsefDPrognosis: the AGR's D-prognosis the order referenced (default).
- settlement.baselines.ev_counterfactual.EvCounterfactual: metered load with the controlled EV draw replaced by
  what the sessions would have drawn uncontrolled.
- settlement.baselines.historical.HighXOfY: high X of Y similar days, with a capped, upward-only same-day
  adjustment.
- settlement.baselines.historical.NodesFiveDay: the same ISP over the 5 preceding working days.
- settlement.baselines.historical.MeterBeforeAfter: metered load just before and just after the event window.
"""

from settlement.baselines.base import (
    DEFAULT_METHOD,
    BaselineMethod,
    BaselineRequest,
    BaselineResult,
    baseline_method_load,
    baseline_terms_for,
)

__all__ = [
    "DEFAULT_METHOD",
    "BaselineMethod",
    "BaselineRequest",
    "BaselineResult",
    "baseline_method_load",
    "baseline_terms_for",
]
