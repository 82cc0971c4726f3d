"""DSO portal: access rules, the request form's ISP mapping, offer decisions, orders, statements and tenant walls."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from common import isp as isp_time
from common.time import now
from market import services
from market.forms import request_window
from market.models import FlexOffer, FlexOrder, FlexRequest, FlexRequestIsp
from market.services import IspBand, IspPower
from settlement.models import OrderSettlement, SettlementLine, Statement
from tests.conftest import World

pytestmark = pytest.mark.django_db

WINDOW = (time(17, 0), time(21, 0))


def window_indexes(day: date, start: time = WINDOW[0], end: time = WINDOW[1]) -> list[int]:
    """ISP indexes whose local start lies in [start, end): derived from common.isp, never by hand."""
    return [slot.index for slot in isp_time.isp_slots(day) if start <= slot.local_start.time() < end]


def portal(client: Client, world: World) -> Client:
    client.force_login(world.gridco_user)
    return client


def open_request(world: World, day: date, *, reduction_w: int = 40_000) -> FlexRequest:
    indexes = window_indexes(day)
    return services.flex_request_create(
        dso=world.gridco,
        congestion_point=world.cp_north,
        period=day,
        isps=[IspBand(isp=i, disposition="Requested", min_power_w=-2 * reduction_w, max_power_w=-reduction_w)
              for i in indexes],
        expires_at=isp_time.isp_start(day, indexes[0]) - timedelta(hours=1),
        actor=world.gridco_user,
    )


def submit_offer(world: World, flex_request: FlexRequest, *, power_w: int = -30_000,
                 price: str = "45.00") -> FlexOffer:
    day = flex_request.period
    services.d_prognosis_submit(
        aggregator=world.voltflex,
        congestion_point=world.cp_north,
        period=day,
        isps=[IspPower(isp=slot.index, power_w=20_000) for slot in isp_time.isp_slots(day)],
        actor=world.voltflex_user,
    )
    return services.flex_offer_submit(
        aggregator=world.voltflex,
        congestion_point=world.cp_north,
        period=day,
        isps=[IspPower(isp=row.isp, power_w=power_w) for row in flex_request.isps.all()],
        price_eur=Decimal(price),
        expires_at=flex_request.expires_at,
        flex_request=flex_request,
        actor=world.voltflex_user,
    )


def form_data(day: date, **overrides: str) -> dict[str, str]:
    data = {
        "period": day.isoformat(),
        "window_start": "17:00",
        "window_end": "21:00",
        "min_reduction_kw": "40",
        "max_reduction_kw": "",
        "headroom_kw": "",
        "expires_at": "",
    }
    data.update(overrides)
    return data


# --- access ----------------------------------------------------------------------------------------------


def test_login_page_renders(client: Client) -> None:
    response = client.get(reverse("portal:login"))
    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert b"csrfmiddlewaretoken" in response.content


def test_a_dso_user_can_sign_in_with_a_password(client: Client, world: World) -> None:
    response = client.post(reverse("portal:login"), {"username": "grace", "password": "pw-for-tests-1"})
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:dashboard")


def test_anonymous_users_are_sent_to_the_login_page(client: Client, world: World) -> None:
    response = client.get(reverse("portal:dashboard"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("portal:login") + "?next=")


def test_an_aggregator_user_gets_a_clear_403(client: Client, world: World) -> None:
    client.force_login(world.voltflex_user)
    for url in (reverse("portal:dashboard"), reverse("portal:order-list"), reverse("portal:statement-list")):
        response = client.get(url)
        assert response.status_code == 403
        assert b"for distribution system operators" in response.content
        assert b"Voltflex" in response.content


def test_logout_signs_out_and_returns_to_login(client: Client, world: World) -> None:
    portal(client, world)
    response = client.post(reverse("portal:logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:login")
    assert client.get(reverse("portal:dashboard")).status_code == 302


# --- dashboard and congestion point --------------------------------------------------------------------


def test_dashboard_lists_only_my_congestion_points(client: Client, world: World, tomorrow: date) -> None:
    open_request(world, tomorrow)
    response = portal(client, world).get(reverse("portal:dashboard"))
    assert response.status_code == 200
    names = [row.point.name for row in response.context["points"]]
    assert names == ["North", "South"]
    assert world.cp_far.ean.encode() not in response.content
    north = response.context["points"][0]
    assert (north.open_requests, north.submitted_offers, north.orders) == (1, 0, 0)
    assert b"badge--open" in response.content
    assert reverse("api-docs").encode() in response.content


def test_congestion_point_page_shows_the_point_and_its_requests(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    response = portal(client, world).get(reverse("portal:congestion-point", args=[world.cp_north.pk]))
    assert response.status_code == 200
    assert world.cp_north.ean.encode() in response.content
    assert reverse("portal:flex-request-detail", args=[flex_request.pk]).encode() in response.content
    assert reverse("portal:flex-request-create", args=[world.cp_north.pk]).encode() in response.content


# --- creating a request --------------------------------------------------------------------------------


def test_the_request_form_defaults_to_tomorrow(client: Client, world: World, tomorrow: date) -> None:
    response = portal(client, world).get(reverse("portal:flex-request-create", args=[world.cp_north.pk]))
    assert response.status_code == 200
    assert f'value="{tomorrow.isoformat()}"'.encode() in response.content
    assert b'value="17:00"' in response.content


def test_creating_a_request_posts_requested_bands_for_the_window(client: Client, world: World, tomorrow: date) -> None:
    response = portal(client, world).post(
        reverse("portal:flex-request-create", args=[world.cp_north.pk]), form_data(tomorrow), follow=True
    )
    flex_request = FlexRequest.objects.get(congestion_point=world.cp_north)
    assert response.redirect_chain[-1][0] == reverse("portal:flex-request-detail", args=[flex_request.pk])
    assert b"Flex request opened" in response.content
    assert flex_request.status == FlexRequest.Status.OPEN
    assert flex_request.created_by == world.gridco_user
    rows = list(flex_request.isps.all())
    assert [row.isp for row in rows] == window_indexes(tomorrow)
    assert len(rows) == 16
    assert all(row.disposition == FlexRequestIsp.Disposition.REQUESTED for row in rows)
    assert {(row.min_power_w, row.max_power_w) for row in rows} == {(-80_000, -40_000)}
    # Default expiry: one hour before the window starts.
    assert flex_request.expires_at == isp_time.isp_start(tomorrow, rows[0].isp) - timedelta(hours=1)


def test_headroom_adds_every_other_isp_of_the_day_as_available(client: Client, world: World, tomorrow: date) -> None:
    portal(client, world).post(
        reverse("portal:flex-request-create", args=[world.cp_north.pk]),
        form_data(tomorrow, min_reduction_kw="25", max_reduction_kw="60", headroom_kw="15"),
    )
    flex_request = FlexRequest.objects.get(congestion_point=world.cp_north)
    rows = list(flex_request.isps.all())
    assert len(rows) == isp_time.isp_count(tomorrow)
    assert [row.isp for row in rows] == list(range(1, isp_time.isp_count(tomorrow) + 1))
    window = set(window_indexes(tomorrow))
    for row in rows:
        if row.isp in window:
            assert (row.disposition, row.min_power_w, row.max_power_w) == ("Requested", -60_000, -25_000)
        else:
            assert (row.disposition, row.min_power_w, row.max_power_w) == ("Available", -15_000, 15_000)


def test_the_window_maps_to_isps_on_dst_days() -> None:
    autumn, spring = date(2026, 10, 25), date(2027, 3, 28)
    assert (isp_time.isp_count(autumn), isp_time.isp_count(spring)) == (100, 92)
    # 01:00-04:00 lasts four hours on the autumn night (02:00-03:00 twice) and two on the spring night.
    night = {"start": time(1, 0), "end": time(4, 0)}
    assert [slot.index for slot in request_window(period=autumn, **night).slots] == list(range(5, 21))
    assert [slot.index for slot in request_window(period=spring, **night).slots] == list(range(5, 13))
    assert request_window(period=spring, start=time(2, 0), end=time(3, 0)).slots == []
    # 00:00 as the end means midnight at the end of the day.
    assert request_window(period=autumn, start=time(23, 0), end=time(0, 0)).slots[-1].index == 100


def test_an_explicit_expiry_is_read_as_amsterdam_time(client: Client, world: World, tomorrow: date) -> None:
    portal(client, world).post(
        reverse("portal:flex-request-create", args=[world.cp_north.pk]),
        form_data(tomorrow, expires_at=f"{tomorrow.isoformat()}T15:30"),
    )
    flex_request = FlexRequest.objects.get(congestion_point=world.cp_north)
    assert flex_request.expires_at == datetime.combine(tomorrow, time(15, 30), tzinfo=isp_time.MARKET_TZ)


def test_an_end_time_before_the_start_time_is_a_form_error(client: Client, world: World, tomorrow: date) -> None:
    response = portal(client, world).post(
        reverse("portal:flex-request-create", args=[world.cp_north.pk]),
        form_data(tomorrow, window_start="20:00", window_end="18:00"),
    )
    assert response.status_code == 200
    assert "window_end" in response.context["form"].errors
    assert b"The window must end after it starts." in response.content
    assert not FlexRequest.objects.exists()


def test_a_service_refusal_naming_a_form_field_shows_on_that_field(client: Client, world: World) -> None:
    yesterday = isp_time.market_day_of(now()) - timedelta(days=1)
    response = portal(client, world).post(
        reverse("portal:flex-request-create", args=[world.cp_north.pk]), form_data(yesterday)
    )
    assert response.status_code == 200
    assert "is over" in " ".join(response.context["form"].errors["period"])
    assert not FlexRequest.objects.exists()


def test_a_service_refusal_without_a_matching_field_shows_above_the_form(client: Client, world: World) -> None:
    today = isp_time.market_day_of(now())
    response = portal(client, world).post(
        reverse("portal:flex-request-create", args=[world.cp_north.pk]),
        form_data(today, window_start="00:00", window_end="00:15"),
    )
    assert response.status_code == 200
    assert "has already started" in " ".join(response.context["form"].non_field_errors())
    assert b"The request was not opened." in response.content
    assert not FlexRequest.objects.exists()


def test_an_expiry_after_the_window_start_is_refused(client: Client, world: World, tomorrow: date) -> None:
    response = portal(client, world).post(
        reverse("portal:flex-request-create", args=[world.cp_north.pk]),
        form_data(tomorrow, expires_at=f"{tomorrow.isoformat()}T18:00"),
    )
    assert "expires_at" in response.context["form"].errors
    assert not FlexRequest.objects.exists()


def test_another_dsos_congestion_point_gives_404(client: Client, world: World, tomorrow: date) -> None:
    portal(client, world)
    assert client.get(reverse("portal:congestion-point", args=[world.cp_far.pk])).status_code == 404
    response = client.post(reverse("portal:flex-request-create", args=[world.cp_far.pk]), form_data(tomorrow))
    assert response.status_code == 404
    assert not FlexRequest.objects.exists()


# --- request detail and offer decisions ------------------------------------------------------------------


def test_request_detail_shows_isps_chart_and_offers(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    offer = submit_offer(world, flex_request)
    response = portal(client, world).get(reverse("portal:flex-request-detail", args=[flex_request.pk]))
    assert response.status_code == 200
    content = response.content.decode()
    assert "Voltflex" in content
    assert "45.00" in content
    assert reverse("portal:flex-offer-accept", args=[offer.pk]) in content
    assert reverse("portal:flex-offer-reject", args=[offer.pk]) in content
    assert "<svg" in content and "chart-offered" in content
    assert len(response.context["requested_rows"]) == 16
    assert response.context["requested_rows"][0].label == "17:00"
    view = response.context["offers"][0]
    # 16 ISPs x 30 kW x 0.25 h = 120 kWh; EUR 45 / 120 kWh.
    assert view.energy_kwh == Decimal("120.000")
    assert view.eur_per_kwh == Decimal("0.375")


def test_accepting_an_offer_places_an_order(
    client: Client, world: World, tomorrow: date, django_capture_on_commit_callbacks
) -> None:
    flex_request = open_request(world, tomorrow)
    offer = submit_offer(world, flex_request)
    portal(client, world)
    # Run the on-commit market events too: the aggregator's subscriber must cope with a world without charge points.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("portal:flex-offer-accept", args=[offer.pk]), follow=True)
    order = FlexOrder.objects.get(flex_offer=offer)
    assert response.redirect_chain[-1][0] == reverse("portal:flex-request-detail", args=[flex_request.pk])
    assert f"Order {order.order_reference} placed".encode() in response.content
    assert order.dso == world.gridco
    assert order.created_by == world.gridco_user
    offer.refresh_from_db()
    assert offer.status == FlexOffer.Status.ACCEPTED
    flex_request.refresh_from_db()
    assert flex_request.status == FlexRequest.Status.PARTIALLY_ORDERED  # 30 kW of the 40 kW needed


def test_accepting_twice_shows_an_error_and_places_one_order(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    offer = submit_offer(world, flex_request)
    portal(client, world)
    client.post(reverse("portal:flex-offer-accept", args=[offer.pk]))
    response = client.post(reverse("portal:flex-offer-accept", args=[offer.pk]), follow=True)
    assert b"was not accepted" in response.content
    assert b"message--error" in response.content
    assert FlexOrder.objects.count() == 1


def test_accept_needs_a_post(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    offer = submit_offer(world, flex_request)
    response = portal(client, world).get(reverse("portal:flex-offer-accept", args=[offer.pk]))
    assert response.status_code == 405
    assert not FlexOrder.objects.exists()


def test_rejecting_an_offer(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    offer = submit_offer(world, flex_request)
    response = portal(client, world).post(reverse("portal:flex-offer-reject", args=[offer.pk]), follow=True)
    assert b"rejected" in response.content
    offer.refresh_from_db()
    assert offer.status == FlexOffer.Status.REJECTED
    assert not FlexOrder.objects.exists()


def test_cancelling_a_request(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    portal(client, world)
    response = client.post(reverse("portal:flex-request-cancel", args=[flex_request.pk]), follow=True)
    assert b"Flex request cancelled" in response.content
    flex_request.refresh_from_db()
    assert flex_request.status == FlexRequest.Status.CANCELLED
    again = client.post(reverse("portal:flex-request-cancel", args=[flex_request.pk]), follow=True)
    assert b"was not cancelled" in again.content


# --- orders --------------------------------------------------------------------------------------------


def test_order_list_and_detail_with_audit_trail(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    offer = submit_offer(world, flex_request)
    order = services.flex_offer_accept(flex_offer=offer, dso=world.gridco, actor=world.gridco_user)
    portal(client, world)

    listing = client.get(reverse("portal:order-list"))
    assert listing.status_code == 200
    assert order.order_reference.encode() in listing.content
    assert listing.context["orders"][0].energy_kwh == Decimal("120.000")
    assert "€&nbsp;45.00".encode() in listing.content

    detail = client.get(reverse("portal:order-detail", args=[order.pk]))
    assert detail.status_code == 200
    assert b"flex_order.placed" in detail.content
    assert b"grace" in detail.content
    assert len(detail.context["isps"]) == 16
    assert detail.context["isps"][0].kw == Decimal("-30")


# --- tenant walls ----------------------------------------------------------------------------------------


def test_another_dsos_request_order_and_statement_give_404(client: Client, world: World, tomorrow: date) -> None:
    indexes = window_indexes(tomorrow)
    foreign_request = services.flex_request_create(
        dso=world.otherdso,
        congestion_point=world.cp_far,
        period=tomorrow,
        isps=[IspBand(isp=i, disposition="Requested", min_power_w=-20_000, max_power_w=-10_000) for i in indexes],
        expires_at=isp_time.isp_start(tomorrow, indexes[0]) - timedelta(hours=1),
    )
    foreign_order = FlexOrder.objects.create(
        dso=world.otherdso, aggregator=world.voltflex, congestion_point=world.cp_far, period=tomorrow,
        order_reference="ORD-FOREIGN-1", price_eur=Decimal("10.00"),
    )
    foreign_statement = Statement.objects.create(
        dso=world.otherdso, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow,
        total_eur=Decimal("10.00"), issued_at=now(),
    )
    portal(client, world)
    assert client.get(reverse("portal:flex-request-detail", args=[foreign_request.pk])).status_code == 404
    assert client.post(reverse("portal:flex-request-cancel", args=[foreign_request.pk])).status_code == 404
    assert client.get(reverse("portal:order-detail", args=[foreign_order.pk])).status_code == 404
    assert client.get(reverse("portal:statement-detail", args=[foreign_statement.pk])).status_code == 404
    foreign_request.refresh_from_db()
    assert foreign_request.status == FlexRequest.Status.OPEN
    assert b"ORD-FOREIGN-1" not in client.get(reverse("portal:order-list")).content


# --- statements ------------------------------------------------------------------------------------------


def test_statement_pages_render(client: Client, world: World, tomorrow: date) -> None:
    order = FlexOrder.objects.create(
        dso=world.gridco, aggregator=world.voltflex, congestion_point=world.cp_north, period=tomorrow,
        order_reference="ORD-TEST-0001", price_eur=Decimal("45.00"),
    )
    statement = Statement.objects.create(
        dso=world.gridco, aggregator=world.voltflex, period_start=tomorrow, period_end=tomorrow,
        total_eur=Decimal("1234.50"), issued_at=now(),
    )
    settlement = OrderSettlement.objects.create(
        statement=statement, flex_order=order, ordered_kwh=Decimal("120.000"), delivered_kwh=Decimal("110.000"),
        unit_price_eur_per_kwh=Decimal("0.375000"), total_eur=Decimal("1234.50"),
    )
    first = window_indexes(tomorrow)[0]
    SettlementLine.objects.create(
        order_settlement=settlement, isp=first, isp_start=isp_time.isp_start(tomorrow, first),
        baseline_w=60_000, measured_w=32_500, ordered_w=-30_000, delivered_w=27_500, paid_eur=Decimal("2.58"),
    )
    portal(client, world)

    listing = client.get(reverse("portal:statement-list"))
    assert listing.status_code == 200
    assert "€&nbsp;1,234.50".encode() in listing.content
    assert b"Voltflex" in listing.content

    detail = client.get(reverse("portal:statement-detail", args=[statement.pk]))
    assert detail.status_code == 200
    content = detail.content.decode()
    assert "ORD-TEST-0001" in content
    assert "17:00" in content
    assert "€&nbsp;2.58" in content
    line = detail.context["settlements"][0].lines[0]
    assert (line.baseline_kw, line.measured_kw, line.ordered_kw, line.delivered_kw) == (
        Decimal("60"), Decimal("32.5"), Decimal("-30"), Decimal("27.5"),
    )
