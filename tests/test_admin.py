"""The admin console: every model registered, every page renders, and the console's rules hold.

Rules: status is never editable; binding/issued documents and the audit log are read-only; audited
messages show their trail; tokens are masked; large tables stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.db import models
from django.test import Client
from django.urls import path, reverse

from aggregator.models import ChargePointOperator, ChargingProfileCommand, SessionSchedule
from common import isp as isp_time
from common.models import AuditEvent, IdempotencyRecord
from common.time import now
from market import services
from market.apikeys import api_key_create
from market.models import (
    ApiKey,
    Connection,
    DPrognosis,
    FlexContract,
    FlexOffer,
    FlexOfferOption,
    FlexOfferOptionIsp,
    FlexOrder,
    FlexRequest,
    FlexRequestIsp,
    FlexReservationUpdate,
    FlexReservationUpdateIsp,
    Market,
)
from settlement.models import MeterReading, OrderSettlement, SettlementLine, Statement
from tests.builders import evening_isps
from tests.factories import ChargePointFactory, ChargePointOperatorFactory, ChargingSessionFactory

# Note: the admin is served from this module's own URLconf, so a broken portal or API route elsewhere
# cannot mask (or cause) an admin failure here.
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]
urlpatterns = [path("admin/", admin.site.urls)]

APP_LABELS = ("common", "market", "aggregator", "settlement", "sandbox")
MODELS = [
    model for label in APP_LABELS if apps.is_installed(label) for model in apps.get_app_config(label).get_models()
]
MODEL_IDS = [model._meta.label_lower for model in MODELS]
SETTLEMENT_DOCUMENTS = [Statement, OrderSettlement, SettlementLine]

TOKEN_FOR_CPO = "for-cpo-secret-AAAA1111"
TOKEN_FROM_CPO = "from-cpo-secret-BBBB2222"
MASK = "\u2022" * 8


def admin_url(model: type[models.Model], view: str, obj: models.Model | None = None) -> str:
    opts = model._meta
    args = [quote(obj.pk)] if obj is not None else []
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


@dataclass
class Console:
    client: Client
    superuser: Any
    flex_request: FlexRequest
    d_prognosis: DPrognosis
    flex_offer: FlexOffer
    flex_order: FlexOrder
    cpo: ChargePointOperator
    flex_contract: FlexContract
    reservation_update: FlexReservationUpdate
    api_key: ApiKey
    raw_api_key: str


@pytest.fixture
def console(world, tomorrow: date) -> Console:
    """A superuser's client, plus one object of every model (built through market.services where one exists)."""
    superuser = get_user_model().objects.create_superuser(
        username="ops", email="ops@example.com", password="pw-for-tests-1"
    )
    client = Client()
    client.force_login(superuser)

    count = isp_time.isp_count(tomorrow)
    prognosis = services.d_prognosis_submit(
        aggregator=world.voltflex,
        congestion_point=world.cp_north,
        period=tomorrow,
        isps=[services.IspPower(isp=i, power_w=5_000) for i in range(1, count + 1)],
        actor=world.voltflex_user,
    )
    request = services.flex_request_create(
        dso=world.gridco,
        congestion_point=world.cp_north,
        period=tomorrow,
        isps=[services.IspBand(isp=72, disposition="Requested", min_power_w=-20_000, max_power_w=-5_000)],
        expires_at=isp_time.isp_start(tomorrow, 60),
        actor=world.gridco_user,
    )
    offer = services.flex_offer_submit(
        aggregator=world.voltflex,
        congestion_point=world.cp_north,
        period=tomorrow,
        options=[
            services.OfferOptionInput(
                option_reference="A1",
                price_eur=Decimal("12.50"),
                min_activation_factor=Decimal("0.25"),
                isps=[services.IspPower(isp=72, power_w=-6_000)],
            )
        ],
        expires_at=isp_time.isp_start(tomorrow, 48),
        flex_request=request,
        actor=world.voltflex_user,
    )
    order = services.flex_offer_accept(flex_offer=offer, dso=world.gridco, actor=world.gridco_user)

    # A contract with reserved flex, and an update that reduces it, for the day after (its default deadline,
    # 14 h before the day starts, may already have passed for tomorrow).
    reserved_day = tomorrow + timedelta(days=1)
    contract = services.flex_contract_create(
        dso=world.gridco,
        aggregator=world.voltflex,
        congestion_point=world.cp_north,
        contract_id="GRID-VOLT-1",
        valid_from=tomorrow,
        reserved_power_w=-10_000,
        window_start=time(17, 0),
        window_end=time(21, 0),
        actor=world.gridco_user,
    )
    reservation_update = services.flex_reservation_update_submit(
        dso=world.gridco,
        contract=contract,
        period=reserved_day,
        isps=[services.IspPower(isp=isp, power_w=-4_000) for isp in evening_isps(reserved_day)[:2]],
        reference="RES-1",
        actor=world.gridco_user,
    )
    api_key, raw_api_key = api_key_create(participant=world.voltflex, name="ci-robot", actor=world.voltflex_user)
    IdempotencyRecord.objects.create(
        owner=str(world.voltflex.pk),
        key="retry-7f3a",
        method="POST",
        path="/api/v1/market/flex-offers/create/",
        request_hash="0" * 64,
        status_code=201,
        response_body={"id": str(offer.pk)},
    )

    cpo = ChargePointOperatorFactory(
        aggregator=world.voltflex, token_for_cpo=TOKEN_FOR_CPO, token_from_cpo=TOKEN_FROM_CPO
    )
    charge_point = ChargePointFactory(cpo=cpo, connection=world.voltflex_connections[0])
    session = ChargingSessionFactory(
        charge_point=charge_point,
        arrival_at=isp_time.isp_start(tomorrow, 68),
        expected_departure_at=isp_time.isp_start(tomorrow, 80),
    )
    schedule = SessionSchedule.objects.create(
        session=session,
        flex_order=order,
        start=isp_time.isp_start(tomorrow, 68),
        slot_power_w=[11_000, 11_000, 0, 0],
        planned_energy_kwh=Decimal("5.500"),
    )
    ChargingProfileCommand.objects.create(cpo=cpo, session=session, schedule=schedule, flex_order=order)
    from aggregator.models import OcpiEvse, OcpiLocation, OcpiSession

    ocpi_location = OcpiLocation.objects.create(cpo=cpo, location_id="LOC1", name="Depot", last_updated=now(),
                                                data={"id": "LOC1", "evses": []})
    OcpiEvse.objects.create(cpo=cpo, location=ocpi_location, evse_uid="EVSE-1", max_power_w=11_000, phases=3,
                            last_updated=now())
    OcpiSession.objects.create(cpo=cpo, session_id="OCPI-1", country_code="NL", party_id="CPX", status="ACTIVE",
                               location_id="LOC1", evse_uid="EVSE-1", start_date_time=now(), last_updated=now())

    MeterReading.objects.create(
        connection=world.voltflex_connections[0],
        isp_start=isp_time.isp_start(tomorrow, 72),
        kwh_import=Decimal("0.250"),
    )
    _meter_console_objects(world, tomorrow)
    statement = Statement.objects.create(
        dso=world.gridco,
        aggregator=world.voltflex,
        period_start=tomorrow,
        period_end=tomorrow,
        total_eur=Decimal("12.50"),
        issued_at=now(),
    )
    settled = OrderSettlement.objects.create(
        statement=statement,
        flex_order=order,
        d_prognosis=prognosis,
        ordered_kwh=Decimal("1.500"),
        delivered_kwh=Decimal("1.500"),
        unit_price_eur_per_kwh=Decimal("8.333333"),
        total_eur=Decimal("12.50"),
    )
    SettlementLine.objects.create(
        order_settlement=settled,
        isp=72,
        isp_start=isp_time.isp_start(tomorrow, 72),
        baseline_w=5_000,
        measured_w=-1_000,
        ordered_w=-6_000,
        delivered_w=6_000,
        paid_eur=Decimal("12.50"),
    )
    _settlement_console_objects(world, statement, settled, session)

    _oscp_console_objects(world, cpo, order)
    _driver_console_objects(world, session)

    if apps.is_installed("sandbox"):
        from sandbox.models import SandboxChargingProfile, SandboxCpoClient

        sandbox_client = SandboxCpoClient.objects.create(
            name="Voltflex", token_from_client="sandbox-from-CCCC3333", token_for_client="sandbox-for-DDDD4444"
        )
        SandboxChargingProfile.objects.create(
            client=sandbox_client,
            session_id=session.cpo_session_id,
            charging_profile={"charging_rate_unit": "W", "charging_profile_period": []},
            response_url="http://127.0.0.1:8000/ocpi/2.2.1/chargingprofiles/result/1",
            sync_result="ACCEPTED",
        )

    return Console(
        client=client,
        superuser=superuser,
        flex_request=request,
        d_prognosis=prognosis,
        flex_offer=offer,
        flex_order=order,
        cpo=cpo,
        flex_contract=contract,
        reservation_update=reservation_update,
        api_key=api_key,
        raw_api_key=raw_api_key,
    )


