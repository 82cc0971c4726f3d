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
from market.models import DPrognosis, FlexOffer, FlexOrder, FlexRequest, FlexRequestIsp, Participant
from market.services import IspBand, IspPower, OfferOptionInput
from settlement.models import OrderSettlement, SettlementLine, Statement
from tests.builders import option
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


def submit_offer(world: World, flex_request: FlexRequest, *, power_w: int = -30_000, price: str = "45.00",
                 min_activation_factor: str = "1.00", aggregator: Participant | None = None,
                 options: list[OfferOptionInput] | None = None, isps: list[int] | None = None) -> FlexOffer:
    """An offer from `aggregator` (default Voltflex), after its D-prognosis: one option unless `options` are given."""
    day = flex_request.period
    aggregator = aggregator or world.voltflex
    if not DPrognosis.objects.filter(aggregator=aggregator, congestion_point=world.cp_north, period=day).exists():
        services.d_prognosis_submit(
            aggregator=aggregator,
            congestion_point=world.cp_north,
            period=day,
            isps=[IspPower(isp=slot.index, power_w=20_000) for slot in isp_time.isp_slots(day)],
        )
    indexes = isps or [row.isp for row in flex_request.isps.all()]
    return services.flex_offer_submit(
        aggregator=aggregator,
        congestion_point=world.cp_north,
        period=day,
        options=options or [option(power_w=power_w, price=price, isps=indexes,
                                   min_activation_factor=min_activation_factor)],
        expires_at=flex_request.expires_at,
        flex_request=flex_request,
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
    assert len(view.options) == 1
    # 16 ISPs x 30 kW x 0.25 h = 120 kWh; EUR 45 / 120 kWh.
    assert view.options[0].energy_kwh == Decimal("120.000")
    assert view.options[0].eur_per_kwh == Decimal("0.375")
    # An all-or-nothing option posts a fixed factor of 1.00: no number input to fill in.
    assert 'name="option_reference" value="1"' in content
    assert '<input type="hidden" name="activation_factor" value="1.00">' in content
    assert 'type="number" name="activation_factor"' not in content


def test_accepting_an_offer_places_an_order(
    client: Client, world: World, tomorrow: date, django_capture_on_commit_callbacks
) -> None:
    flex_request = open_request(world, tomorrow)
    offer = submit_offer(world, flex_request)
    portal(client, world)
    # Run the on-commit market events too: the aggregator's subscriber must cope with a world without charge points.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("portal:flex-offer-accept", args=[offer.pk]),
                               {"option_reference": "1", "activation_factor": "1.00"}, follow=True)
    order = FlexOrder.objects.get(flex_offer=offer)
    assert (order.option.option_reference, order.activation_factor) == ("1", Decimal("1.00"))
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


# --- offer options and partial activation ---------------------------------------------------------------


def accept(client: Client, offer: FlexOffer, reference: str, factor: str) -> bytes:
    response = client.post(reverse("portal:flex-offer-accept", args=[offer.pk]),
                           {"option_reference": reference, "activation_factor": factor}, follow=True)
    assert response.status_code == 200
    return response.content


def test_a_partial_option_offers_a_factor_input_bounded_by_its_minimum(
    client: Client, world: World, tomorrow: date
) -> None:
    flex_request = open_request(world, tomorrow)
    submit_offer(world, flex_request, min_activation_factor="0.50")
    content = portal(client, world).get(reverse("portal:flex-request-detail", args=[flex_request.pk])).content.decode()
    assert 'type="number" name="activation_factor"' in content
    assert 'min="0.50" max="1.00" step="0.01" value="1.00"' in content
    option_id = FlexOffer.objects.get().options.get().pk
    assert f'<label for="activation-{option_id}"' in content


