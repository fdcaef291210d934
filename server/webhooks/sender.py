"""One webhook attempt: sign (Standard Webhooks), guard the address, POST, bound everything."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

import httpx
from standardwebhooks.webhooks import Webhook

from server.webhooks.guard import RefusedAddressError, ResolverUnavailableError, check_destination

USER_AGENT = "imagegen-webhooks/1"


@dataclass(frozen=True, slots=True)
class SendLimits:
    """How long an attempt may take and how much of the answer is read."""

    timeout_seconds: float
    max_response_bytes: int
    allow_private: bool


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt got: the status code (None without an answer), latency, error."""

    status_code: int | None
    latency_ms: int
    error: str | None

    @property
    def delivered(self) -> bool:
        """Whether the receiver accepted the event (2xx)."""
        return self.error is None


def signed_headers(secret: str, message_id: str, sent: datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers for ``body``, signed with the project's whsec_ secret."""
    signature = Webhook(secret).sign(message_id, sent, body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(sent.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


async def send(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    body: str,
    limits: SendLimits,
) -> AttemptResult:
    """POST once; never follows redirects, and reads at most ``max_response_bytes``."""
    started = time.perf_counter()

    def elapsed() -> int:
        return int((time.perf_counter() - started) * 1000)

    try:
        # One bound for the whole attempt (httpx's own timeouts are per phase).
        async with asyncio.timeout(limits.timeout_seconds):
            # Checked again at send time: DNS may have changed since the create.
            await check_destination(url, allow_private=limits.allow_private)
            request = client.build_request("POST", url, content=body.encode(), headers=headers)
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read > limits.max_response_bytes:
                        break  # only the status matters; a huge answer is not read
            finally:
                await response.aclose()
    except RefusedAddressError as error:
        return AttemptResult(None, elapsed(), f"refused: {error}")
    except ResolverUnavailableError as error:
        return AttemptResult(None, elapsed(), str(error))
    except (TimeoutError, httpx.TimeoutException):
        return AttemptResult(None, elapsed(), f"timeout after {limits.timeout_seconds:g}s")
    except httpx.HTTPError as error:
        return AttemptResult(None, elapsed(), f"{type(error).__name__}: {error}")
    code = response.status_code
    if 200 <= code < 300:
        return AttemptResult(code, elapsed(), None)
    if 300 <= code < 400:
        where = response.headers.get("location")
        return AttemptResult(code, elapsed(), f"redirect to {where!r} not followed")
    return AttemptResult(code, elapsed(), f"HTTP {code}")
