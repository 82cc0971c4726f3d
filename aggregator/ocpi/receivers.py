"""Sessions and Locations from the CPO (pushed to our receiver interface or pulled after an outage), kept as the
CPO's objects and mapped onto the portfolio (OCPI-BRIEF 4, 5).

- A Location's EVSEs become OcpiEvse rows with their power (highest connector) and capabilities; once the operator
  links the Location to a grid connection, each EVSE is a ChargePoint of the portfolio (power and phases kept in
  step with what the CPO publishes).
- A Session at a known ChargePoint becomes a ChargingSession (aggregator.services.charging_session_create, which
  fills departure and energy from the driver or estimates); a session that turns ACTIVE, or ends before its
  expected departure, hands its congestion point to re-optimisation (charging_session_changed).
- Out-of-order pushes are dropped by `last_updated`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from aggregator import services
from aggregator.adapters.ocpi import ocpi_get_all, parse_ocpi_datetime
from aggregator.models import ChargePoint, ChargePointOperator, ChargingSession, OcpiEvse, OcpiLocation, OcpiSession
from aggregator.ocpi.transport import OcpiError
from common import time as clock
from common.exceptions import AdapterError, ApplicationError

logger = logging.getLogger("aggregator.ocpi")

SESSION_REQUIRED = ("country_code", "party_id", "id", "start_date_time", "kwh", "cdr_token", "auth_method",
                    "location_id", "evse_uid", "connector_id", "currency", "status", "last_updated")
SESSION_STATUSES = {"ACTIVE", "COMPLETED", "INVALID", "PENDING", "RESERVATION", "RESERVED"}
PORTFOLIO_STATUS = {
    "ACTIVE": ChargingSession.Status.ACTIVE,
    "PENDING": ChargingSession.Status.PENDING,
    "RESERVATION": ChargingSession.Status.PENDING,
    "RESERVED": ChargingSession.Status.PENDING,  # the spec text's spelling of RESERVATION (OCPI-BRIEF 4.1)
    "COMPLETED": ChargingSession.Status.COMPLETED,
    "INVALID": ChargingSession.Status.INVALID,
}
OPEN = (ChargingSession.Status.PENDING, ChargingSession.Status.ACTIVE)
PHASES = {"AC_1_PHASE": 1, "AC_2_PHASE": 2, "AC_2_PHASE_SPLIT": 2, "AC_3_PHASE": 3}
MIN_CHARGE_POINT_W, MAX_CHARGE_POINT_W = 1000, 350_000


def _timestamp(body: dict[str, Any], field: str, *, required: bool = True) -> datetime | None:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise OcpiError(f"{field} must be an OCPI DateTime")
    try:
        return parse_ocpi_datetime(value)
    except ValueError as exc:
        raise OcpiError(f"{field}: {exc}") from exc


def check_party(cpo: ChargePointOperator, country_code: str, party_id: str) -> None:
    """The URL's country_code/party_id must be the CPO's (or one of its CredentialsRoles): else HTTP 404."""
    parties = {(cpo.country_code.upper(), cpo.party_id.upper())}
    parties |= {(str(r.get("country_code", "")).upper(), str(r.get("party_id", "")).upper())
                for r in cpo.ocpi_roles or [] if isinstance(r, dict)}
    if (country_code.upper(), party_id.upper()) not in parties:
        raise OcpiError(f"{country_code}*{party_id} is not a party of this platform", status_code=2001,
                        http_status=404)


# --- sessions -------------------------------------------------------------------------------------------------


def session_get(*, cpo: ChargePointOperator, country_code: str, party_id: str, session_id: str) -> dict[str, Any]:
    check_party(cpo, country_code, party_id)
    stored = OcpiSession.objects.filter(cpo=cpo, session_id__iexact=session_id).first()
    if stored is None:
        raise OcpiError(f"Unknown session {session_id}", status_code=2001, http_status=404)
    return stored.data


@transaction.atomic
def session_put(*, cpo: ChargePointOperator, country_code: str, party_id: str, session_id: str, body: Any) -> bool:
    """A full Session object (new or replacement). Returns True when it was new (HTTP 201)."""
    check_party(cpo, country_code, party_id)
    if not isinstance(body, dict):
        raise OcpiError("The body must be a Session object")
    missing = [field for field in SESSION_REQUIRED if body.get(field) in (None, "")]
    if missing:
        raise OcpiError(f"Session lacks required fields: {', '.join(missing)}")
    if str(body["id"]).upper() != session_id.upper():
        raise OcpiError(f"Session id {body['id']!r} differs from the URL's {session_id!r}")
    if (str(body["country_code"]).upper(), str(body["party_id"]).upper()) != (country_code.upper(), party_id.upper()):
        raise OcpiError("country_code/party_id in the body differ from the URL's")
    stored = OcpiSession.objects.select_for_update().filter(cpo=cpo, session_id__iexact=session_id).first()
    return _session_store(cpo=cpo, stored=stored, data=dict(body))


@transaction.atomic
def session_patch(*, cpo: ChargePointOperator, country_code: str, party_id: str, session_id: str, body: Any) -> None:
    """Changed fields only; must carry last_updated; charging_periods are appended (OCPI-BRIEF 4.2)."""
    check_party(cpo, country_code, party_id)
    if not isinstance(body, dict) or "last_updated" not in body:
        raise OcpiError("A Session PATCH must contain last_updated")
    if "id" in body and str(body["id"]).upper() != session_id.upper():
        raise OcpiError("The id of a session cannot change")
    stored = OcpiSession.objects.select_for_update().filter(cpo=cpo, session_id__iexact=session_id).first()
    if stored is None:
        raise OcpiError(f"Unknown session {session_id}: PUT it first", status_code=2001, http_status=404)
    data = dict(stored.data)
    periods = body.get("charging_periods")
    for key, value in body.items():
        if key != "charging_periods":
            data[key] = value
    if isinstance(periods, list) and periods:
        data["charging_periods"] = list(data.get("charging_periods") or []) + periods
    _session_store(cpo=cpo, stored=stored, data=data)


def _session_store(*, cpo: ChargePointOperator, stored: OcpiSession | None, data: dict[str, Any]) -> bool:
    last_updated = _timestamp(data, "last_updated")
    assert last_updated is not None
    if stored is not None and stored.last_updated > last_updated:
        logger.info("session %s: dropped a stale update (%s < %s)", stored.session_id, last_updated,
                    stored.last_updated)
        return False
    status = str(data.get("status", "")).upper()
    if status not in SESSION_STATUSES:
        raise OcpiError(f"status {data.get('status')!r} is not a SessionStatus")
    try:
        kwh = Decimal(str(data.get("kwh", 0)))
    except InvalidOperation as exc:
        raise OcpiError("kwh must be a number") from exc
    start = _timestamp(data, "start_date_time")
    end = _timestamp(data, "end_date_time", required=False)
    fields = {
        "country_code": str(data["country_code"]).upper(), "party_id": str(data["party_id"]).upper(),
        "status": status, "location_id": str(data["location_id"]), "evse_uid": str(data["evse_uid"]),
        "kwh": kwh, "start_date_time": start, "end_date_time": end, "data": data, "last_updated": last_updated,
    }
    created = stored is None
    if stored is None:
        stored = OcpiSession.objects.create(cpo=cpo, session_id=str(data["id"]), **fields)
    else:
        for name, value in fields.items():
            setattr(stored, name, value)
        stored.save()
    _sync_portfolio_session(cpo, stored)
    return created


def _sync_portfolio_session(cpo: ChargePointOperator, stored: OcpiSession) -> None:
    """Create or move the ChargingSession this OCPI session stands for, and trigger re-optimisation when needed."""
    point = ChargePoint.objects.filter(cpo=cpo, evse_uid__iexact=stored.evse_uid).first()
    if point is None:
        return  # an EVSE outside our portfolio (not linked to a connection yet): kept, not planned
    target = PORTFOLIO_STATUS[stored.status]
    session = stored.charging_session or ChargingSession.objects.filter(
        charge_point=point, cpo_session_id__iexact=stored.session_id).first()
    if session is None:
        if target not in OPEN:
            return
        token = stored.data.get("cdr_token") or {}
        evse = OcpiEvse.objects.filter(cpo=cpo, evse_uid__iexact=stored.evse_uid).first()
        power = min(point.max_power_w, evse.max_power_w) if evse and evse.max_power_w else point.max_power_w
        try:
            session = services.charging_session_create(
                charge_point=point, cpo_session_id=stored.session_id, arrival_at=stored.start_date_time,
                max_power_w=power, token_uid=str(token.get("uid", "")) if isinstance(token, dict) else "",
                status=target, source=ChargingSession.Source.MEASURED,
            )
        except ApplicationError as exc:
            raise OcpiError(f"Session cannot be planned: {exc.message}") from exc
        OcpiSession.objects.filter(pk=stored.pk).update(charging_session=session)
        if target == ChargingSession.Status.ACTIVE:
            services.charging_session_changed(session=session, reason="session_started")
        return
    if stored.charging_session_id is None:
        OcpiSession.objects.filter(pk=stored.pk).update(charging_session=session)
    if session.status not in OPEN:
        return  # ended here already: later pushes only refine the CPO's copy
    if target == ChargingSession.Status.ACTIVE:
        ChargingSession.objects.filter(pk=session.pk).update(energy_delivered_kwh=stored.kwh, updated_at=clock.now())
        if session.status == ChargingSession.Status.PENDING:
            ChargingSession.objects.filter(pk=session.pk).update(status=ChargingSession.Status.ACTIVE)
            session.status = ChargingSession.Status.ACTIVE
            services.charging_session_changed(session=session, reason="session_started")
    elif target in (ChargingSession.Status.COMPLETED, ChargingSession.Status.INVALID):
        ended_at = stored.end_date_time or stored.last_updated
        if target == ChargingSession.Status.COMPLETED:
            services.charging_session_complete(session=session, ended_at=ended_at, energy_delivered_kwh=stored.kwh)
        else:
            ChargingSession.objects.filter(pk=session.pk).update(status=target, ended_at=ended_at)
        if ended_at < session.expected_departure_at:
            services.charging_session_changed(session=session, reason="session_ended_early")


def sessions_resync(*, cpo: ChargePointOperator, date_from: datetime | None = None, limit: int | None = None
                    ) -> int:
    """Pull the CPO's sessions changed since `date_from` (default: the newest we saw), page by page, and store
    each as if pushed. Returns the number of sessions read."""
    url = cpo.endpoint_url("sessions", "SENDER")
    if not url:
        raise ApplicationError(f"{cpo} publishes no sessions SENDER endpoint.", code="ocpi_no_endpoint")
    since = date_from or cpo.sessions_synced_until
    params = {"date_from": since.strftime("%Y-%m-%dT%H:%M:%SZ")} if since else {}
    if limit:
        params["limit"] = str(limit)
    newest = cpo.sessions_synced_until
    count = 0
    try:
        for item in ocpi_get_all(url, token=cpo.token_for_cpo, base64_encoded=cpo.auth_base64, params=params,
                                 headers=_routing_headers(cpo)):
            try:
                session_put(cpo=cpo, country_code=str(item.get("country_code", cpo.country_code)),
                            party_id=str(item.get("party_id", cpo.party_id)), session_id=str(item.get("id", "")),
                            body=item)
            except OcpiError as exc:
                logger.warning("resync %s: session %s skipped: %s", cpo, item.get("id"), exc.message)
                continue
            count += 1
            updated = _timestamp(item, "last_updated")
            if updated is not None and (newest is None or updated > newest):
                newest = updated
    finally:
        if newest is not None:
            ChargePointOperator.objects.filter(pk=cpo.pk).update(sessions_synced_until=newest)
    return count


def _routing_headers(cpo: ChargePointOperator) -> dict[str, str]:
    from django.conf import settings

    return {"OCPI-from-country-code": settings.OCPI_COUNTRY_CODE, "OCPI-from-party-id": settings.OCPI_PARTY_ID,
            "OCPI-to-country-code": cpo.country_code, "OCPI-to-party-id": cpo.party_id}


# --- locations ------------------------------------------------------------------------------------------------


def connector_power_w(connector: dict[str, Any]) -> tuple[int, int]:
    """(W, phases) of one Connector: max_electric_power if given, else V x A x phases (DC: V x A)."""
    power_type = str(connector.get("power_type", ""))
    phases = PHASES.get(power_type, 3 if power_type == "DC" else 1)
    given = connector.get("max_electric_power")
    if isinstance(given, int | float) and given > 0:
        return int(given), phases
    voltage, amperage = connector.get("max_voltage") or 0, connector.get("max_amperage") or 0
    if not isinstance(voltage, int | float) or not isinstance(amperage, int | float):
        return 0, phases
    return int(voltage * amperage * (1 if power_type == "DC" else phases)), phases


def evse_power_w(evse: dict[str, Any]) -> tuple[int | None, int | None]:
    """The EVSE's maximum power: its strongest connector (and that connector's phases)."""
    best: tuple[int, int] | None = None
    for connector in evse.get("connectors") or []:
        if isinstance(connector, dict):
            power = connector_power_w(connector)
            if best is None or power[0] > best[0]:
                best = power
    return (best[0] or None, best[1]) if best else (None, None)


def location_get(*, cpo: ChargePointOperator, country_code: str, party_id: str, location_id: str,
                 evse_uid: str | None = None, connector_id: str | None = None) -> dict[str, Any]:
    check_party(cpo, country_code, party_id)
    location = OcpiLocation.objects.filter(cpo=cpo, location_id__iexact=location_id).first()
    if location is None:
        raise OcpiError(f"Unknown location {location_id}", status_code=2003, http_status=404)
    data: dict[str, Any] = location.data
    if evse_uid is not None:
        data = _find(data.get("evses"), "uid", evse_uid, f"Unknown EVSE {evse_uid}")
        if connector_id is not None:
            data = _find(data.get("connectors"), "id", connector_id, f"Unknown connector {connector_id}")
    return data


def _find(items: Any, key: str, value: str, message: str) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and str(item.get(key, "")).upper() == value.upper():
            return item
    raise OcpiError(message, status_code=2003, http_status=404)


def _merge_by_key(current: list[Any], updates: list[Any], key: str) -> list[Any]:
    """Objects with the same key are merged field by field; new ones are appended."""
    merged = [dict(item) for item in current if isinstance(item, dict)]
    for update in updates:
        if not isinstance(update, dict):
            continue
        match = next((item for item in merged if str(item.get(key, "")).upper() == str(update.get(key, "")).upper()),
                     None)
        if match is None:
            merged.append(dict(update))
        else:
            match.update(update)
    return merged


@transaction.atomic
def location_push(*, cpo: ChargePointOperator, country_code: str, party_id: str, location_id: str, body: Any,
                  partial: bool, evse_uid: str | None = None, connector_id: str | None = None) -> bool:
    """PUT / PATCH of a Location, one of its EVSEs, or one Connector. Returns True when a new Location was created.
    PUT/PATCH below the Location bump the parents' last_updated (OCPI-BRIEF 5)."""
    check_party(cpo, country_code, party_id)
    if not isinstance(body, dict):
        raise OcpiError("The body must be an OCPI object")
    if partial and "last_updated" not in body:
        raise OcpiError("A PATCH must contain last_updated")
    last_updated = _timestamp(body, "last_updated")
    assert last_updated is not None
    location = OcpiLocation.objects.select_for_update().filter(cpo=cpo, location_id__iexact=location_id).first()
    if location is None and (partial or evse_uid is not None):
        raise OcpiError(f"Unknown location {location_id}: PUT it first", status_code=2003, http_status=404)
    created = location is None
    if evse_uid is None:
        if not partial and str(body.get("id", "")).upper() != location_id.upper():
            raise OcpiError(f"Location id {body.get('id')!r} differs from the URL's {location_id!r}")
        if location is not None and location.last_updated > last_updated:
            return False  # stale
        data = dict(location.data) if (partial and location is not None) else {}
        evses = body.get("evses")
        data.update({key: value for key, value in body.items() if not (partial and key == "evses")})
        if partial and isinstance(evses, list):
            data["evses"] = _merge_by_key(list(data.get("evses") or []), evses, "uid")
    else:
        assert location is not None
        data = dict(location.data)
        evses = [dict(e) for e in data.get("evses") or [] if isinstance(e, dict)]
        evse = next((e for e in evses if str(e.get("uid", "")).upper() == evse_uid.upper()), None)
        if connector_id is None:
            if not partial and str(body.get("uid", "")).upper() != evse_uid.upper():
                raise OcpiError(f"EVSE uid {body.get('uid')!r} differs from the URL's {evse_uid!r}")
            if evse is None and partial:
                raise OcpiError(f"Unknown EVSE {evse_uid}", status_code=2003, http_status=404)
            new_evse = {**(evse or {}), **body} if partial else dict(body)
        else:
            if evse is None:
                raise OcpiError(f"Unknown EVSE {evse_uid}", status_code=2003, http_status=404)
            if not partial and str(body.get("id", "")).upper() != connector_id.upper():
                raise OcpiError(f"Connector id {body.get('id')!r} differs from the URL's {connector_id!r}")
            connectors = [dict(c) for c in evse.get("connectors") or [] if isinstance(c, dict)]
            existing = next((c for c in connectors if str(c.get("id", "")).upper() == connector_id.upper()), None)
            if existing is None and partial:
                raise OcpiError(f"Unknown connector {connector_id}", status_code=2003, http_status=404)
            new_connector = {**(existing or {}), **body} if partial else dict(body)
            connectors = [c for c in connectors if c is not existing] + [new_connector]
            new_evse = {**evse, "connectors": connectors, "last_updated": body["last_updated"]}
        evses = [e for e in evses if e is not evse] + [new_evse]
        data["evses"] = evses
        data["last_updated"] = body["last_updated"]
    if location is None:
        location = OcpiLocation(cpo=cpo, location_id=location_id)
    location.data = data
    location.name = str(data.get("name") or "")[:255]
    location.last_updated = max(last_updated, location.last_updated) if location.pk else last_updated
    location.save()
    _sync_evses(location)
    return created


