"""EAN-18 (GS1) check digits for connections and congestion points."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from common.ean import ean18_from_data, ean18_is_valid, gs1_check_digit, validate_ean18


def test_the_gs1_algorithm_matches_a_well_known_ean13():
    # The same mod-10 weighting serves every GS1 length; 4006381333931 is the textbook EAN-13 example.
    assert gs1_check_digit("400638133393") == 1
    # By hand for 73513537: weights 3,1,3,... from the right give 3*(7+5+1+3) + (3+3+5+7) = 66, so 4.
    assert gs1_check_digit("73513537") == 4


def test_a_dutch_connection_ean_round_trips():
    code = ean18_from_data("87168590001263654")
    assert len(code) == 18
    assert ean18_is_valid(code)


@pytest.mark.parametrize("wrong_digit", range(10))
def test_every_wrong_check_digit_is_refused(wrong_digit):
    valid = ean18_from_data("87168590001263654")
    if int(valid[-1]) == wrong_digit:
        return
    code = valid[:-1] + str(wrong_digit)
    assert not ean18_is_valid(code)
    with pytest.raises(ValidationError) as caught:
        validate_ean18(code)
    assert caught.value.code == "ean_check_digit"


@pytest.mark.parametrize("code", ["", "12345", "8716859000126365430", "87168590001263654X", "８７１６８５９０００１２６３６５４３"])
def test_malformed_codes_are_refused_with_a_format_error(code):
    assert not ean18_is_valid(code)
    with pytest.raises(ValidationError) as caught:
        validate_ean18(code)
    assert caught.value.code == "ean_format"
