import random

import pytest

from common.retry import backoff_delay_s


def test_backoff_grows_exponentially_and_is_capped():
    rng = random.Random(7)
    ceilings = [max(backoff_delay_s(n, base_s=1, cap_s=30, rng=rng) for _ in range(400)) for n in range(1, 8)]
    assert ceilings[0] <= 1 and ceilings[1] <= 2 and ceilings[2] <= 4
    assert ceilings[2] > 2  # jitter reaches into the upper half of the window
    assert all(c <= 30 for c in ceilings) and ceilings[-1] > 15


def test_backoff_rejects_attempt_zero():
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay_s(0)
