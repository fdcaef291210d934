"""Retry delays grow exponentially up to the cap, and spread between half and all of it."""

from __future__ import annotations

import random

import pytest

from server.domain import backoff


def test_ceiling_doubles_up_to_the_cap() -> None:
    assert [backoff.ceiling(n, 0.5, 10.0) for n in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert backoff.ceiling(10_000, 0.5, 10.0) == 10.0  # no overflow however many retries


@pytest.mark.parametrize("retry", [0, 3, 50])
def test_delays_lie_between_half_and_all_of_the_ceiling(retry: int) -> None:
    rng = random.Random(7)
    top = backoff.ceiling(retry, 0.5, 10.0)
    delays = [backoff.delay(retry, 0.5, 10.0, rng) for _ in range(1000)]
    assert all(top / 2 <= d <= top for d in delays)
    # Spread out, not in lockstep: retries that failed together do not come back together.
    assert len({round(d, 6) for d in delays}) > 900
    assert max(delays) - min(delays) > 0.8 * (top / 2)


def test_no_delay_when_the_first_delay_is_zero() -> None:
    assert backoff.delay(5, 0.0, 10.0) == 0.0
