"""Market services: the USEF flex trading state machines, each refusal with its code."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from unittest.mock import patch

import pytest

from common import isp as isp_time
from common.exceptions import ApplicationError, TransitionError
from common.models import AuditEvent
from market import events, services
from market.models import DPrognosis, FlexOffer, FlexOfferOption, FlexOrder, FlexRequest
from market.services import IspBand, IspPower, OfferOptionInput
from tests.builders import evening_isps, make_offer, make_prognosis, make_request, option

pytestmark = pytest.mark.django_db

SPRING_DST = date(2027, 3, 28)  # 92 ISPs
AUTUMN_DST = date(2027, 10, 31)  # 100 ISPs


def requested(isp: int, *, low: int = -40_000, high: int = -20_000) -> IspBand:
    return IspBand(isp=isp, disposition="Requested", min_power_w=low, max_power_w=high)


def create(world, day, bands, **kwargs):
    defaults = {"dso": world.gridco, "congestion_point": world.cp_north, "period": day, "isps": bands,
                "expires_at": isp_time.day_start(day)}
    defaults.update(kwargs)
    return services.flex_request_create(**defaults)


def mutex_request(world, day):
    """A 20 kW request on a point that takes offers with several options, and the aggregator's baseline."""
    world.cp_north.mutex_offers_supported = True
    world.cp_north.save()
    request = make_request(dso=world.gridco, point=world.cp_north, day=day, reduction_w=20_000)
    make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=day)
    return request


