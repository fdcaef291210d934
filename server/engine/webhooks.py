"""The webhook dispatcher: claims due deliveries from the outbox and sends each, one at a time.

Every replica runs one. A claim holds a delivery for longer than an attempt
can take, so no two replicas send the same delivery at once; a dispatcher
that dies mid-attempt loses its hold and the delivery is sent again (at
least once, with the same webhook-id).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx
import structlog

from server.domain.clock import utcnow
from server.domain.generations import Generation, from_snapshot
from server.domain.ids import new_id
from server.domain.webhooks import retry_delay
from server.events.hub import EventHub
from server.store import webhooks as outbox
from server.store.db import Database
from server.store.outages import Dependencies
from server.store.webhooks import ClaimedDelivery
from server.webhooks.sender import SendLimits, send, signed_headers

log = structlog.get_logger("imagegen.webhooks")

HOLD_MARGIN_SECONDS = 5.0

# The body of a delivery: {"type": ..., "data": <the Generation as REST JSON>}, as a string.
RenderBody = Callable[[str, Generation], str]


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """What the dispatcher reads of the settings (the composition root fills it in)."""

    concurrency: int
    poll_interval_seconds: float
    timeout_seconds: float
    max_response_bytes: int
    first_retry_seconds: float
    max_retry_seconds: float
    retry_window_seconds: float
    allow_private_addresses: bool


class Dispatcher:
    """Sends the webhook outbox, up to ``settings.concurrency`` attempts at once in this process."""

    def __init__(
        self,
        db: Database,
        hub: EventHub,
        render: RenderBody,
        settings: DispatchSettings,
        dependencies: Dependencies | None = None,
    ) -> None:
        self._db = db
        self._dependencies = dependencies or Dependencies()
        self._hub = hub
        self._render = render
        self.settings = settings
        self._limits = SendLimits(
            settings.timeout_seconds, settings.max_response_bytes, settings.allow_private_addresses
        )
        # A hold outlives the longest attempt (the DNS check is inside its timeout) and its
        # record. Should a record come later still, its compare-and-set fails and the
        # delivery is sent once more: at least once, never by two senders at a time.
        self._hold = timedelta(seconds=settings.timeout_seconds + HOLD_MARGIN_SECONDS)
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        """Start the dispatcher (nothing at all with zero senders)."""
        # No cookies, no proxies from the environment, no redirects: each attempt stands alone.
        # No per-phase timeouts either (httpx's default is 5 s each): send() bounds the
        # whole attempt by webhook_timeout_seconds.
        self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=None)
        if self.settings.concurrency > 0:
            self._tasks.append(asyncio.create_task(self._dispatch(), name="webhooks"))

    async def stop(self) -> None:
        """Stop sending; an attempt in flight is abandoned (its hold expires, it is sent again)."""
        self._closing = True
        self._hub.deliveries_available.set()
        self._slot_freed.set()
        for task in (*self._tasks, *self._sending):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._sending, return_exceptions=True)
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()

    def abandon(self) -> None:
        """Cancel its tasks without waiting for them (a stop that ran out of time)."""
        self._closing = True
        for task in (*self._tasks, *self._sending):
            task.cancel()

    async def _dispatch(self) -> None:
        # One loop claims for every sender, so an idle process asks the outbox once per
        # poll interval, however many senders it may run.
        while not self._closing:
            if len(self._sending) >= self.settings.concurrency:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                claim = await self._claim()
            except Exception as error:
                self._report(error, "webhook_claim_failed")
                await asyncio.sleep(self.settings.poll_interval_seconds)
                continue
            if claim is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._hub.deliveries_available.wait(), self.settings.poll_interval_seconds
                    )
                if not self._closing:
                    self._hub.deliveries_available.clear()
                continue
            task = asyncio.create_task(self._send(claim), name=f"webhook-{claim.id}")
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._slot_freed.set()

    async def _send(self, claim: ClaimedDelivery) -> None:
        try:
            await self.attempt(claim)
        except Exception as error:
            # The hold expires and another attempt is made.
            self._report(error, "webhook_attempt_failed", delivery_id=claim.id)

    def _report(self, error: Exception, event: str, **context: str) -> None:
        self._dependencies.report(error, log, event, **context)

    async def _claim(self) -> ClaimedDelivery | None:
        async with self._db.read() as session:
            if not await outbox.any_due(session, utcnow()):
                return None
        async with self._db.write.begin() as session:
            return await outbox.claim_due(
                session, utcnow(), self._hold, new_id(), skip_locked=not self._db.is_sqlite
            )

    async def attempt(self, claim: ClaimedDelivery) -> None:
        """Send one attempt of a held delivery and record it (and schedule the next, if any)."""
        assert self._client is not None
        started = utcnow()
        body = self._render(claim.event_type, from_snapshot(claim.snapshot))
        if claim.secret is None:
            raise RuntimeError(f"project {claim.project_id} has no webhook secret")
        headers = signed_headers(claim.secret, claim.id, started, body)
        result = await send(self._client, claim.url, headers, body, self._limits)
        now = utcnow()
        number = claim.attempts + 1
        next_time = None
        if not result.delivered:
            delay = retry_delay(
                number,
                self.settings.first_retry_seconds,
                self.settings.max_retry_seconds,
                random.random(),
            )
            give_up = claim.create_time + timedelta(seconds=self.settings.retry_window_seconds)
            candidate = now + timedelta(seconds=delay)
            next_time = candidate if candidate <= give_up else None
        async with self._db.write.begin() as session:
            recorded = await outbox.record_attempt(
                session,
                claim,
                status_code=result.status_code,
                latency_ms=result.latency_ms,
                error=result.error,
                started=started,
                next_attempt_time=next_time,
                now=now,
            )
        log.info(
            "webhook_attempt",
            delivery_id=claim.id,
            generation_id=claim.generation_id,
            event_type=claim.event_type,
            attempt=number,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
            recorded=recorded,
            next_attempt_time=next_time.isoformat() if next_time else None,
        )
