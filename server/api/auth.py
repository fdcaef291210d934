"""API-key authentication of RPCs: who is calling, may they call this method, and how often."""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from typing import Final, Protocol

from server.domain.errors import DomainError, Status
from server.domain.tenancy import Principal
from server.services.tenancy import Tenancy

API_KEY_HEADER: Final = "x-api-key"
ADMIN_METHODS: Final = "/imagegen.v1.AdminService/"
# The internal service behind the public HTTP routes: only the gateway may call it,
# with the shared token instead of a key (it vouches for the client's address).
DELIVERY_METHODS: Final = "/imagegen.v1.DeliveryService/"
GATEWAY_TOKEN_HEADER: Final = "x-gateway-token"
GATEWAY_PRINCIPAL: Final = Principal(key_id="gateway", project_id=None, admin=False)
# Every other imagegen.v1 method is a project's. Methods outside the package
# (bar health and reflection, which the interceptor leaves open) are refused
# to every key, so a service registered by mistake is closed, not open.
PROJECT_METHODS: Final = "/imagegen.v1."
LIMIT_HEADER: Final = "x-ratelimit-limit"
REMAINING_HEADER: Final = "x-ratelimit-remaining"
# Past this many buckets, forget the ones that have refilled (they equal a new bucket).
_BUCKETS_BEFORE_SWEEP: Final = 10_000


class RateLimitSettings(Protocol):
    """The settings the authenticator reads (a structural view of server.config.Settings)."""

    @property
    def rate_limit_per_minute(self) -> int: ...

    @property
    def rate_limit_burst(self) -> int: ...


class RateLimiter:
    """A token bucket per API key, in this process.

    Each key's bucket holds up to ``capacity`` calls (the burst, or one
    minute's worth when no burst is set) and refills at the per-minute rate.
    With several replicas each keeps its own buckets, so a key may make up to
    that many times the rate in total; an exact shared limit would cost a
    database write per call.
    """

    def __init__(self, per_minute: int, burst: int) -> None:
        self.capacity = burst or per_minute
        self._per_second = per_minute / 60
        # key id -> (tokens left, monotonic time they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key_id: str, now: float) -> tuple[int, float | None]:
        """Spend one call of ``key_id``: (calls left, None), or (0, seconds until the next one)."""
        tokens = self._tokens(key_id, now)
        if tokens < 1:
            self._buckets[key_id] = (tokens, now)
            return 0, (1 - tokens) / self._per_second
        if len(self._buckets) >= _BUCKETS_BEFORE_SWEEP:
            self._sweep(now)
        self._buckets[key_id] = (tokens - 1, now)
        return math.floor(tokens - 1), None

    def _tokens(self, key_id: str, now: float) -> float:
        tokens, counted = self._buckets.get(key_id, (float(self.capacity), now))
        return min(float(self.capacity), tokens + (now - counted) * self._per_second)

    def _sweep(self, now: float) -> None:
        full = [key for key in self._buckets if self._tokens(key, now) >= self.capacity]
        for key in full:
            del self._buckets[key]


class KeyAuthenticator:
    """Authenticates each call by its ``x-api-key`` (through Tenancy), and rate-limits it.

    Tenancy serves keys from a per-process cache that trusts an entry for
    ``IMAGEGEN_API_KEY_CACHE_SECONDS`` (1 s by default): the documented bound
    within which a revocation reaches every replica. Expiry is exact. A lookup
    that does reach the database is shared by the calls that arrive while it runs.
    """

    def __init__(
        self, tenancy: Tenancy, settings: RateLimitSettings, gateway_token: str = ""
    ) -> None:
        self._tenancy = tenancy
        self._gateway_token = gateway_token
        self._in_flight: dict[str, asyncio.Future[Principal]] = {}
        self._limiter = (
            RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
            if settings.rate_limit_per_minute > 0
            else None
        )

    async def authenticate(
        self, method: str, metadata: dict[str, str], response_headers: list[tuple[str, str]]
    ) -> Principal:
        """The caller of ``method``, if its key is valid, of the right kind and within its limit."""
        if method.startswith(DELIVERY_METHODS):
            return self._gateway(metadata)
        secret = metadata.get(API_KEY_HEADER, "").strip()
        if not secret:
            raise DomainError(
                Status.UNAUTHENTICATED,
                "API_KEY_MISSING",
                f"an API key is required in the {API_KEY_HEADER!r} metadata",
            )
        principal = await self._look_up(secret)
        if self._limiter is not None:
            self._spend(self._limiter, principal, response_headers)
        if method.startswith(ADMIN_METHODS):
            if not principal.admin:
                raise DomainError(
                    Status.PERMISSION_DENIED,
                    "ADMIN_KEY_REQUIRED",
                    "this method needs an admin key; a project key was given",
                )
        elif not method.startswith(PROJECT_METHODS):
            raise DomainError(
                Status.PERMISSION_DENIED,
                "METHOD_NOT_ALLOWED",
                "no API key may call this method",
                metadata={"method": method},
            )
        elif principal.admin:
            raise DomainError(
                Status.PERMISSION_DENIED,
                "PROJECT_KEY_REQUIRED",
                "this method needs a project key; an admin key was given",
            )
        return principal

    def _gateway(self, metadata: dict[str, str]) -> Principal:
        token = metadata.get(GATEWAY_TOKEN_HEADER, "")
        if not self._gateway_token or not hmac.compare_digest(
            token.encode(), self._gateway_token.encode()
        ):
            raise DomainError(
                Status.UNAUTHENTICATED,
                "GATEWAY_TOKEN_INVALID",
                f"this internal method needs the gateway token in {GATEWAY_TOKEN_HEADER!r}",
            )
        return GATEWAY_PRINCIPAL

    async def _look_up(self, secret: str) -> Principal:
        """One database lookup per key at a time: calls that arrive while one is in
        flight share its answer (a burst of watchers subscribing with one key costs
        one read, not thousands). Nothing is kept once it has answered.

        A key in Tenancy's cache answers at once: no task, no await, no loop turn."""
        cached = self._tenancy.authenticate_cached(secret)
        if cached is not None:
            return cached
        flight = self._in_flight.get(secret)
        if flight is None:
            flight = asyncio.ensure_future(self._tenancy.authenticate(secret))
            self._in_flight[secret] = flight
            flight.add_done_callback(lambda _f: self._in_flight.pop(secret, None))
        # Shielded: one caller going away must not cancel the others' answer.
        return await asyncio.shield(flight)

    @staticmethod
    def _spend(
        limiter: RateLimiter, principal: Principal, response_headers: list[tuple[str, str]]
    ) -> None:
        remaining, retry_after = limiter.take(principal.key_id, time.monotonic())
        response_headers.append((LIMIT_HEADER, str(limiter.capacity)))
        response_headers.append((REMAINING_HEADER, str(remaining)))
        if retry_after is not None:
            raise DomainError(
                Status.RESOURCE_EXHAUSTED,
                "RATE_LIMITED",
                f"rate limit exceeded for this API key; retry in {math.ceil(retry_after)} s",
                metadata={"limit": str(limiter.capacity)},
                retry_after_seconds=retry_after,
            )