def assert_refused(code, call, *args, **kwargs):
    with pytest.raises(ApplicationError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value


class TestFlexRequestCreate:
    def test_it_opens_a_request_with_its_isps_and_audits_it(self, world, tomorrow, django_capture_on_commit_callbacks):
        received = []
        events.market_event.connect(lambda sender, **kw: received.append(kw["name"]), weak=False,
                                    dispatch_uid="test-recv")
        try:
            with django_capture_on_commit_callbacks(execute=True):
                request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
        finally:
            events.market_event.disconnect(dispatch_uid="test-recv")
        assert request.status == FlexRequest.Status.OPEN
        assert [row.isp for row in request.isps.all()] == evening_isps(tomorrow)
        assert {row.max_power_w for row in request.isps.all()} == {-20_000}
        actions = list(AuditEvent.objects.filter(object_id=str(request.pk)).values_list("action", flat=True))
        assert set(actions) == {"flex_request.created", "flex_request.opened"}
        assert events.FLEX_REQUEST_OPENED in received

    def test_revisions_count_up_per_conversation_and_a_revision_supersedes_its_predecessor(self, world, tomorrow):
        first = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
        independent = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
        assert (first.revision, independent.revision) == (1, 1)
        assert first.conversation_id != independent.conversation_id

        offer = make_offer(aggregator=world.voltflex, request=first)
        revised = services.flex_request_revise(
            flex_request=first, dso=world.gridco, isps=[requested(isp) for isp in evening_isps(tomorrow)[:4]],
            expires_at=first.expires_at,
        )
        assert (revised.revision, revised.conversation_id) == (2, first.conversation_id)
        assert revised.status == FlexRequest.Status.OPEN
        assert revised.pk != first.pk
        first.refresh_from_db()
        independent.refresh_from_db()
        offer.refresh_from_db()
        assert first.status == FlexRequest.Status.SUPERSEDED
        assert independent.status == FlexRequest.Status.OPEN  # another conversation: untouched
        assert offer.status == FlexOffer.Status.REJECTED  # offers on the old revision lapse

    def test_an_aggregator_cannot_open_a_request(self, world, tomorrow):
        assert_refused("wrong_role", create, world, tomorrow, [requested(70)], dso=world.voltflex)

    def test_a_dso_cannot_request_on_another_dsos_point(self, world, tomorrow):
        assert_refused("foreign_congestion_point", create, world, tomorrow, [requested(70)], dso=world.otherdso)

    def test_isp_beyond_the_day_is_refused_and_dst_days_have_their_own_length(self, world):
        error = assert_refused("isp_out_of_bounds", create, world, SPRING_DST, [requested(70), requested(93)])
        assert error.field == "isps[1].isp"
        assert create(world, SPRING_DST, [requested(92)]).isps.get().isp == 92
        assert create(world, AUTUMN_DST, [requested(100)]).isps.get().isp == 100
        assert_refused("isp_out_of_bounds", create, world, AUTUMN_DST, [requested(101)])
        assert_refused("isp_out_of_bounds", create, world, AUTUMN_DST, [requested(0)])

    def test_an_isp_given_twice_is_a_conflict(self, world, tomorrow):
        assert_refused("isp_conflict", create, world, tomorrow, [requested(70), requested(70)])

    def test_no_isps_is_refused(self, world, tomorrow):
        with pytest.raises(ApplicationError) as caught:
            services.flex_request_create(dso=world.gridco, congestion_point=world.cp_north, period=tomorrow, isps=[],
                                         expires_at=isp_time.isp_start(tomorrow, 60))
        assert caught.value.code == "missing_isps"

    def test_only_available_isps_lack_a_requested_disposition(self, world, tomorrow):
        band = IspBand(isp=70, disposition="Available", min_power_w=-5000, max_power_w=5000)
        assert_refused("lacking_requested_disposition", create, world, tomorrow, [band])

    def test_min_above_max_is_a_power_discrepancy(self, world, tomorrow):
        assert_refused("power_discrepancy", create, world, tomorrow, [requested(70, low=-10_000, high=-20_000)])

    def test_a_requested_band_straddling_zero_is_refused(self, world, tomorrow):
        assert_refused("requested_power_discrepancy", create, world, tomorrow, [requested(70, low=-10_000, high=5000)])

    def test_unknown_disposition_is_refused(self, world, tomorrow):
        bands = [requested(70), IspBand(isp=71, disposition="Maybe", min_power_w=0, max_power_w=0)]
        assert_refused("invalid_choice", create, world, tomorrow, bands)

    def test_a_past_period_and_a_started_isp_are_refused(self, world, tomorrow):
        yesterday = tomorrow - timedelta(days=2)
        assert_refused("period_in_past", create, world, yesterday, [requested(70)],
                       expires_at=isp_time.isp_start(tomorrow, 1))
        with patch("common.time.now", return_value=isp_time.isp_start(tomorrow, 70)):
            assert_refused("isp_in_past", create, world, tomorrow, [requested(80), requested(70)],
                           expires_at=isp_time.isp_start(tomorrow, 75))

    def test_it_refuses_a_requested_isp_after_gate_closure(self, world, tomorrow):
        gate = timedelta(minutes=world.cp_north.market.gate_closure_minutes)
        assert gate == timedelta(minutes=60)  # the default market's gate closure
        with patch("common.time.now", return_value=isp_time.isp_start(tomorrow, 70) - gate):
            error = assert_refused("gate_closed", create, world, tomorrow, [requested(80), requested(70)],
                                   expires_at=isp_time.isp_start(tomorrow, 75))
        assert error.field == "isps[1].isp"
        just_before = isp_time.isp_start(tomorrow, 70) - gate - timedelta(seconds=1)
        with patch("common.time.now", return_value=just_before):
            request = create(world, tomorrow, [requested(70)], expires_at=isp_time.isp_start(tomorrow, 70))
        assert request.status == FlexRequest.Status.OPEN

    def test_expiry_must_be_future_and_not_after_the_last_isp(self, world, tomorrow):
        assert_refused("expiration_out_of_bounds", create, world, tomorrow, [requested(70)],
                       expires_at=isp_time.isp_start(tomorrow, 1) - timedelta(days=5))
        assert_refused("expiration_out_of_bounds", create, world, tomorrow, [requested(70)],
                       expires_at=isp_time.isp_end(tomorrow, 70) + timedelta(minutes=1))

    def test_nothing_is_written_when_a_request_is_refused(self, world, tomorrow):
        with pytest.raises(ApplicationError):
            create(world, tomorrow, [requested(70), requested(70)])
        assert FlexRequest.objects.count() == 0
        assert AuditEvent.objects.count() == 0


class TestFlexRequestTransitions:
    def test_opening_an_open_request_is_refused(self, world, tomorrow):
        request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
        with pytest.raises(TransitionError) as caught:
            services.flex_request_open(flex_request=request)
        assert caught.value.code == "invalid_state"
        assert caught.value.status_code == 409

    def test_a_draft_opens(self, world, tomorrow):
        request = create(world, tomorrow, [requested(70)], open_now=False)
        assert request.status == FlexRequest.Status.DRAFT
        services.flex_request_open(flex_request=request)
        request.refresh_from_db()
        assert request.status == FlexRequest.Status.OPEN

    def test_a_draft_edited_into_an_invalid_request_does_not_open(self, world, tomorrow):
        request = create(world, tomorrow, [requested(70)], open_now=False)
        request.isps.update(min_power_w=-10_000, max_power_w=5_000)  # e.g. edited in the admin console
        assert_refused("requested_power_discrepancy", services.flex_request_open, flex_request=request)
        request.refresh_from_db()
        assert request.status == FlexRequest.Status.DRAFT

    def test_cancel_rejects_open_offers_and_cannot_repeat(self, world, tomorrow):
        request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
        offer = make_offer(aggregator=world.voltflex, request=request)
        services.flex_request_cancel(flex_request=request)
        offer.refresh_from_db()
        assert offer.status == FlexOffer.Status.REJECTED
        with pytest.raises(TransitionError):
            services.flex_request_cancel(flex_request=request)

    def test_expiry_only_after_the_expiry_time(self, world, tomorrow):
        request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
        with pytest.raises(TransitionError) as caught:
            services.flex_request_expire(flex_request=request)
        assert caught.value.code == "not_expired"
        with patch("common.time.now", return_value=request.expires_at + timedelta(seconds=1)):
            counts = services.market_expire_due()
        assert counts["flex_requests"] == 1
        request.refresh_from_db()
        assert request.status == FlexRequest.Status.EXPIRED


class TestDPrognosis:
    def test_a_new_revision_supersedes_the_previous_one(self, world, tomorrow):
        first = make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=tomorrow)
        second = make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=tomorrow, power_w=1)
        first.refresh_from_db()
        assert (first.revision, first.status) == (1, DPrognosis.Status.SUPERSEDED)
        assert (second.revision, second.status) == (2, DPrognosis.Status.ACCEPTED)
        assert second.isps.count() == isp_time.isp_count(tomorrow)

    def test_it_must_cover_every_isp_of_a_dst_day(self, world):
        rows = [IspPower(isp=i, power_w=1) for i in range(1, 97)]
        error = assert_refused("isp_out_of_bounds", services.d_prognosis_submit, aggregator=world.voltflex,
                               congestion_point=world.cp_north, period=SPRING_DST, isps=rows)
        assert "92" in error.message
        rows = [IspPower(isp=i, power_w=1) for i in range(1, 97)]
        assert_refused("missing_isps", services.d_prognosis_submit, aggregator=world.voltflex,
                       congestion_point=world.cp_north, period=AUTUMN_DST, isps=rows)
        rows = [IspPower(isp=i, power_w=1) for i in range(1, 101)]
        assert services.d_prognosis_submit(aggregator=world.voltflex, congestion_point=world.cp_north,
                                           period=AUTUMN_DST, isps=rows).isps.count() == 100

    def test_an_aggregator_not_on_the_point_is_refused(self, world, tomorrow):
        assert_refused("congestion_point_not_represented", make_prognosis, aggregator=world.voltflex,
                       point=world.cp_south, day=tomorrow)

    def test_a_dso_cannot_submit_a_prognosis(self, world, tomorrow):
        assert_refused("wrong_role", make_prognosis, aggregator=world.gridco, point=world.cp_north, day=tomorrow)

    def test_a_past_day_is_refused(self, world, tomorrow):
        assert_refused("period_in_past", make_prognosis, aggregator=world.voltflex, point=world.cp_north,
                       day=tomorrow - timedelta(days=3))