def test_accepting_an_option_partially_scales_its_isps_and_price(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    offer = submit_offer(world, flex_request, power_w=-30_000, price="45.00", min_activation_factor="0.50")
    content = accept(portal(client, world), offer, "1", "0.50")
    order = FlexOrder.objects.get(flex_offer=offer)
    assert order.activation_factor == Decimal("0.50")
    assert order.price_eur == Decimal("22.50")
    assert {row.power_w for row in order.isps.all()} == {-15_000}
    assert f"Order {order.order_reference} placed".encode() in content
    assert b"activation factor 0.50" in content

    detail = client.get(reverse("portal:order-detail", args=[order.pk]))
    assert detail.context["isps"][0].kw == Decimal("-15")
    assert b"Activation factor" in detail.content and b"0.50" in detail.content
    listing = client.get(reverse("portal:order-list")).content.decode()
    assert '<td class="num">0.50</td>' in listing


def test_a_factor_below_the_options_minimum_is_refused(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    offer = submit_offer(world, flex_request, min_activation_factor="0.50")
    content = accept(portal(client, world), offer, "1", "0.30")
    assert b"message--error" in content
    assert b"between 0.50 and 1.00" in content
    assert not FlexOrder.objects.exists()
    offer.refresh_from_db()
    assert offer.status == FlexOffer.Status.SUBMITTED


def test_a_malformed_factor_is_refused_before_the_service(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    offer = submit_offer(world, flex_request, min_activation_factor="0.50")
    content = accept(portal(client, world), offer, "1", "0.555")
    assert b"was not accepted" in content
    assert not FlexOrder.objects.exists()


def test_an_offer_with_two_options_shows_both_and_orders_the_one_accepted(
    client: Client, world: World, tomorrow: date
) -> None:
    world.cp_north.mutex_offers_supported = True
    world.cp_north.save()
    flex_request = open_request(world, tomorrow)
    indexes = window_indexes(tomorrow)
    offer = submit_offer(world, flex_request, options=[
        option(power_w=-30_000, price="45.00", isps=indexes, reference="A"),
        option(power_w=-45_000, price="80.00", isps=indexes, reference="B", min_activation_factor="0.60"),
    ])
    portal(client, world)
    response = client.get(reverse("portal:flex-request-detail", args=[flex_request.pk]))
    content = response.content.decode()
    view = response.context["offers"][0]
    assert [item.option.option_reference for item in view.options] == ["A", "B"]
    assert 'name="option_reference" value="A"' in content and 'name="option_reference" value="B"' in content
    assert "80.00" in content and "0.60" in content
    # The chart counts the larger option once: options are alternatives, they do not add up.
    assert response.context["requested_rows"][0].offered_kw == Decimal("-45")

    accept(client, offer, "B", "1.00")
    offer.refresh_from_db()
    assert offer.status == FlexOffer.Status.ACCEPTED
    order = FlexOrder.objects.get(flex_offer=offer)
    assert order.option.option_reference == "B"
    assert order.price_eur == Decimal("80.00")
    detail = client.get(reverse("portal:order-detail", args=[order.pk])).content.decode()
    assert '<span class="mono">B</span>' in detail
    after = client.get(reverse("portal:flex-request-detail", args=[flex_request.pk]))
    assert [item.ordered for item in after.context["offers"][0].options] == [False, True]
    assert after.context["requested_rows"][0].ordered_kw == Decimal("-45")


def test_an_offer_with_two_options_needs_the_option_named(client: Client, world: World, tomorrow: date) -> None:
    world.cp_north.mutex_offers_supported = True
    world.cp_north.save()
    flex_request = open_request(world, tomorrow)
    indexes = window_indexes(tomorrow)
    offer = submit_offer(world, flex_request, options=[
        option(power_w=-30_000, price="45.00", isps=indexes, reference="A"),
        option(power_w=-45_000, price="80.00", isps=indexes, reference="B"),
    ])
    content = accept(portal(client, world), offer, "", "1.00")
    assert b"several options" in content
    assert not FlexOrder.objects.exists()


# --- clearing recommendation -----------------------------------------------------------------------------


def two_offers(world: World, flex_request: FlexRequest) -> tuple[FlexOffer, FlexOffer]:
    """Voltflex is cheaper per kWh but covers 30 of the 40 kW; Chargeco covers all 40 kW alone.

    Voltflex: 30 kW x 4 h = 120 kWh for EUR 30 (0.25/kWh); Chargeco: 160 kWh for EUR 80 (0.50/kWh).
    Cheapest cover: Chargeco alone (EUR 80), not Voltflex + Chargeco (EUR 110).
    """
    cheap = submit_offer(world, flex_request, power_w=-30_000, price="30.00")
    covering = submit_offer(world, flex_request, power_w=-40_000, price="80.00", aggregator=world.chargeco)
    return cheap, covering


def test_the_recommendation_panel_lists_the_cheapest_cover(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    cheap, covering = two_offers(world, flex_request)
    response = portal(client, world).get(reverse("portal:flex-request-detail", args=[flex_request.pk]))
    panel = response.context["recommendation"]
    assert [(row.offer.pk, row.option_reference, row.activation_factor) for row in panel.chosen] == [
        (covering.pk, "1", Decimal("1.00"))
    ]
    assert panel.recommendation.total_cost_eur == Decimal("80.00")
    assert panel.expected_cost == "80.00"
    assert panel.short_isps == []
    assert [row.covered_kw for row in panel.isps] == [Decimal("40")] * 16
    content = response.content.decode()
    assert "Clearing recommendation" in content
    assert "Order this recommendation" in content
    assert reverse("portal:flex-request-order-recommendation", args=[flex_request.pk]) in content
    assert 'name="expected_cost_eur" value="80.00"' in content
    assert "Covers the reduction still needed in all 16 ISPs" in content
    assert "Solver: optimal" in content
    # Showing the recommendation orders nothing.
    assert not FlexOrder.objects.exists()


def test_ordering_the_recommendation_places_exactly_its_orders(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    cheap, covering = two_offers(world, flex_request)
    response = portal(client, world).post(
        reverse("portal:flex-request-order-recommendation", args=[flex_request.pk]), {"expected_cost_eur": "80.00"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("portal:flex-request-detail", args=[flex_request.pk])
    order = FlexOrder.objects.get()
    assert (order.flex_offer, order.option.option_reference, order.price_eur) == (covering, "1", Decimal("80.00"))
    assert order.created_by == world.gridco_user
    assert b"Recommendation ordered" in response.content
    assert order.order_reference.encode() in response.content
    cheap.refresh_from_db()
    assert cheap.status == FlexOffer.Status.SUBMITTED
    flex_request.refresh_from_db()
    assert flex_request.status == FlexRequest.Status.ORDERED
    # Fully ordered: no panel any more.
    assert response.context["recommendation"] is None


def test_a_stale_expected_cost_orders_nothing(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    two_offers(world, flex_request)
    response = portal(client, world).post(
        reverse("portal:flex-request-order-recommendation", args=[flex_request.pk]), {"expected_cost_eur": "30.00"},
        follow=True,
    )
    assert b"message--error" in response.content
    assert b"Nothing was ordered" in response.content and b"changed" in response.content
    assert not FlexOrder.objects.exists()
    assert FlexOffer.objects.filter(status=FlexOffer.Status.SUBMITTED).count() == 2


def test_ordering_the_recommendation_needs_the_cost_shown_and_a_post(
    client: Client, world: World, tomorrow: date
) -> None:
    flex_request = open_request(world, tomorrow)
    two_offers(world, flex_request)
    url = reverse("portal:flex-request-order-recommendation", args=[flex_request.pk])
    portal(client, world)
    assert client.get(url).status_code == 405
    response = client.post(url, {}, follow=True)
    assert b"Nothing was ordered" in response.content
    assert client.post(reverse("portal:flex-request-detail", args=[flex_request.pk])).status_code == 405
    assert not FlexOrder.objects.exists()


def test_ordering_with_nothing_to_order_shows_an_error(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    response = portal(client, world).post(
        reverse("portal:flex-request-order-recommendation", args=[flex_request.pk]), {"expected_cost_eur": "0"},
        follow=True,
    )
    assert b"Nothing was ordered: There is nothing to order" in response.content
    assert not FlexOrder.objects.exists()


def test_the_panel_reports_isps_the_offers_cannot_cover(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    indexes = window_indexes(tomorrow)
    offer = submit_offer(world, flex_request, power_w=-50_000, price="40.00", isps=indexes[:8])  # 17:00-19:00 only
    response = portal(client, world).get(reverse("portal:flex-request-detail", args=[flex_request.pk]))
    panel = response.context["recommendation"]
    assert [row.offer.pk for row in panel.chosen] == [offer.pk]
    assert [row.label for row in panel.short_isps] == [isp_label for isp_label in
                                                       (isp_time.isp_slot(tomorrow, i).label for i in indexes[8:])]
    assert panel.short_isps[0].label == "19:00"
    assert {row.short_kw for row in panel.short_isps} == {Decimal("40")}
    assert not panel.recommendation.fully_covered
    content = response.content.decode()
    assert "Short in 8 ISPs: 19:00 (40.0 kW)" in content
    assert content.count('class="row--short"') == 8


def test_no_panel_without_open_offers(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    response = portal(client, world).get(reverse("portal:flex-request-detail", args=[flex_request.pk]))
    assert response.context["recommendation"] is None
    assert b"Clearing recommendation" not in response.content


# --- revisions -------------------------------------------------------------------------------------------


def test_the_revise_form_starts_from_the_request(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    portal(client, world)
    detail = client.get(reverse("portal:flex-request-detail", args=[flex_request.pk]))
    assert reverse("portal:flex-request-revise", args=[flex_request.pk]).encode() in detail.content
    response = client.get(reverse("portal:flex-request-revise", args=[flex_request.pk]))
    assert response.status_code == 200
    form = response.context["form"]
    assert form["period"].value() == tomorrow
    assert form.fields["period"].disabled
    assert (form["window_start"].value(), form["window_end"].value()) == WINDOW
    assert form["min_reduction_kw"].value() == Decimal("40")
    assert b"Save revision 2" in response.content


def test_revising_an_open_request_supersedes_it(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    offer = submit_offer(world, flex_request)
    other_day = (tomorrow + timedelta(days=1)).isoformat()
    response = portal(client, world).post(
        reverse("portal:flex-request-revise", args=[flex_request.pk]),
        form_data(tomorrow, period=other_day, window_start="18:00", window_end="20:00", min_reduction_kw="25"),
        follow=True,
    )
    revision = FlexRequest.objects.get(revision=2)
    assert response.redirect_chain[-1][0] == reverse("portal:flex-request-detail", args=[revision.pk])
    assert b"Revision 2 opened" in response.content
    assert revision.conversation_id == flex_request.conversation_id
    assert revision.status == FlexRequest.Status.OPEN
    assert revision.period == tomorrow  # the day is fixed: a posted one is ignored
    assert revision.created_by == world.gridco_user
    rows = list(revision.isps.all())
    assert [row.isp for row in rows] == window_indexes(tomorrow, time(18, 0), time(20, 0))
    assert {row.max_power_w for row in rows} == {-25_000}
    flex_request.refresh_from_db()
    offer.refresh_from_db()
    assert flex_request.status == FlexRequest.Status.SUPERSEDED
    assert offer.status == FlexOffer.Status.REJECTED

    old = client.get(reverse("portal:flex-request-detail", args=[flex_request.pk])).content.decode()
    assert "badge--superseded" in old
    assert reverse("portal:flex-request-detail", args=[revision.pk]) in old
    assert reverse("portal:flex-request-revise", args=[flex_request.pk]) not in old
    assert "Clearing recommendation" not in old
    new = client.get(reverse("portal:flex-request-detail", args=[revision.pk])).content.decode()
    assert reverse("portal:flex-request-detail", args=[flex_request.pk]) in new  # "revises revision 1"


def test_a_superseded_request_cannot_be_revised_again(client: Client, world: World, tomorrow: date) -> None:
    flex_request = open_request(world, tomorrow)
    portal(client, world)
    url = reverse("portal:flex-request-revise", args=[flex_request.pk])
    client.post(url, form_data(tomorrow, min_reduction_kw="25"))
    assert client.get(url).context["revisable"] is False
    response = client.post(url, form_data(tomorrow, min_reduction_kw="20"))
    assert response.status_code == 200
    assert b"The request was not revised." in response.content
    assert FlexRequest.objects.count() == 2


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
    revise = reverse("portal:flex-request-revise", args=[foreign_request.pk])
    assert client.get(revise).status_code == 404
    assert client.post(revise, form_data(tomorrow, min_reduction_kw="5")).status_code == 404
    recommend = reverse("portal:flex-request-order-recommendation", args=[foreign_request.pk])
    assert client.post(recommend, {"expected_cost_eur": "0"}).status_code == 404
    assert FlexRequest.objects.filter(dso=world.otherdso).count() == 1
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
