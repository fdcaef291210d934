"""Verify imagegen webhooks (Standard Webhooks) in a receiver, with the project's secret."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["WebhookVerificationError", "verify_webhook"]

# A signature older or newer than this is refused: a replay, or a clock far off.
TOLERANCE_SECONDS = 5 * 60
SECRET_PREFIX = "whsec_"


class WebhookVerificationError(ValueError):
    """A webhook that is not the server's: bad signature, missing header, or out of time."""


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes | str) -> dict[str, Any]:
    """The webhook's parsed body, if it is signed with ``secret`` (``whsec_…``) and recent.

    ``headers`` are the request's (any case); ``body`` the raw bytes as
    received — re-serialized JSON would not verify. Raises
    ``WebhookVerificationError`` for a bad signature, a missing header, or a
    timestamp more than five minutes away (a replay).

    The Standard Webhooks scheme in the standard library (so the SDK needs no
    more than gRPC): HMAC-SHA256 over ``id.timestamp.body``, base64, as ``v1,…``.
    """
    lower = {name.lower(): value for name, value in headers.items()}
    message_id = lower.get("webhook-id")
    timestamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not (message_id and timestamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent = int(timestamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a number") from None
    if abs(time.time() - sent) > TOLERANCE_SECONDS:
        raise WebhookVerificationError("webhook-timestamp is too far from now (a replay?)")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise WebhookVerificationError("the secret is not a whsec_ base64 key") from None
    raw = body.encode() if isinstance(body, str) else body
    expected = hmac.new(key, f"{message_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    if not any(_matches(entry, expected) for entry in signatures.split()):
        raise WebhookVerificationError("no matching signature")
    try:
        payload = json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return payload


def _matches(entry: str, expected: bytes) -> bool:
    """Whether one ``v1,<base64>`` entry of webhook-signature is ``expected``."""
    version, _, encoded = entry.partition(",")
    if version != "v1":
        return False
    try:
        given = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return False
    return hmac.compare_digest(given, expected)