class TestFlexOfferSubmit:
    def test_a_solicited_offer_references_request_and_baseline(self, world, tomorrow):
        request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
        offer = make_offer(aggregator=world.voltflex, request=request)
        assert offer.status == FlexOffer.Status.SUBMITTED
        assert offer.flex_request == request
        assert offer.conversation_id == request.conversation_id
        assert offer.d_prognosis.status == DPrognosis.Status.ACCEPTED
        assert not offer.unsolicited

    def test_an_unsolicited_offer_needs_no_request(self, world, tomorrow):
        make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=tomorrow)
        offer = services.flex_offer_submit(
            aggregator=world.voltflex, congestion_point=world.cp_north, period=tomorrow,
            options=[option(power_w=-5000, price="3.00", isps=[80])],
            expires_at=isp_time.isp_start(tomorrow, 80))
        assert offer.unsolicited
        assert offer.flex_request is None
        assert offer.conversation_id == offer.message_id  # an unsolicited offer starts its own conversation

    def _offer(self, world, request, *, isps=None, price_eur=Decimal("5.00"), **overrides):
        """One option (reference "1") of `isps` for `price_eur`, answering `request` unless overridden."""
        offered = OfferOptionInput(option_reference="1", price_eur=price_eur,
                                   isps=isps or [IspPower(isp=70, power_w=-10_000)])
        kwargs = {"aggregator": world.voltflex, "congestion_point": request.congestion_point,
                  "period": request.period, "options": [offered], "expires_at": request.expires_at,
                  "flex_request": request}
        kwargs.update(overrides)
        return services.flex_offer_submit(**kwargs)

    @pytest.fixture
    def request_with_baseline(self, world, tomorrow):
        request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
        make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=tomorrow)
        return request

    def test_without_a_prognosis_there_is_no_baseline(self, world, tomorrow):
        request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow)
        assert_refused("no_baseline", self._offer, world, request)

    def test_an_aggregator_not_on_the_point_is_refused(self, world, tomorrow, request_with_baseline):
        assert_refused("congestion_point_not_represented", self._offer, world, request_with_baseline,
                       aggregator=world.chargeco, congestion_point=world.cp_far)

    def test_a_request_on_another_point_is_a_mismatch(self, world, request_with_baseline, tomorrow):
        make_prognosis(aggregator=world.chargeco, point=world.cp_south, day=tomorrow)
        assert_refused("reference_congestion_point_mismatch", self._offer, world, request_with_baseline,
                       aggregator=world.chargeco, congestion_point=world.cp_south)

    def test_a_request_for_another_day_is_a_mismatch(self, world, request_with_baseline, tomorrow):
        later = tomorrow + timedelta(days=1)
        make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=later)
        assert_refused("reference_period_mismatch", self._offer, world, request_with_baseline, period=later,
                       expires_at=isp_time.isp_start(later, 70))

    def test_offering_only_outside_the_requested_isps_is_a_request_mismatch(self, world, request_with_baseline):
        assert_refused("request_mismatch", self._offer, world, request_with_baseline,
                       isps=[IspPower(isp=10, power_w=-1000)], expires_at=isp_time.day_start(request_with_baseline.period))

    def test_more_consumption_on_a_downward_request_is_the_wrong_sign(self, world, request_with_baseline):
        error = assert_refused("wrong_power_sign", self._offer, world, request_with_baseline,
                               isps=[IspPower(isp=70, power_w=-1000), IspPower(isp=71, power_w=1000)])
        assert error.field == "options[0].isps[1].power_w"

    def test_an_all_zero_offer_is_empty(self, world, request_with_baseline):
        assert_refused("empty_offer", self._offer, world, request_with_baseline, isps=[IspPower(isp=70, power_w=0)])

    def test_prices_have_cent_precision_and_are_not_negative(self, world, request_with_baseline):
        assert_refused("price_precision", self._offer, world, request_with_baseline, price_eur=Decimal("1.005"))
        assert_refused("invalid_price", self._offer, world, request_with_baseline, price_eur=Decimal("-1"))

    def test_a_cancelled_request_cannot_be_answered(self, world, request_with_baseline):
        services.flex_request_cancel(flex_request=request_with_baseline)
        assert_refused("reference_not_open", self._offer, world, request_with_baseline)

    def test_an_expired_request_cannot_be_answered(self, world, request_with_baseline):
        later = request_with_baseline.expires_at + timedelta(seconds=1)
        with patch("common.time.now", return_value=later):
            assert_refused("reference_expired", self._offer, world, request_with_baseline,
                           expires_at=later + timedelta(minutes=5))

    def test_a_superseded_prognosis_is_no_baseline(self, world, request_with_baseline):
        old = DPrognosis.objects.get(aggregator=world.voltflex)
        make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=request_with_baseline.period)
        assert_refused("no_baseline", self._offer, world, request_with_baseline, d_prognosis=old)

    def test_it_rejects_offer_after_gate_closure(self, world, tomorrow):
        make_prognosis(aggregator=world.voltflex, point=world.cp_north, day=tomorrow)
        gate_closes = isp_time.isp_start(tomorrow, 80) - timedelta(minutes=60)
        unsolicited = {"aggregator": world.voltflex, "congestion_point": world.cp_north, "period": tomorrow,
                       "options": [option(power_w=-5000, price="3.00", isps=[81, 80])],
                       "expires_at": isp_time.isp_start(tomorrow, 80)}
        with patch("common.time.now", return_value=gate_closes):
            error = assert_refused("gate_closed", services.flex_offer_submit, **unsolicited)
        assert error.field == "options[0].isps[1].isp"
        assert FlexOffer.objects.count() == 0
        with patch("common.time.now", return_value=gate_closes - timedelta(seconds=1)):
            assert services.flex_offer_submit(**unsolicited).status == FlexOffer.Status.SUBMITTED

    def test_several_options_need_a_point_that_supports_mutex_offers(self, world, request_with_baseline):
        isps = evening_isps(request_with_baseline.period)
        alternatives = [option(power_w=-15_000, price="12.50", isps=isps, reference="A"),
                        option(power_w=-20_000, price="18.00", isps=isps, reference="B")]
        error = assert_refused("no_mutex_offer_support", self._offer, world, request_with_baseline,
                               options=alternatives)
        assert error.field == "options"
        world.cp_north.mutex_offers_supported = True
        world.cp_north.save()
        request_with_baseline.congestion_point.refresh_from_db()
        offer = self._offer(world, request_with_baseline, options=alternatives)
        assert [(o.option_reference, o.price_eur) for o in offer.options.all()] == [
            ("A", Decimal("12.50")), ("B", Decimal("18.00"))]
        assert_refused("duplicate_option_reference", self._offer, world, request_with_baseline,
                       options=[alternatives[0], alternatives[0]])

    def test_another_aggregators_prognosis_cannot_be_used(self, world, request_with_baseline):
        theirs = make_prognosis(aggregator=world.chargeco, point=world.cp_north, day=request_with_baseline.period)
        assert_refused("unknown_reference", self._offer, world, request_with_baseline, d_prognosis=theirs)


