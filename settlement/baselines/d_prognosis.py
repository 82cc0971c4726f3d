"""USEF default: the baseline is the aggregator's D-prognosis (the one its offer, hence the order, referenced)."""

from __future__ import annotations

from typing import Any, ClassVar

from common.exceptions import ApplicationError
from settlement.baselines.base import BaselineMethod, BaselineRequest, BaselineResult


class UsefDPrognosis(BaselineMethod):
    default_parameters: ClassVar[dict[str, Any]] = {}

    def compute(self, request: BaselineRequest, parameters: dict[str, Any]) -> BaselineResult:
        prognosis = request.d_prognosis
        if prognosis is None:
            raise ApplicationError("The order has no D-prognosis baseline.", code="no_baseline", field="flex_order")
        if request.d_prognosis_w is not None:
            values = {isp: w for isp, w in request.d_prognosis_w.items() if isp in set(request.isps)}
        else:
            values = dict(prognosis.isps.filter(isp__in=list(request.isps)).values_list("isp", "power_w"))
        missing = sorted(set(request.isps) - set(values))
        if missing:
            raise ApplicationError(f"The D-prognosis has no value for ISPs {missing[:10]}.", code="no_baseline",
                                   field="flex_order")
        return BaselineResult(values_w=values, inputs={"d_prognosis": str(prognosis.pk),
                                                       "revision": prognosis.revision})
