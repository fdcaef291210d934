"""Retry delays: exponential, capped, with jitter so that many retries do not align."""

from __future__ import annotations

import random
from typing import Final

# Exponents beyond this change nothing (the cap is reached long before) and 2**n grows huge.
_MAX_EXPONENT: Final = 62


def ceiling(retry: int, first_seconds: float, cap_seconds: float) -> float:
    """The longest delay before retry number ``retry`` (0: the first): the first delay,
    doubled per retry, never more than the cap."""
    doubled: float = first_seconds * 2.0 ** min(max(retry, 0), _MAX_EXPONENT)
    return min(cap_seconds, doubled)


def delay(
    retry: int, first_seconds: float, cap_seconds: float, rng: random.Random | None = None
) -> float:
    """The delay before retry number ``retry``: uniformly between half the ceiling and the
    ceiling ("equal jitter").

    The random half spreads retries that failed together (every worker hit by one outage)
    over time instead of in lockstep; the fixed half keeps a floor under the retry rate,
    so a long outage costs at most one try per half-ceiling per generation.
    """
    top = ceiling(retry, first_seconds, cap_seconds)
    return top / 2 + (rng or random).uniform(0, top / 2)  # jitter, not a secret