class TestFlexOfferAcceptAndOrders:
    @pytest.fixture
    def offer(self, world, tomorrow):
        request = make_request(dso=world.gridco, point=world.cp_north, day=tomorrow, reduction_w=20_000)
        return make_offer(aggregator=world.voltflex, request=request, power_w=-15_000, price="12.50")

    def test_accepting_copies_the_offer_into_a_binding_order(self, world, offer, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            order = services.flex_offer_accept(flex_offer=offer, dso=world.gridco, actor=world.gridco_user)
        assert len(callbacks) == 1  # flex_order.placed is published only after commit
        offer.refresh_from_db()
        assert offer.status == FlexOffer.Status.ACCEPTED
        assert order.status == FlexOrder.Status.PLACED
        assert order.price_eur == Decimal("12.50")
        assert order.d_prognosis == offer.d_prognosis
        assert order.option == offer.options.get()
        assert [(r.isp, r.power_w) for r in order.isps.all()] == [
            (r.isp, r.power_w) for r in order.option.isps.all()
        ]
        assert {r.power_w for r in order.isps.all()} == {-15_000}
        offer.flex_request.refresh_from_db()
        # 15 kW offered against 20 kW requested: not yet covered.
        assert offer.flex_request.status == FlexRequest.Status.PARTIALLY_ORDERED
        assert AuditEvent.objects.filter(action="flex_order.placed", actor=world.gridco_user).count() == 1

    def test_a_second_order_covering_the_rest_makes_the_request_ordered(self, world, offer):
        services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
        second = make_offer(aggregator=world.chargeco, request=offer.flex_request, power_w=-5_000)
        services.flex_offer_accept(flex_offer=second, dso=world.gridco)
        offer.flex_request.refresh_from_db()
        assert offer.flex_request.status == FlexRequest.Status.ORDERED

    def test_an_offer_is_ordered_only_once(self, world, offer):
        services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
        with pytest.raises(TransitionError):
            services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
        assert FlexOrder.objects.count() == 1

    def test_another_dso_cannot_accept(self, world, offer):
        assert_refused("foreign_congestion_point", services.flex_offer_accept, flex_offer=offer, dso=world.otherdso)
        assert_refused("wrong_role", services.flex_offer_accept, flex_offer=offer, dso=world.voltflex)

    def test_an_expired_offer_cannot_be_accepted(self, world, offer):
        with patch("common.time.now", return_value=offer.expires_at):
            assert_refused("offer_expired", services.flex_offer_accept, flex_offer=offer, dso=world.gridco)

    def test_partial_activation_scales_power_and_price_within_bounds(self, world, offer):
        FlexOfferOption.objects.filter(flex_offer=offer).update(min_activation_factor=Decimal("0.50"))
        offer.refresh_from_db()
        assert_refused("activation_factor_out_of_bounds", services.flex_offer_accept, flex_offer=offer,
                       dso=world.gridco, activation_factor=Decimal("0.40"))
        order = services.flex_offer_accept(flex_offer=offer, dso=world.gridco, activation_factor=Decimal("0.80"))
        assert order.price_eur == Decimal("10.00")
        assert {row.power_w for row in order.isps.all()} == {-12_000}

    def test_revocation_by_its_maker_only_and_not_once_ordered(self, world, offer):
        assert_refused("not_owner", services.flex_offer_revoke, flex_offer=offer, aggregator=world.chargeco)
        services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
        offer.refresh_from_db()
        with pytest.raises(TransitionError) as caught:
            services.flex_offer_revoke(flex_offer=offer, aggregator=world.voltflex)
        assert (caught.value.code, caught.value.status_code) == ("flexibility_procured", 409)
        offer.refresh_from_db()
        assert offer.status == FlexOffer.Status.ACCEPTED

    def test_an_offer_with_several_options_is_ordered_by_option_reference(self, world, tomorrow):
        request = mutex_request(world, tomorrow)
        isps = evening_isps(tomorrow)
        offer = services.flex_offer_submit(
            aggregator=world.voltflex, congestion_point=world.cp_north, period=tomorrow, flex_request=request,
            expires_at=request.expires_at,
            options=[option(power_w=-15_000, price="12.50", isps=isps, reference="A"),
                     option(power_w=-20_000, price="18.00", isps=isps, reference="B")])
        assert_refused("option_required", services.flex_offer_accept, flex_offer=offer, dso=world.gridco)
        assert_refused("unknown_option", services.flex_offer_accept, flex_offer=offer, dso=world.gridco,
                       option_reference="C")
        order = services.flex_offer_accept(flex_offer=offer, dso=world.gridco, option_reference="B")
        assert order.option.option_reference == "B"
        assert order.price_eur == Decimal("18.00")
        assert {row.power_w for row in order.isps.all()} == {-20_000}
        request.refresh_from_db()
        assert request.status == FlexRequest.Status.ORDERED  # option B covers the 20 kW asked for

    def test_a_submitted_offer_comes_back_exactly_as_stored(self, world, tomorrow):
        # The submission writes by hand (one statement on PostgreSQL) and builds the returned rows from what the
        # database answered: they must be the stored rows, ids and all, for every option.
        request = mutex_request(world, tomorrow)
        isps = evening_isps(tomorrow)
        offer = services.flex_offer_submit(
            aggregator=world.voltflex, congestion_point=world.cp_north, period=tomorrow, flex_request=request,
            expires_at=request.expires_at,
            options=[option(power_w=-15_000, price="12.50", isps=isps, reference="A"),
                     option(power_w=-20_000, price="18.00", isps=isps[:4], reference="B")])

        def shape(options):
            return [(o.pk, o.option_reference, o.price_eur, [(r.pk, r.option_id, r.isp, r.power_w) for r in o.isps.all()])
                    for o in options]

        stored = FlexOffer.objects.get(pk=offer.pk)
        assert shape(offer.options.all()) == shape(stored.options.order_by("id").prefetch_related("isps"))
        assert [len(o.isps.all()) for o in offer.options.all()] == [len(isps), 4]
        assert AuditEvent.objects.filter(object_id=str(offer.pk), action="flex_offer.submitted").count() == 1

    def test_a_revocation_crossing_an_order_is_told_flexibility_procured(self, world, offer):
        seen_by_aggregator = FlexOffer.objects.get(pk=offer.pk)  # loaded before the DSO's order lands
        services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
        with pytest.raises(TransitionError) as caught:
            services.flex_offer_revoke(flex_offer=seen_by_aggregator, aggregator=world.voltflex)
        assert (caught.value.code, caught.value.status_code) == ("flexibility_procured", 409)

    def test_an_order_crossing_a_revocation_is_told_reference_revoked(self, world, offer):
        seen_by_dso = FlexOffer.objects.get(pk=offer.pk)  # loaded before the aggregator's revocation lands
        services.flex_offer_revoke(flex_offer=offer, aggregator=world.voltflex)
        assert_refused("reference_revoked", services.flex_offer_accept, flex_offer=seen_by_dso, dso=world.gridco)
        assert FlexOrder.objects.count() == 0

    def test_revoke_and_reject(self, world, offer):
        services.flex_offer_revoke(flex_offer=offer, aggregator=world.voltflex)
        offer.refresh_from_db()
        assert offer.status == FlexOffer.Status.REVOKED
        with pytest.raises(TransitionError):
            services.flex_offer_reject(flex_offer=offer, dso=world.gridco)
        assert_refused("reference_revoked", services.flex_offer_accept, flex_offer=offer, dso=world.gridco)
        assert FlexOrder.objects.count() == 0

    def test_a_dso_rejects_an_offer_on_its_point(self, world, offer):
        assert_refused("foreign_congestion_point", services.flex_offer_reject, flex_offer=offer, dso=world.otherdso)
        services.flex_offer_reject(flex_offer=offer, dso=world.gridco)
        offer.refresh_from_db()
        assert offer.status == FlexOffer.Status.REJECTED

    def test_offer_expiry(self, world, offer):
        with pytest.raises(TransitionError):
            services.flex_offer_expire(flex_offer=offer)
        with patch("common.time.now", return_value=offer.expires_at):
            assert services.market_expire_due()["flex_offers"] == 1
        offer.refresh_from_db()
        assert offer.status == FlexOffer.Status.EXPIRED

    def test_order_moves_placed_dispatched_settled_and_never_back(self, world, offer):
        order = services.flex_offer_accept(flex_offer=offer, dso=world.gridco)
        services.flex_order_mark_dispatched(flex_order=order)
        with pytest.raises(TransitionError):
            services.flex_order_mark_dispatched(flex_order=order)
        services.flex_order_mark_settled(flex_order=order)
        with pytest.raises(TransitionError):
            services.flex_order_mark_settled(flex_order=order)
        with pytest.raises(TransitionError):
            services.flex_order_mark_dispatched(flex_order=order)
        order.refresh_from_db()
        assert order.status == FlexOrder.Status.SETTLED