def _meter_console_objects(world, tomorrow) -> None:
    """One of each meter-data model: a delivery with a rejection, a superseded version, a connection limit."""
    from settlement.models import ConnectionCapacity, MeterImportBatch, MeterImportRejection, MeterReadingVersion

    batch = MeterImportBatch.objects.create(submitted_by=world.gridco, source_format="csv",
                                            source_name="Voltflex-day.csv", content_hash="a" * 64, received=2,
                                            accepted=1, rejected=1)
    MeterImportRejection.objects.create(batch=batch, row_number=2, connection_ean="871685000000000000",
                                        isp_start="2026-11-26T17:00:00", reason="naive_datetime", detail="no offset")
    MeterReadingVersion.objects.create(connection=world.voltflex_connections[0],
                                       isp_start=isp_time.isp_start(tomorrow, 72), version=1,
                                       kwh_import=Decimal("0.300"), kwh_export=Decimal("0"), quality=1,
                                       received_at=now(), superseded_by=batch, superseded_at=now())
    ConnectionCapacity.objects.create(connection=world.voltflex_connections[1], max_power_kw=Decimal("100.0"))


def _driver_console_objects(world, session) -> None:
    """A driver with a token, linked to the console's session."""
    from aggregator.services import driver_create

    driver = driver_create(aggregator=world.voltflex, reference="EMSP-CONSOLE", token_uids=["RFID-CONSOLE"],
                           flex_opt_out=True)
    session.driver = driver
    session.save(update_fields=["driver"])


