"""The flexibility model (aggregator.portfolio) and the offer proposal built on it (services.flex_offer_propose)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from unittest.mock import patch

import pytest

from aggregator import baseload, pricing
from aggregator.models import ChargePointOperator, ChargingSession
from aggregator.optimiser import DeviationBand
from aggregator.portfolio import d_prognosis_isps, portfolio_snapshot, request_caps_and_bands
from aggregator.services import flex_offer_propose
from common import isp as isp_time
from market import services as market_services
from market.models import Connection, FlexOfferOption
from market.services import IspBand, OfferOptionInput
from tests.builders import evening_isps, make_request
from tests.factories import (
    AggregatorConnectionFactory,
    ChargePointFactory,
    ChargePointOperatorFactory,
    ChargingSessionFactory,
    ConnectionFactory,
)

pytestmark = pytest.mark.django_db

SPRING_DST = date(2027, 3, 28)  # 92 ISPs
AUTUMN_DST = date(2027, 10, 31)  # 100 ISPs
TZ = isp_time.MARKET_TZ


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


def plug_in(
    *, cpo: ChargePointOperator, connection: Connection, arrival: datetime, departure: datetime,
    energy_kwh: str = "20", max_power_w: int = 11_000, status: str = ChargingSession.Status.PENDING,
) -> ChargingSession:
    """One car at a fresh charge point of `cpo` on `connection`."""
    point = ChargePointFactory(cpo=cpo, connection=connection, max_power_w=max(max_power_w, 1000))
    return ChargingSessionFactory(charge_point=point, arrival_at=arrival, expected_departure_at=departure,
                                  energy_requested_kwh=Decimal(energy_kwh), max_power_w=max_power_w, status=status)


def snapshot_of(world, day: date, aggregator=None, point=None):
    return portfolio_snapshot(aggregator=aggregator or world.voltflex, congestion_point=point or world.cp_north,
                              period=day)


def annual_kwh(connections) -> int:
    return sum(connection.annual_consumption_kwh for connection in connections)


class TestPortfolioSnapshot:
    def test_it_holds_only_our_sessions_on_connections_we_represent_that_day(self, world, tomorrow):
        voltflex_cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
        chargeco_cpo = ChargePointOperatorFactory(aggregator=world.chargeco)
        evening, morning = local(tomorrow, 18), local(tomorrow, 23)
        ours = [plug_in(cpo=voltflex_cpo, connection=connection, arrival=evening, departure=morning)
                for connection in world.voltflex_connections]
        # Chargeco's car on cp_north, at Chargeco's CPO and connection.
        plug_in(cpo=chargeco_cpo, connection=world.chargeco_connections[0], arrival=evening, departure=morning)
        # Our CPO's charge point on a connection Chargeco represents.
        plug_in(cpo=voltflex_cpo, connection=world.chargeco_connections[1], arrival=evening, departure=morning)
        # A connection we stopped representing the day before.
        former = ConnectionFactory(congestion_point=world.cp_north)
        AggregatorConnectionFactory(aggregator=world.voltflex, connection=former, valid_from=date(2020, 1, 1),
                                    valid_until=tomorrow)
        plug_in(cpo=voltflex_cpo, connection=former, arrival=evening, departure=morning)
        # A session that already ended, and one that left before the day began.
        plug_in(cpo=voltflex_cpo, connection=world.voltflex_connections[0], arrival=evening, departure=morning,
                status=ChargingSession.Status.COMPLETED)
        plug_in(cpo=voltflex_cpo, connection=world.voltflex_connections[1],
                arrival=local(tomorrow, 0) - timedelta(hours=10), departure=local(tomorrow, 0))
        # A session at an inactive CPO.
        inactive_cpo = ChargePointOperatorFactory(aggregator=world.voltflex, is_active=False)
        plug_in(cpo=inactive_cpo, connection=world.voltflex_connections[2], arrival=evening, departure=morning)

        snapshot = snapshot_of(world, tomorrow)

        assert {session.pk for session in snapshot.sessions} == {session.pk for session in ours}
        assert [item.key for item in snapshot.inputs] == [str(session.pk) for session in snapshot.sessions]
        assert snapshot.avail.shape == snapshot.uncontrolled_kw.shape == (3, snapshot.horizon.slots)

    def test_a_representation_that_starts_the_next_day_does_not_count_yet(self, world, tomorrow):
        cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
        future = ConnectionFactory(congestion_point=world.cp_north)
        AggregatorConnectionFactory(aggregator=world.voltflex, connection=future,
                                    valid_from=tomorrow + timedelta(days=1))
        plug_in(cpo=cpo, connection=future, arrival=local(tomorrow, 18), departure=local(tomorrow, 22))
        assert snapshot_of(world, tomorrow).sessions == []

    def test_chargeco_sees_its_own_sessions_per_congestion_point(self, world, tomorrow):
        cpo = ChargePointOperatorFactory(aggregator=world.chargeco)
        north = plug_in(cpo=cpo, connection=world.chargeco_connections[0], arrival=local(tomorrow, 18),
                        departure=local(tomorrow, 22))
        south = plug_in(cpo=cpo, connection=world.chargeco_connections[2], arrival=local(tomorrow, 18),
                        departure=local(tomorrow, 22))
        assert snapshot_of(world, tomorrow, world.chargeco, world.cp_north).sessions == [north]
        assert snapshot_of(world, tomorrow, world.chargeco, world.cp_south).sessions == [south]
        assert snapshot_of(world, tomorrow).sessions == []

    def test_the_horizon_runs_from_the_day_start_to_the_last_departure(self, world, tomorrow):
        cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
        plug_in(cpo=cpo, connection=world.voltflex_connections[0], arrival=local(tomorrow, 18),
                departure=local(tomorrow + timedelta(days=1), 7, 10))
        snapshot = snapshot_of(world, tomorrow)
        assert snapshot.horizon.start == isp_time.day_start(tomorrow)
        # The plan works to the departure minus the 15-minute safety margin (06:55), rounded up to the ISP.
        assert snapshot.horizon.end == local(tomorrow + timedelta(days=1), 7, 0)
        assert snapshot.base_load_kw.shape == (snapshot.horizon.slots,)

    def test_the_base_load_covers_only_represented_connections(self, world, tomorrow):
        snapshot = snapshot_of(world, tomorrow)
        slot = snapshot.slot_of_isp(70)
        expected = baseload.household_kw(annual_kwh=annual_kwh(world.voltflex_connections),
                                         slot_start=isp_time.isp_start(tomorrow, 70))
        assert snapshot.base_load_kw[slot] == pytest.approx(expected)


class TestDPrognosisIsps:
    def test_it_is_base_load_plus_full_power_charging_from_arrival(self, world, tomorrow):
        cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
        # 5 kWh at 11 kW from 17:00: 2.75 kWh in the 17:00 ISP (11 kW), 2.25 kWh in the 17:15 ISP (9 kW), then 0.
        plug_in(cpo=cpo, connection=world.voltflex_connections[0], arrival=local(tomorrow, 17),
                departure=local(tomorrow, 23), energy_kwh="5", max_power_w=11_000)
        rows = {row.isp: row.power_w for row in d_prognosis_isps(snapshot_of(world, tomorrow))}
        annual = annual_kwh(world.voltflex_connections)

        def by_hand(local_start: datetime, ev_kw: float) -> int:
            return round((baseload.household_kw(annual_kwh=annual, slot_start=local_start) + ev_kw) * 1000)

        _, first = isp_time.isp_of(local(tomorrow, 17))
        assert rows[first] == by_hand(local(tomorrow, 17), 11.0)
        assert rows[first + 1] == by_hand(local(tomorrow, 17, 15), 9.0)
        assert rows[first + 2] == by_hand(local(tomorrow, 17, 30), 0.0)
        assert rows[first - 1] == by_hand(local(tomorrow, 16, 45), 0.0)

    def test_it_has_one_row_per_isp_of_a_normal_day(self, world, tomorrow):
        rows = d_prognosis_isps(snapshot_of(world, tomorrow))
        assert [row.isp for row in rows] == list(range(1, isp_time.isp_count(tomorrow) + 1))

    @pytest.mark.parametrize(("day", "isps", "plugged_isps"), [(AUTUMN_DST, 100, 20), (SPRING_DST, 92, 12)])
    def test_dst_days_have_their_own_number_of_isps(self, world, day, isps, plugged_isps):
        cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
        # 01:00-05:00 local crosses the clock change: 5 elapsed hours in autumn, 3 in spring. The car wants more
        # than it can get, so it draws 3.7 kW in every plugged-in ISP.
        plug_in(cpo=cpo, connection=world.voltflex_connections[0], arrival=local(day, 1), departure=local(day, 5),
                energy_kwh="100", max_power_w=3_700)
        plug_in(cpo=cpo, connection=world.voltflex_connections[1], arrival=local(day, 20), departure=local(day, 23),
                energy_kwh="11", max_power_w=11_000)
        rows = d_prognosis_isps(snapshot_of(world, day))
        annual = annual_kwh(world.voltflex_connections)

        assert [row.isp for row in rows] == list(range(1, isps + 1))
        ev_w = {}
        for slot, row in zip(isp_time.isp_slots(day), rows, strict=True):
            ev_w[slot.index] = row.power_w - baseload.household_kw(annual_kwh=annual, slot_start=slot.start) * 1000
        night = [index for index, watts in ev_w.items() if watts == pytest.approx(3700, abs=0.5)]
        evening = [index for index, watts in ev_w.items() if watts == pytest.approx(11_000, abs=0.5)]
        assert len(night) == plugged_isps
        assert [isp_time.isp_slot(day, index).local_start.hour for index in evening] == [20, 20, 20, 20]
        assert all(watts == pytest.approx(0, abs=0.5) for index, watts in ev_w.items()
                   if index not in night and index not in evening)


class TestRequestCapsAndBands:
    def test_requested_isps_become_caps_and_available_isps_bands(self, world, tomorrow):
        request = market_services.flex_request_create(
            dso=world.gridco, congestion_point=world.cp_north, period=tomorrow,
            isps=[
                IspBand(isp=70, disposition="Requested", min_power_w=-40_000, max_power_w=-20_000),
                IspBand(isp=71, disposition="Requested", min_power_w=-12_500, max_power_w=0),
                IspBand(isp=72, disposition="Requested", min_power_w=10_000, max_power_w=20_000),  # upward
                IspBand(isp=80, disposition="Available", min_power_w=-5_000, max_power_w=8_000),
            ],
            expires_at=isp_time.isp_start(tomorrow, 70) - timedelta(hours=1),
        )
        snapshot = snapshot_of(world, tomorrow)
        caps, bands = request_caps_and_bands(snapshot, request)
        assert caps == {snapshot.slot_of_isp(70): 40.0, snapshot.slot_of_isp(71): 12.5}
        assert bands == {snapshot.slot_of_isp(80): DeviationBand(min_kw=-5.0, max_kw=8.0)}


def propose_for(world, day, *, reduction_w: int = 20_000):
    request = make_request(dso=world.gridco, point=world.cp_north, day=day, reduction_w=reduction_w)
    return request, flex_offer_propose(aggregator=world.voltflex, flex_request=request)


class TestFlexOfferPropose:
    @pytest.fixture
    def evening_cars(self, world, tomorrow):
        cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
        next_morning = tomorrow + timedelta(days=1)
        return [
            plug_in(cpo=cpo, connection=world.voltflex_connections[0], arrival=local(tomorrow, 17),
                    departure=local(next_morning, 7), energy_kwh="20", max_power_w=11_000),
            plug_in(cpo=cpo, connection=world.voltflex_connections[1], arrival=local(tomorrow, 17, 40),
                    departure=local(next_morning, 6, 30), energy_kwh="30", max_power_w=7_400),
            plug_in(cpo=cpo, connection=world.voltflex_connections[2], arrival=local(tomorrow, 18, 7),
                    departure=local(next_morning, 8), energy_kwh="12", max_power_w=3_700),
        ]

    def test_it_offers_reductions_only_in_requested_isps_within_the_request(self, world, tomorrow, evening_cars):
        request, proposal = propose_for(world, tomorrow, reduction_w=8_000)
        bands = {row.isp: row for row in request.isps.all()}
        assert proposal.offer_isps, "evening cars that stay overnight can always shift"
        assert proposal.sessions == 3
        for row in proposal.offer_isps:
            assert row.power_w < 0
            assert bands[row.isp].disposition == "Requested"
            assert -row.power_w <= -bands[row.isp].min_power_w  # never more than |MinPower| (16 kW here)
        assert max(-row.power_w for row in proposal.offer_isps) == pytest.approx(16_000, abs=1)

    def test_it_never_offers_more_than_the_uncontrolled_charging(self, world, tomorrow, evening_cars):
        _, proposal = propose_for(world, tomorrow, reduction_w=50_000)
        snapshot = snapshot_of(world, tomorrow)
        ev_w = snapshot.uncontrolled_kw.sum(axis=0) * 1000
        for row in proposal.offer_isps:
            assert -row.power_w <= ev_w[snapshot.slot_of_isp(row.isp)] + 1e-6

    def test_its_price_follows_the_pricing_model(self, world, tomorrow, evening_cars):
        _, proposal = propose_for(world, tomorrow)
        shift_kwh = sum(-row.power_w for row in proposal.offer_isps) / 1000 * isp_time.ISP_HOURS
        assert proposal.energy_shift_kwh == pytest.approx(shift_kwh)
        assert proposal.price_eur > 0
        assert proposal.price_eur == pricing.offer_price_eur(energy_shift_kwh=proposal.energy_shift_kwh)

    def test_it_expires_no_later_than_the_request_or_the_first_offered_isp(self, world, tomorrow, evening_cars):
        request, proposal = propose_for(world, tomorrow)
        first = min(row.isp for row in proposal.offer_isps)
        assert proposal.expires_at <= request.expires_at
        assert proposal.expires_at <= isp_time.isp_start(tomorrow, first)

    def test_its_prognosis_is_the_uncontrolled_baseline_of_the_day(self, world, tomorrow, evening_cars):
        _, proposal = propose_for(world, tomorrow)
        assert proposal.d_prognosis_isps == d_prognosis_isps(snapshot_of(world, tomorrow))
        assert len(proposal.d_prognosis_isps) == isp_time.isp_count(tomorrow)

    def test_it_can_be_submitted_to_the_market_as_is(self, world, tomorrow, evening_cars):
        request, proposal = propose_for(world, tomorrow)
        market_services.d_prognosis_submit(aggregator=world.voltflex, congestion_point=world.cp_north,
                                           period=tomorrow, isps=proposal.d_prognosis_isps)
        offer = market_services.flex_offer_submit(
            aggregator=world.voltflex, congestion_point=world.cp_north, period=tomorrow,
            options=[OfferOptionInput(option_reference="1", price_eur=proposal.price_eur, isps=proposal.offer_isps,
                                      min_activation_factor=proposal.min_activation_factor)],
            expires_at=proposal.expires_at, flex_request=request,
        )
        offered = FlexOfferOption.objects.get(flex_offer=offer)
        assert (offered.price_eur, offered.min_activation_factor) == (proposal.price_eur,
                                                                      proposal.min_activation_factor)
        assert [(row.isp, row.power_w) for row in offered.isps.order_by("isp")] == [
            (row.isp, row.power_w) for row in proposal.offer_isps
        ]

    def test_it_offers_no_isp_past_gate_closure(self, world, tomorrow, evening_cars):
        request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
        gate = timedelta(minutes=world.cp_north.market.gate_closure_minutes)
        fifth = evening_isps(tomorrow)[4]
        with patch("common.time.now", return_value=isp_time.isp_start(tomorrow, fifth) - gate):
            proposal = flex_offer_propose(aggregator=world.voltflex, flex_request=request)
        assert not proposal.is_empty
        assert min(row.isp for row in proposal.offer_isps) > fifth
        assert proposal.expires_at <= isp_time.isp_start(tomorrow, min(row.isp for row in proposal.offer_isps))

    def test_with_no_sessions_the_proposal_is_empty(self, world, tomorrow):
        _, proposal = propose_for(world, tomorrow)
        assert proposal.is_empty
        assert proposal.offer_isps == []
        assert proposal.sessions == 0
        assert proposal.energy_shift_kwh == 0
        assert len(proposal.d_prognosis_isps) == isp_time.isp_count(tomorrow)

    def test_cars_that_leave_before_the_window_offer_nothing(self, world, tomorrow):
        cpo = ChargePointOperatorFactory(aggregator=world.voltflex)
        plug_in(cpo=cpo, connection=world.voltflex_connections[0], arrival=local(tomorrow, 8),
                departure=local(tomorrow, 12))
        _, proposal = propose_for(world, tomorrow)
        assert proposal.is_empty
        assert set(evening_isps(tomorrow)).isdisjoint(row.isp for row in proposal.offer_isps)


class TestPricing:
    def test_the_price_is_driver_compensation_per_kwh_shifted_plus_margin(self, settings):
        settings.AGGREGATOR_COMPENSATION_EUR_PER_KWH = "0.08"
        settings.AGGREGATOR_MARGIN_PCT = "25"
        assert pricing.offer_price_eur(energy_shift_kwh=10) == Decimal("1.00")  # 10 x 0.08 x 1.25
        assert pricing.offer_price_eur(energy_shift_kwh=33.3) == Decimal("3.33")

    def test_the_cost_model_is_configurable(self, settings):
        settings.AGGREGATOR_COMPENSATION_EUR_PER_KWH = "0.20"
        settings.AGGREGATOR_MARGIN_PCT = "0"
        assert pricing.offer_price_eur(energy_shift_kwh=10) == Decimal("2.00")

    def test_a_tiny_shift_still_asks_a_cent(self, settings):
        assert pricing.offer_price_eur(energy_shift_kwh=0.001) == Decimal("0.01")