def _sync_evses(location: OcpiLocation) -> None:
    """OcpiEvse rows for the location's EVSEs; ChargePoints for them once the location has a grid connection."""
    for evse in location.data.get("evses") or []:
        if not isinstance(evse, dict) or not evse.get("uid"):
            continue
        uid = str(evse["uid"])
        power_w, phases = evse_power_w(evse)
        try:
            updated = parse_ocpi_datetime(str(evse.get("last_updated"))) if evse.get("last_updated") else \
                location.last_updated
        except ValueError:
            updated = location.last_updated
        row = OcpiEvse.objects.filter(cpo=location.cpo, evse_uid__iexact=uid).first() or OcpiEvse(
            cpo=location.cpo, evse_uid=uid, last_updated=updated)
        row.location = location
        row.status = str(evse.get("status", "UNKNOWN"))[:12]
        row.capabilities = [str(c) for c in evse.get("capabilities") or []]
        row.max_power_w, row.phases = power_w, phases
        row.data, row.last_updated = evse, updated
        row.charge_point = row.charge_point or ChargePoint.objects.filter(cpo=location.cpo,
                                                                          evse_uid__iexact=uid).first()
        if row.charge_point is None and location.connection_id and row.status != "REMOVED" and power_w:
            row.charge_point = ChargePoint.objects.create(
                cpo=location.cpo, connection_id=location.connection_id, evse_uid=uid,
                max_power_w=min(MAX_CHARGE_POINT_W, max(MIN_CHARGE_POINT_W, power_w)), phases=phases or 3)
        elif row.charge_point is not None and power_w:
            ChargePoint.objects.filter(pk=row.charge_point.pk).update(
                max_power_w=min(MAX_CHARGE_POINT_W, max(MIN_CHARGE_POINT_W, power_w)),
                phases=min(3, max(1, phases or 3)), updated_at=clock.now())
        row.save()


def locations_resync(*, cpo: ChargePointOperator, date_from: datetime | None = None) -> int:
    """Pull the CPO's Locations (paginated) and store each as if pushed."""
    url = cpo.endpoint_url("locations", "SENDER")
    if not url:
        raise ApplicationError(f"{cpo} publishes no locations SENDER endpoint.", code="ocpi_no_endpoint")
    params = {"date_from": date_from.strftime("%Y-%m-%dT%H:%M:%SZ")} if date_from else {}
    count = 0
    for item in ocpi_get_all(url, token=cpo.token_for_cpo, base64_encoded=cpo.auth_base64, params=params,
                             headers=_routing_headers(cpo)):
        try:
            location_push(cpo=cpo, country_code=str(item.get("country_code", cpo.country_code)),
                          party_id=str(item.get("party_id", cpo.party_id)), location_id=str(item.get("id", "")),
                          body=item, partial=False)
        except (OcpiError, AdapterError) as exc:
            logger.warning("resync %s: location %s skipped: %s", cpo, item.get("id"), exc)
            continue
        count += 1
    return count