def _oscp_console_objects(world, cpo: ChargePointOperator, order: FlexOrder) -> None:
    """One of each OSCP model (aggregator/models/oscp.py): peer, group, outbox and inbound rows, a measurement,
    a compliance error and an adjustment."""
    from aggregator.models import (
        CapacityAdjustment,
        CapacityGroup,
        ComplianceError,
        GroupMeasurement,
        OscpInboundMessage,
        OscpOutboundMessage,
        OscpPeer,
    )

    peer = OscpPeer.objects.create(cpo=cpo, base_url="https://cpo.example/oscp/fp/2.0", token_for_peer="oscp-EEEE5555")
    group = CapacityGroup.objects.create(peer=peer, group_id="site-1", congestion_point=world.cp_north,
                                         offpeak_capacity_kw=Decimal("150"), peak_capacity_kw=Decimal("60"),
                                         fallback_capacity_kw=Decimal("40"))
    outbound = OscpOutboundMessage.objects.create(peer=peer, endpoint="update_group_capacity_forecast", group=group,
                                                  flex_order=order, body={"group_id": "site-1"})
    inbound = OscpInboundMessage.objects.create(peer=peer, endpoint="update_group_measurements", request_id="r-1")
    GroupMeasurement.objects.create(group=group, inbound=inbound, value=Decimal("1.5"), unit="KWH",
                                    value_kwh=Decimal("1.5"), phase="ALL", direction="IMPORT", measure_time=now())
    ComplianceError.objects.create(peer=peer, inbound=OscpInboundMessage.objects.create(
        peer=peer, endpoint="group_capacity_compliance_error", request_id="r-2"), forecast=outbound, group=group,
        message="cannot comply")
    CapacityAdjustment.objects.create(group=group, inbound=OscpInboundMessage.objects.create(
        peer=peer, endpoint="adjust_group_capacity_forecast", request_id="r-3"), forecast_type="CONSUMPTION",
        requested_blocks=[], decision="DENIED", response=outbound)


# --- coverage: every model, every page --------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_every_model_of_our_apps_is_registered(model: type[models.Model]) -> None:
    assert admin.site.is_registered(model), f"{model._meta.label} has no admin: add it to its app's admin.py"


def test_the_market_model_changes_are_covered_by_the_per_model_tests() -> None:
    """The new markets, offer options, contracts, reservation updates, API keys and idempotency records are
    among the models every parametrized test above and below runs for."""
    for model in (Market, FlexContract, FlexOfferOption, FlexOfferOptionIsp, FlexReservationUpdate,
                  FlexReservationUpdateIsp, ApiKey, IdempotencyRecord):
        assert model in MODELS, model._meta.label
        assert admin.site.is_registered(model), model._meta.label


def test_the_console_is_titled(console: Console) -> None:
    response = console.client.get(reverse("admin:index"))
    assert response.status_code == 200
    assert "Flexmarket console" in response.content.decode()


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_each_changelist_renders_and_searches(console: Console, model: type[models.Model]) -> None:
    url = admin_url(model, "changelist")
    assert console.client.get(url).status_code == 200
    if admin.site.get_model_admin(model).search_fields:
        # A UUID-shaped and a free-text term, so exact lookups on UUID/integer fields are exercised too.
        for term in ("Voltflex", "0b8f2bde-6c57-4b39-9a52-1f0c1d1f2e3a"):
            assert console.client.get(url, {"q": term}).status_code == 200, term


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_each_add_page_renders_where_adding_is_allowed(console: Console, model: type[models.Model]) -> None:
    model_admin = admin.site.get_model_admin(model)
    request = type("Request", (), {"user": console.superuser})()
    response = console.client.get(admin_url(model, "add"))
    assert response.status_code == (200 if model_admin.has_add_permission(request) else 403)


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_each_change_page_renders(console: Console, model: type[models.Model]) -> None:
    obj = model._default_manager.first()
    assert obj is not None, f"the console fixture has no {model._meta.label}: add one"
    assert console.client.get(admin_url(model, "change", obj)).status_code == 200


# --- rules --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", [m for m in MODELS if any(f.name == "status" for f in m._meta.fields)], ids=lambda m: m._meta.label_lower
)
def test_status_is_never_an_editable_field(console: Console, model: type[models.Model]) -> None:
    obj = model._default_manager.first()
    pages = [admin_url(model, "add")] + ([admin_url(model, "change", obj)] if obj is not None else [])
    for url in pages:
        response = console.client.get(url)
        if response.status_code == 200:
            assert 'name="status"' not in response.content.decode(), url


@pytest.mark.parametrize(
    "attribute", ["flex_offer", "flex_order", "flex_request", "d_prognosis", "reservation_update", "flex_contract"]
)
def test_message_change_pages_show_the_audit_trail(console: Console, attribute: str) -> None:
    obj = getattr(console, attribute)
    html = console.client.get(admin_url(type(obj), "change", obj)).content.decode()
    assert 'class="audit-trail"' in html
    events = AuditEvent.objects.filter(object_id=str(obj.pk))
    assert events.exists()
    for event in events:
        assert event.action in html
    if attribute == "flex_offer":
        assert "flex_offer.submitted" in html
        assert "flex_offer.accepted" in html
        assert "status: submitted \u2192 accepted" in html
    if attribute == "flex_order":
        assert "flex_order.placed" in html
        assert "grace" in html  # the DSO user who accepted


@pytest.mark.parametrize("attribute", ["flex_offer", "flex_order"])
def test_binding_documents_and_their_isps_are_read_only(console: Console, attribute: str) -> None:
    obj = getattr(console, attribute)
    url = admin_url(type(obj), "change", obj)
    html = console.client.get(url).content.decode()
    assert "-6000" in html  # the ISP row is shown...
    assert 'name="isps-0-power_w"' not in html  # ...but not as an input
    assert 'name="options-0-price_eur"' not in html  # nor an offer option's price
    assert 'name="price_eur"' not in html
    assert console.client.post(url, {"price_eur": "1.00"}).status_code == 403
    assert console.client.get(admin_url(type(obj), "delete", obj)).status_code == 403


def test_a_flex_offer_change_page_shows_its_options(console: Console) -> None:
    offer = console.flex_offer
    option = offer.options.get()
    html = console.client.get(admin_url(FlexOffer, "change", offer)).content.decode()
    for shown in ("A1", "12.50", "0.25", "72: -6000"):  # reference, price, min activation factor, ISPs
        assert shown in html, shown
    assert admin_url(FlexOfferOption, "change", option) in html  # each option links to its own page
    option_html = console.client.get(admin_url(FlexOfferOption, "change", option)).content.decode()
    assert "-6000" in option_html
    assert 'name="isps-0-power_w"' not in option_html
    assert console.client.post(admin_url(FlexOfferOption, "change", option), {"price_eur": "1.00"}).status_code == 403
    option.refresh_from_db()
    assert option.price_eur == Decimal("12.50")


