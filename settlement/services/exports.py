"""Statement exports: UFTP 3.1.0 FlexSettlement XML, CSV (one row per order and ISP).

XML mapping (UFTP-BRIEF 4.11, 9.3):
- FlexSettlement extends the response type in 3.x, so it carries Result="Accepted" (UFTP-BRIEF 10.1).
- FlexOrderSettlement/@Price is the order's price; @Penalty = Price - net amount, i.e. the value of the
  undelivered part plus the deficiency penalty, so that @NetSettlement = Price - Penalty is what the statement
  pays for the order (the "[inference]" mapping of UFTP-BRIEF 9.3).
- ISP: BaselinePower, OrderedFlexPower (signed), ActualPower (metered), DeliveredFlexPower (signed like the
  order), PowerDeficiency; consecutive ISPs with equal values collapse into one Start/Duration run.
- D-PrognosisMessageID for the D-prognosis baseline, else BaselineReference = "<method>:<baseline record id>".
- The XSD requires at least one ContractSettlement (UFTP-BRIEF 10.2): one per contract the orders were placed
  under (reserved power from the contract window and its reservation updates, ordered power from the orders);
  with no contract at all, one ContractSettlement without ContractID stating nothing reserved (ReservedPower 0).
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET  # noqa: S405  (we only build XML here; nothing is parsed)
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from common import isp as isp_time
from market.models import FlexContract, FlexOrder, FlexReservationUpdate
from settlement.baselines.base import DEFAULT_METHOD
from settlement.models import OrderSettlement, SettlementLine, Statement

UFTP_VERSION = "3.1.0"
AMOUNT = Decimal("0.0001")


def _amount(value: Decimal) -> str:
    return format(value.quantize(AMOUNT), "f")


def _settlements(statement: Statement) -> list[OrderSettlement]:
    return list(
        OrderSettlement.objects.filter(statement=statement)
        .select_related("flex_order__congestion_point", "flex_order__contract", "d_prognosis", "baseline")
        .prefetch_related("lines")
        .order_by("flex_order__period", "flex_order__order_reference")
    )


def _runs(rows: Sequence[tuple[int, tuple[Any, ...]]]) -> list[tuple[int, int, tuple[Any, ...]]]:
    """(start, duration, values) runs of consecutive ISPs with equal values."""
    runs: list[tuple[int, int, tuple[Any, ...]]] = []
    for isp, values in rows:
        if runs and runs[-1][0] + runs[-1][1] == isp and runs[-1][2] == values:
            start, duration, _ = runs[-1]
            runs[-1] = (start, duration + 1, values)
        else:
            runs.append((isp, 1, values))
    return runs


def _isp_attributes(start: int, duration: int) -> dict[str, str]:
    attributes = {"Start": str(start)}
    if duration > 1:
        attributes["Duration"] = str(duration)
    return attributes


def _order_element(parent: ET.Element, settlement: OrderSettlement) -> None:
    order = settlement.flex_order
    attributes = {"OrderReference": order.order_reference, "Period": order.period.isoformat()}
    if order.contract is not None:
        attributes["ContractID"] = order.contract.contract_id
    if settlement.baseline_method == DEFAULT_METHOD and settlement.d_prognosis is not None:
        attributes["D-PrognosisMessageID"] = str(settlement.d_prognosis.message_id)
    elif settlement.baseline is not None:
        attributes["BaselineReference"] = settlement.baseline.reference
    attributes.update({
        "CongestionPoint": order.congestion_point.entity_address,
        "Price": _amount(order.price_eur),
        "Penalty": _amount(order.price_eur - settlement.total_eur),
        "NetSettlement": _amount(settlement.total_eur),
    })
    element = ET.SubElement(parent, "FlexOrderSettlement", attributes)
    rows = []
    for line in sorted(settlement.lines.all(), key=lambda item: item.isp):
        sign = -1 if line.ordered_w < 0 else 1
        rows.append((line.isp, (line.baseline_w, line.ordered_w, line.measured_w, sign * line.delivered_w,
                                line.deficiency_w)))
    for start, duration, (baseline, ordered, actual, delivered, deficiency) in _runs(rows):
        ET.SubElement(element, "ISP", {
            **_isp_attributes(start, duration), "BaselinePower": str(baseline), "OrderedFlexPower": str(ordered),
            "ActualPower": str(actual), "DeliveredFlexPower": str(delivered), "PowerDeficiency": str(deficiency),
        })


def _reserved_w(contract: FlexContract, day: date, isps: Iterable[int]) -> dict[int, int]:
    """Reserved power per ISP: the latest accepted reservation update of the day, else the contract window."""
    update = (FlexReservationUpdate.objects.filter(contract=contract, period=day,
                                                   status=FlexReservationUpdate.Status.ACCEPTED)
              .order_by("-created_at").prefetch_related("isps").first())
    if update is not None:
        by_isp = {row.isp: row.power_w for row in update.isps.all()}
        return {isp: by_isp.get(isp, 0) for isp in isps}
    reserved = {}
    for isp in isps:
        local = isp_time.isp_slot(day, isp).local_start.time()
        inside = (contract.window_start is not None and contract.window_end is not None
                  and contract.window_start <= local < contract.window_end)
        reserved[isp] = contract.reserved_power_w if inside else 0
    return reserved


def _contract_elements(parent: ET.Element, settlements: Sequence[OrderSettlement], period_start: date) -> None:
    ordered: dict[FlexContract, dict[date, dict[int, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for settlement in settlements:
        order: FlexOrder = settlement.flex_order
        if order.contract is not None:
            for line in settlement.lines.all():
                ordered[order.contract][order.period][line.isp] += line.ordered_w
    if not ordered:
        empty = ET.SubElement(parent, "ContractSettlement")
        empty_day = ET.SubElement(empty, "Period", {"Period": period_start.isoformat()})
        ET.SubElement(empty_day, "ISP", {"Start": "1", "ReservedPower": "0"})
        return
    for contract, days in sorted(ordered.items(), key=lambda item: item[0].contract_id):
        element = ET.SubElement(parent, "ContractSettlement", {"ContractID": contract.contract_id})
        for day, powers in sorted(days.items()):
            reserved = _reserved_w(contract, day, powers)
            period = ET.SubElement(element, "Period", {"Period": day.isoformat()})
            rows = [(isp, (reserved[isp], powers[isp])) for isp in sorted(powers)]
            for start, duration, (reserved_w, ordered_w) in _runs(rows):
                ET.SubElement(period, "ISP", {**_isp_attributes(start, duration), "ReservedPower": str(reserved_w),
                                              "OrderedPower": str(ordered_w)})


def flex_settlement_xml(statement: Statement) -> bytes:
    """The statement version as a UFTP 3.1.0 FlexSettlement message (DSO -> AGR), UTF-8."""
    settlements = _settlements(statement)
    root = ET.Element("FlexSettlement", {
        "Version": UFTP_VERSION,
        "SenderDomain": statement.dso.domain,
        "RecipientDomain": statement.aggregator.domain,
        "TimeStamp": statement.issued_at.astimezone(isp_time.MARKET_TZ).isoformat(),
        "MessageID": str(statement.message_id),
        "ConversationID": str(statement.pk),
        "Result": "Accepted",
        "PeriodStart": statement.period_start.isoformat(),
        "PeriodEnd": statement.period_end.isoformat(),
        "Currency": statement.currency,
    })
    for settlement in settlements:
        _order_element(root, settlement)
    _contract_elements(root, settlements, statement.period_start)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


CSV_COLUMNS = [
    "statement", "version", "dso", "aggregator", "period_start", "period_end", "currency", "order_reference",
    "period", "congestion_point", "baseline_method", "isp", "isp_start", "baseline_w", "measured_w", "ordered_w",
    "realised_w", "delivered_w", "deficiency_w", "payment_eur", "penalty_eur", "paid_eur",
]


def statement_csv(statement: Statement) -> str:
    """One row per order and ISP, with the statement's identity repeated so rows stand alone."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    head = [str(statement.pk), statement.version, statement.dso.domain, statement.aggregator.domain,
            statement.period_start.isoformat(), statement.period_end.isoformat(), statement.currency]
    for settlement in _settlements(statement):
        order = settlement.flex_order
        lines: list[SettlementLine] = sorted(settlement.lines.all(), key=lambda item: item.isp)
        for line in lines:
            writer.writerow([
                *head, order.order_reference, order.period.isoformat(), order.congestion_point.ean,
                settlement.baseline_method, line.isp, line.isp_start.astimezone(isp_time.MARKET_TZ).isoformat(),
                line.baseline_w, line.measured_w, line.ordered_w, line.realised_w, line.delivered_w,
                line.deficiency_w, line.payment_eur, line.penalty_eur, line.paid_eur,
            ])
    return buffer.getvalue()
