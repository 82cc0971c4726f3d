"""IspPowerRunsField validates ISP rows without a nested serializer; it must behave exactly like one."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework import serializers

from market.apis._shared import IspPowerInputSerializer, IspPowerRunsField

CASES: list[Any] = [
    [{"isp": 1, "power_w": -5000}, {"isp": 2, "duration": 3, "power_w": "700"}],
    [{"isp": "4.0", "power_w": 12.0, "ignored": True}],
    [],
    [{"isp": 0, "power_w": 1}, {"isp": 1, "power_w": 2}],
    [{"power_w": 1}, {"isp": 2}, {"isp": 3, "power_w": 4, "duration": 0}],
    [{"isp": "x", "power_w": None}, {"isp": True, "power_w": 1.5}],
    [{"isp": 1, "power_w": 1}, "not a row", 7],
    {"isp": 1, "power_w": 1},
    "12",
    None,
    [{"isp": "9" * 1001, "power_w": 1}],
    # Plain JSON integers take a shortcut past the fields: the same results at and beyond its edges.
    [{"isp": 1, "duration": 1, "power_w": 0}, {"isp": 10**30, "duration": 2, "power_w": -(10**30)}],
    [{"isp": 3, "duration": None, "power_w": 5}, {"isp": 4, "duration": -1, "power_w": 5}],
    [{"isp": -1, "power_w": 5}, {"isp": 2, "power_w": False}, {"isp": 2, "power_w": None}],
]


def _outcome(field: serializers.Field, data: Any) -> tuple[str, Any]:
    class Wrapper(serializers.Serializer):
        isps = field

    wrapper = Wrapper(data={"isps": data})
    if wrapper.is_valid():
        return "valid", [dict(row) for row in wrapper.validated_data["isps"]]
    return "invalid", wrapper.errors


@pytest.mark.parametrize("data", CASES)
def test_rows_validate_like_the_nested_serializer(data):
    expected = _outcome(IspPowerInputSerializer(many=True), data)
    got = _outcome(IspPowerRunsField(), data)
    assert got == expected
    # Same error codes, not only the same words.
    if expected[0] == "invalid":
        assert _codes(got[1]) == _codes(expected[1])


def _codes(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {key: _codes(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_codes(value) for value in detail]
    return getattr(detail, "code", None)


def test_valid_rows_get_the_default_duration():
    assert _outcome(IspPowerRunsField(), [{"isp": 5, "power_w": -1}]) == (
        "valid", [{"isp": 5, "duration": 1, "power_w": -1}])


# --- SharedFieldsInput on the offer input: same results and errors as DRF's own walk ----------------------------

def _drf_twins():
    """The offer input serializers as plain DRF serializers (deep-copied fields), for comparison."""
    from market.apis.offers import FlexOfferInputSerializer, OfferOptionInputSerializer

    class PlainOption(OfferOptionInputSerializer):
        to_internal_value = serializers.Serializer.to_internal_value

    class PlainOffer(FlexOfferInputSerializer):
        to_internal_value = serializers.Serializer.to_internal_value
        options = PlainOption(many=True, min_length=1)

    return FlexOfferInputSerializer, PlainOffer


GOOD_OPTION = {"price_eur": "4.50", "min_activation_factor": "0.50", "isps": [{"isp": 69, "duration": 2,
                                                                                 "power_w": -30000}]}
OFFER_CASES: list[Any] = [
    {"flex_request": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "expires_at": "2026-11-26T16:00:00+01:00",
     "options": [GOOD_OPTION]},
    {"congestion_point": "871685900000000011", "period": "2026-11-26", "expires_at": "2026-11-26T16:00:00Z",
     "message_id": "3fa85f64-5717-4562-b3fc-2c963f66afa7", "currency": "EUR",
     "options": [GOOD_OPTION, {**GOOD_OPTION, "option_reference": "B", "price_eur": "1"}]},
    {"expires_at": "2026-11-26T16:00:00+01:00", "options": [GOOD_OPTION]},  # validate(): unsolicited needs a point
    {"flex_request": "nope", "expires_at": "2026-11-26T16:00:00", "options": []},
    {"flex_request": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "expires_at": "2026-11-26T16:00:00+01:00",
     "options": [{"price_eur": "-1", "min_activation_factor": "1.234", "isps": "x"}, "row"]},
    {"options": "none"},
    [],
    "text",
]


@pytest.mark.parametrize("payload", OFFER_CASES)
def test_the_offer_input_validates_like_drfs_own_walk(payload):
    fast, plain = _drf_twins()
    expected, got = plain(data=payload), fast(data=payload)
    assert got.is_valid() == expected.is_valid()
    assert got.errors == expected.errors
    assert _codes(got.errors) == _codes(expected.errors)
    if expected.is_valid():
        assert _plain(got.validated_data) == _plain(expected.validated_data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
