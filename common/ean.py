"""EAN-18 (GS1 GSRN) codes for connections and congestion points: check-digit validation and generation.

The GS1 check digit: weight the 17 data digits 3,1,3,1,... from the right, sum, and take the amount
that rounds the sum up to a multiple of ten.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

EAN18_LENGTH = 18


def gs1_check_digit(data_digits: str) -> int:
    """Check digit for a string of data digits (all but the check digit)."""
    if not data_digits.isdigit():
        raise ValueError(f"digits only: {data_digits!r}")
    total = 0
    for position, char in enumerate(reversed(data_digits)):
        weight = 3 if position % 2 == 0 else 1
        total += int(char) * weight
    return (10 - total % 10) % 10


def ean18_is_valid(code: str) -> bool:
    return (
        isinstance(code, str)
        and len(code) == EAN18_LENGTH
        and code.isascii()
        and code.isdigit()
        and gs1_check_digit(code[:-1]) == int(code[-1])
    )


def ean18_from_data(data_digits: str) -> str:
    """Complete 17 data digits with their check digit."""
    if len(data_digits) != EAN18_LENGTH - 1:
        raise ValueError(f"an EAN-18 has 17 data digits, got {len(data_digits)}")
    return data_digits + str(gs1_check_digit(data_digits))


def validate_ean18(value: str) -> None:
    """Django field validator naming what is wrong: length, characters, or the check digit."""
    if not isinstance(value, str) or len(value) != EAN18_LENGTH or not value.isdigit() or not value.isascii():
        raise ValidationError("An EAN-18 code has exactly 18 digits.", code="ean_format")
    expected = gs1_check_digit(value[:-1])
    if expected != int(value[-1]):
        raise ValidationError(
            "EAN-18 check digit is wrong: expected %(expected)s, got %(actual)s.",
            code="ean_check_digit",
            params={"expected": expected, "actual": value[-1]},
        )
