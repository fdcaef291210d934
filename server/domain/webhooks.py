"""Webhook rules: a generation's webhook target and events, and which addresses are public."""

from __future__ import annotations

import base64
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

from server.domain.errors import ValidationErrors
from server.domain.lifecycle import GenerationStatus
from server.domain.rules import WEBHOOK_URL_MAX_CHARS


class WebhookEvent(StrEnum):
    """What a generation's webhook may be sent for."""

    PROCESSING = "processing"  # a worker started a run
    COMPLETED = "completed"  # a run ended: succeeded, failed or cancelled

    @property
    def type_name(self) -> str:
        """The ``type`` field of the Standard Webhooks body."""
        return f"generation.{self.value}"


DEFAULT_EVENTS: Final = (WebhookEvent.COMPLETED.value,)


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where a generation's webhooks go, and for which events."""

    url: str
    events: tuple[str, ...]


def event_for(status: GenerationStatus) -> WebhookEvent | None:
    """The webhook event a generation entering ``status`` produces, if any."""
    if status.terminal:
        return WebhookEvent.COMPLETED
    if status is GenerationStatus.PROCESSING:
        return WebhookEvent.PROCESSING
    return None


def check_webhook(errors: ValidationErrors, url: str, events: list[str]) -> WebhookTarget | None:
    """A well-formed http(s) webhook URL and known events (the address is checked on use)."""
    problem = url_problem(url)
    if problem:
        errors.add("webhook.url", problem)
    known = {e.value for e in WebhookEvent}
    chosen: list[str] = []
    for index, event in enumerate(events):
        if event not in known:
            errors.add(f"webhook.events[{index}]", f"must be one of {', '.join(sorted(known))}")
        elif event not in chosen:
            chosen.append(event)
    if problem:
        return None
    return WebhookTarget(url, tuple(chosen) or DEFAULT_EVENTS)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook URL (syntax only), or None."""
    if not url:
        return "is required"
    if len(url) > WEBHOOK_URL_MAX_CHARS:
        return f"is longer than {WEBHOOK_URL_MAX_CHARS} characters"
    try:
        parts = urlsplit(url)
        _ = parts.port  # a malformed port raises here
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username or parts.password:
        return "must not carry credentials"
    if parts.fragment:
        return "must not have a fragment"
    return None


def is_public_address(address: str) -> bool:
    """Whether an IP address is a public unicast one (not private, loopback, link-local…)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # is_global excludes private, loopback, link-local, shared (CGNAT) and reserved ranges.
    return ip.is_global and not ip.is_multicast


class DeliveryState(StrEnum):
    """Where a webhook delivery stands."""

    PENDING = "pending"  # more attempts will be made
    DELIVERED = "delivered"  # a receiver answered 2xx
    FAILED = "failed"  # the retry window closed without a 2xx


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One try at sending a delivery."""

    number: int
    status_code: int | None
    latency_ms: int
    error: str | None
    create_time: datetime


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One webhook event about a generation, and the attempts made to send it."""

    id: str
    project_id: str
    generation_id: str
    event_type: str
    url: str
    state: DeliveryState
    attempts: tuple[WebhookAttempt, ...]
    create_time: datetime
    next_attempt_time: datetime | None


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form: ``whsec_`` + base64 of 32 bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def retry_delay(attempt: int, first: float, cap: float, jitter: float) -> float:
    """Seconds before retry ``attempt`` (1-based): exponential from ``first`` up to ``cap``.

    ``jitter`` (0..1, drawn by the caller) spreads the retries of many
    deliveries that failed at once ("full jitter" over the upper half).
    """
    base: float = min(cap, first * 2.0 ** (attempt - 1))
    return base * (0.5 + 0.5 * jitter)