def test_api_keys_are_never_shown_or_issued_here(console: Console) -> None:
    key = console.api_key
    change = console.client.get(admin_url(ApiKey, "change", key)).content.decode()
    listing = console.client.get(admin_url(ApiKey, "changelist")).content.decode()
    for html in (change, listing):
        assert console.raw_api_key not in html
        assert key.key_hash not in html
        assert key.prefix in html
    assert 'name="scopes"' not in change
    assert console.client.get(admin_url(ApiKey, "add")).status_code == 403


@pytest.mark.parametrize("model", SETTLEMENT_DOCUMENTS, ids=lambda m: m._meta.label_lower)
def test_settlement_documents_are_view_only(console: Console, model: type[models.Model]) -> None:
    obj = model._default_manager.get()
    change_url = admin_url(model, "change", obj)
    assert console.client.get(change_url).status_code == 200
    assert console.client.post(change_url, {}).status_code == 403
    assert console.client.get(admin_url(model, "add")).status_code == 403
    assert console.client.get(admin_url(model, "delete", obj)).status_code == 403


def test_the_audit_log_is_view_only_and_links_to_the_object(console: Console) -> None:
    event = AuditEvent.objects.filter(action="flex_order.placed").get()
    html = console.client.get(admin_url(AuditEvent, "changelist")).content.decode()
    assert "flex_order.placed" in html
    assert admin_url(FlexOrder, "change", console.flex_order) in html
    assert console.client.get(admin_url(AuditEvent, "add")).status_code == 403
    assert console.client.post(admin_url(AuditEvent, "change", event), {}).status_code == 403
    assert console.client.get(admin_url(AuditEvent, "delete", event)).status_code == 403


def test_cpo_tokens_are_never_shown_in_clear(console: Console) -> None:
    change = console.client.get(admin_url(ChargePointOperator, "change", console.cpo)).content.decode()
    listing = console.client.get(admin_url(ChargePointOperator, "changelist")).content.decode()
    for html in (change, listing):
        assert TOKEN_FOR_CPO not in html
        assert TOKEN_FROM_CPO not in html
    assert MASK + "1111" in change
    assert MASK + "2222" in change
    assert 'name="token_for_cpo"' not in change
    add = console.client.get(admin_url(ChargePointOperator, "add")).content.decode()
    assert 'name="token_for_cpo"' in add
    assert 'name="token_from_cpo"' in add


@pytest.mark.skipif(not apps.is_installed("sandbox"), reason="SANDBOX_ENABLED is off")
def test_sandbox_client_tokens_are_never_shown_in_clear(console: Console) -> None:
    from sandbox.models import SandboxCpoClient

    client = SandboxCpoClient.objects.get()
    change = console.client.get(admin_url(SandboxCpoClient, "change", client)).content.decode()
    assert "sandbox-from-CCCC3333" not in change
    assert "sandbox-for-DDDD4444" not in change
    assert MASK + "3333" in change


def test_connections_are_found_by_ean(console: Console, world) -> None:
    wanted = world.voltflex_connections[1]
    response = console.client.get(admin_url(Connection, "changelist"), {"q": wanted.ean})
    assert response.status_code == 200
    assert [connection.ean for connection in response.context["cl"].result_list] == [wanted.ean]


def test_users_show_the_participant_they_act_for(console: Console, world) -> None:
    html = console.client.get(admin_url(get_user_model(), "changelist")).content.decode()
    assert "Voltflex (AGR)" in html
    assert 'name="participant"' in console.client.get(admin_url(get_user_model(), "add")).content.decode()


def test_meter_readings_list_without_full_count_or_joins(console: Console, django_assert_max_num_queries) -> None:
    url = admin_url(MeterReading, "changelist")
    with django_assert_max_num_queries(8):
        response = console.client.get(url)
    assert response.status_code == 200
    assert not response.context["cl"].show_full_result_count


class _FakeCursor:
    def __init__(self, estimate: int) -> None:
        self.estimate = estimate
        self.sql = ""

    def __enter__(self) -> _FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: list[str]) -> None:
        self.sql = sql % tuple(params)

    def fetchone(self) -> tuple[int]:
        return (self.estimate,)


