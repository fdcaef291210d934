"""When to retry a call: transient codes only, exponential backoff with jitter, a deadline."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import grpc

from imagegen_client.errors import ImagegenError

log = logging.getLogger("imagegen.client")

# Only these say "the same request may well work a moment later": the server
# was unreachable or shutting down, or a limit asked the caller to slow down.
TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How safe calls are retried.

    A call is retried only when it is safe to send twice (reads, and writes
    that carry a ``request_id``) and only after a transient failure
    (UNAVAILABLE, RESOURCE_EXHAUSTED). The n-th retry waits a random time
    between half and all of ``initial_backoff * multiplier**n`` (capped at
    ``max_backoff``), and never less than the server's RetryInfo delay. No
    retry starts once the call's overall deadline would pass before it.
    """

    initial_backoff: float = 0.1
    """Seconds before the first retry (before jitter)."""
    max_backoff: float = 5.0
    """Cap of one backoff (before honouring the server's RetryInfo)."""
    multiplier: float = 2.0
    """Growth of the backoff per retry."""
    max_attempts: int = 5
    """Tries of one unary call, the first included; 1 turns retries off."""
    reconnect_window: float = 30.0
    """How long a watch keeps reconnecting after its stream dropped without news."""

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """The jittered wait before retry ``retry_number`` (0 for the first)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier**retry_number)
        # "Equal jitter": spread clients apart, but never hammer at once.
        return rng.uniform(ceiling / 2, ceiling)

    def delay(self, retry_number: int, error: ImagegenError, rng: random.Random) -> float:
        """The wait before retrying after ``error``: backoff, but at least what the server asked."""
        wait = self.backoff(retry_number, rng)
        if error.retry_delay is not None:
            # A little over the server's delay, so that clients told the same
            # moment do not all come back in the same instant.
            wait = max(wait, error.retry_delay * rng.uniform(1.0, 1.1))
        return wait


NO_RETRY = RetryPolicy(max_attempts=1, reconnect_window=0.0)


class Deadline:
    """A point in (monotonic) time by which a whole call, retries included, must finish."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left (never negative), or None without a deadline."""
        if self._at is None:
            return None
        return max(0.0, self._at - time.monotonic())

    def allows(self, wait: float) -> bool:
        """Whether waiting ``wait`` seconds still leaves time for another try."""
        left = self.remaining()
        return left is None or wait < left

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        left = self.remaining()
        return left is not None and left <= 0


class Attempts:
    """The retry bookkeeping of one call: how many tries so far, and until when."""

    def __init__(self, policy: RetryPolicy, deadline: Deadline, name: str) -> None:
        self.policy = policy
        self.deadline = deadline
        self.name = name
        self.tries = 0
        self._rng = random.Random()

    def next_delay(self, error: ImagegenError) -> float | None:
        """Seconds to wait before trying again after ``error``, or None to give up."""
        self.tries += 1
        if error.code not in TRANSIENT_CODES or self.tries >= self.policy.max_attempts:
            return None
        wait = self.policy.delay(self.tries - 1, error, self._rng)
        if not self.deadline.allows(wait):
            return None
        log.info(
            "retrying %s in %.2fs after %s (try %d of %d)",
            self.name,
            wait,
            error.code.name,
            self.tries + 1,
            self.policy.max_attempts,
        )
        return wait


class Reconnects:
    """The reconnect bookkeeping of one watch: back off while no news, start over on news."""

    def __init__(self, policy: RetryPolicy, deadline: Deadline, name: str) -> None:
        self.policy = policy
        self.deadline = deadline
        self.name = name
        self._failures = 0
        self._since: float | None = None
        self._rng = random.Random()

    def progressed(self) -> None:
        """An event arrived: the next drop starts a fresh backoff."""
        self._failures = 0
        self._since = None

    def next_delay(self, error: ImagegenError) -> float | None:
        """Seconds to wait before reconnecting after ``error``, or None to give up."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if error.code not in TRANSIENT_CODES:
            return None
        wait = self.policy.delay(self._failures, error, self._rng)
        self._failures += 1
        if now + wait - self._since > self.policy.reconnect_window:
            return None
        if not self.deadline.allows(wait):
            return None
        log.info("reconnecting %s in %.2fs after %s", self.name, wait, error.code.name)
        return wait
