"""ISP arithmetic in Europe/Amsterdam, including both DST transition days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from common import isp


def test_a_normal_day_has_96_isps_starting_at_local_midnight():
    day = date(2026, 11, 25)
    assert isp.isp_count(day) == 96
    assert isp.isp_start(day, 1) == datetime(2026, 11, 24, 23, 0, tzinfo=UTC)  # CET = UTC+1
    assert isp.isp_end(day, 96) == datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


def test_a_summer_day_is_offset_by_two_hours():
    day = date(2026, 7, 1)
    assert isp.isp_count(day) == 96
    assert isp.isp_start(day, 1) == datetime(2026, 6, 30, 22, 0, tzinfo=UTC)


def test_spring_dst_day_2027_03_28_has_92_isps():
    day = date(2027, 3, 28)
    assert isp.isp_count(day) == 92
    slots = isp.isp_slots(day)
    assert len(slots) == 92
    # ISP 9 starts 02:00 CET = 01:00 UTC, which is 03:00 CEST on the wall clock: 02:00-03:00 does not exist.
    assert slots[8].start == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)
    assert slots[8].label == "03:00"
    assert slots[-1].end == isp.day_start(date(2027, 3, 29))


def test_autumn_dst_day_2026_10_25_has_100_isps_with_the_repeated_hour_numbered_apart():
    day = date(2026, 10, 25)
    assert isp.isp_count(day) == 100
    slots = isp.isp_slots(day)
    # 02:00 CEST (ISP 9) and 02:00 CET (ISP 13) are different instants and get different numbers.
    assert slots[8].start == datetime(2026, 10, 25, 0, 0, tzinfo=UTC)
    assert slots[12].start == datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
    assert slots[8].label == "02:00 (+0200)"
    assert slots[12].label == "02:00 (+0100)"
    assert slots[3].label == "00:45"
    assert isp.isp_of(slots[12].start) == (day, 13)


@pytest.mark.parametrize("day", [date(2026, 10, 25), date(2027, 3, 28), date(2026, 11, 25)])
def test_isp_of_round_trips_every_isp_of_the_day(day):
    for slot in isp.isp_slots(day):
        assert isp.isp_of(slot.start) == (day, slot.index)
        assert isp.isp_of(slot.end - timedelta(seconds=1)) == (day, slot.index)
        assert slot.end - slot.start == isp.ISP


def test_isp_index_outside_the_day_is_refused():
    with pytest.raises(ValueError, match="has 92 ISPs"):
        isp.isp_start(date(2027, 3, 28), 93)
    with pytest.raises(ValueError):
        isp.isp_start(date(2026, 11, 25), 0)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="naive"):
        isp.isp_of(datetime(2026, 11, 25, 12, 0))  # noqa: DTZ001


def test_floor_and_ceil_to_isp():
    instant = datetime(2026, 11, 25, 16, 7, 30, tzinfo=UTC)
    assert isp.floor_to_isp(instant) == datetime(2026, 11, 25, 16, 0, tzinfo=UTC)
    assert isp.ceil_to_isp(instant) == datetime(2026, 11, 25, 16, 15, tzinfo=UTC)
    aligned = datetime(2026, 11, 25, 16, 15, tzinfo=UTC)
    assert isp.ceil_to_isp(aligned) == aligned
    assert isp.is_isp_aligned(aligned)
    assert not isp.is_isp_aligned(instant)


def test_iter_isp_starts_crosses_the_autumn_dst_night_in_elapsed_time():
    start = isp.day_start(date(2026, 10, 25))
    end = isp.day_end(date(2026, 10, 25))
    assert len(list(isp.iter_isp_starts(start, end))) == 100