@pytest.mark.parametrize(
    ("estimate", "filtered", "expected"), [(5_000_000, False, 5_000_000), (50, False, 1), (5_000_000, True, 1)]
)
def test_meter_readings_paginate_on_the_postgresql_estimate_only_when_unfiltered_and_large(
    console: Console, monkeypatch: pytest.MonkeyPatch, estimate: int, filtered: bool, expected: int
) -> None:
    from common import admin as common_admin

    cursor = _FakeCursor(estimate)
    fake = type("FakeConnection", (), {"vendor": "postgresql", "cursor": lambda self: cursor})()
    # Only the estimate query sees the fake PostgreSQL connection; the exact count runs on the test database.
    monkeypatch.setattr(common_admin, "connections", {"default": fake})
    queryset = MeterReading.objects.all()
    if filtered:
        queryset = queryset.filter(kwh_import__gte=0)
    assert common_admin.EstimatedCountPaginator(queryset, 100).count == expected
    assert admin.site.get_model_admin(MeterReading).paginator is common_admin.EstimatedCountPaginator
    if not filtered:
        assert cursor.sql == "SELECT reltuples::bigint FROM pg_class WHERE oid = settlement_meterreading::regclass"


# --- flex requests: drafted in the admin, moved by services -------------------------------------------


def _draft_form(world, tomorrow: date) -> dict[str, str]:
    expires = isp_time.isp_start(tomorrow, 60)
    return {
        "congestion_point": str(world.cp_south.pk),
        "dso": str(world.gridco.pk),
        "period": tomorrow.isoformat(),
        "expires_at_0": expires.strftime("%Y-%m-%d"),
        "expires_at_1": expires.strftime("%H:%M:%S"),
        "service_type": "congestion",
        "isps-TOTAL_FORMS": "1",
        "isps-INITIAL_FORMS": "0",
        "isps-MIN_NUM_FORMS": "0",
        "isps-MAX_NUM_FORMS": "1000",
        "isps-0-isp": "72",
        "isps-0-disposition": FlexRequestIsp.Disposition.REQUESTED,
        "isps-0-min_power_w": "-20000",
        "isps-0-max_power_w": "-5000",
    }


def test_a_draft_request_added_in_the_admin_is_audited_and_opened_by_the_service(
    console: Console, world, tomorrow: date
) -> None:
    response = console.client.post(admin_url(FlexRequest, "add"), _draft_form(world, tomorrow))
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    draft = FlexRequest.objects.get(congestion_point=world.cp_south)
    assert draft.status == FlexRequest.Status.DRAFT
    assert draft.created_by == console.superuser
    assert draft.isps.get().max_power_w == -5_000
    created = AuditEvent.objects.get(object_id=str(draft.pk), action="admin.created")
    assert created.actor == console.superuser

    response = console.client.post(
        admin_url(FlexRequest, "changelist"), {"action": "open_requests", "_selected_action": [str(draft.pk)]}
    )
    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.status == FlexRequest.Status.OPEN
    assert AuditEvent.objects.filter(object_id=str(draft.pk), action="flex_request.opened").exists()

    # Once open, the request is no longer editable here.
    change_url = admin_url(FlexRequest, "change", draft)
    assert 'name="expires_at_0"' not in console.client.get(change_url).content.decode()
    assert console.client.post(change_url, _draft_form(world, tomorrow)).status_code == 403


def test_a_refused_transition_is_reported_not_raised(console: Console) -> None:
    ordered = console.flex_request  # fully ordered by the fixture: it cannot be opened again
    response = console.client.post(
        admin_url(FlexRequest, "changelist"),
        {"action": "open_requests", "_selected_action": [str(ordered.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    assert "needs one of draft" in response.content.decode()
    ordered.refresh_from_db()
    assert ordered.status == FlexRequest.Status.ORDERED


def _settlement_console_objects(world, statement, settled, session) -> None:
    """A baseline record, a settlement run, a ledger entry, a dispute and a driver reward (settlement engine)."""
    from settlement.models import BaselineRecord, Dispute, SessionReward, SettlementRun
    from settlement.services.ledger import ledger_append

    order = settled.flex_order
    settled.baseline = BaselineRecord.objects.create(
        aggregator=world.voltflex, congestion_point=order.congestion_point, period=order.period,
        method="settlement.baselines.d_prognosis.UsefDPrognosis", values_w={"72": 5_000})
    settled.save()
    SettlementRun.objects.create(period=order.period, started_at=now(), finished_at=now(), orders_settled=1)
    ledger_append(statement=statement)
    Dispute.objects.create(statement=statement, order_settlement=settled, line=settled.lines.get(), flex_order=order,
                           isp=72, reason="Meter misread")
    SessionReward.objects.create(order_settlement=settled, session=session, shifted_kwh=Decimal("1.500"),
                                 reward_eur=Decimal("12.50"))
