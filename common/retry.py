"""Retry policy for outbound protocol calls (OCPI, OSCP): exponential backoff with full jitter.

One place so every adapter backs off the same way. Whether a failure is worth a retry is decided by
`common.exceptions.AdapterError.permanent` (set by `common.http.http_request`).
"""

from __future__ import annotations

import random

BASE_DELAY_S = 2.0
MAX_DELAY_S = 600.0


def backoff_delay_s(attempt: int, *, base_s: float = BASE_DELAY_S, cap_s: float = MAX_DELAY_S,
                    rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1 = first retry): uniform in [0, min(cap, base * 2**(attempt-1))].

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads retries of many commands that failed
    together, so a CPO that comes back is not hit by all of them at once.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    ceiling = min(cap_s, base_s * 2 ** (attempt - 1))
    return (rng or random).uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography
