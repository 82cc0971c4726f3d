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
