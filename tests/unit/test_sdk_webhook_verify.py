"""The SDK's verify_webhook against the Standard Webhooks reference signer (the server's)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from imagegen_client import WebhookVerificationError, verify_webhook

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
# Turns signed (headers, body) into ones that must not verify.
Spoil = Callable[[dict[str, str], str], tuple[dict[str, str], str]]
OTHER = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def signed(
    body: str, *, secret: str = SECRET, when: datetime | None = None, msg_id: str = "msg_1"
) -> dict[str, str]:
    """Headers as the server sends them (it signs with standardwebhooks)."""
    when = when or datetime.now(UTC)
    return {
        "Webhook-Id": msg_id,
        "Webhook-Timestamp": str(int(when.timestamp())),
        "Webhook-Signature": Webhook(secret).sign(msg_id, when, body),
    }


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=4))
def test_what_the_reference_signs_verifies(data: dict[str, str]) -> None:
    body = json.dumps({"type": "generation.completed", "data": data})
    assert verify_webhook(SECRET, signed(body), body.encode()) == json.loads(body)
    assert verify_webhook(SECRET, signed(body), body) == json.loads(body)


def test_one_matching_signature_among_several_is_enough() -> None:
    body = '{"type": "generation.completed"}'
    headers = signed(body)
    other = signed(body, secret=OTHER)["Webhook-Signature"]
    headers["Webhook-Signature"] = f"v2,abc {other} {headers['Webhook-Signature']}"
    assert verify_webhook(SECRET, headers, body)["type"] == "generation.completed"


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda h, b: (h, b.replace("completed", "processing")), id="tampered body"),
        pytest.param(lambda h, b: ({**h, "Webhook-Id": "msg_2"}, b), id="other id"),
        pytest.param(
            lambda h, b: ({k: v for k, v in h.items() if k != "Webhook-Id"}, b), id="no id"
        ),
        pytest.param(lambda h, b: ({**h, "Webhook-Timestamp": "soon"}, b), id="bad timestamp"),
        pytest.param(lambda h, b: ({**h, "Webhook-Signature": "v1,!!!"}, b), id="bad base64"),
        pytest.param(lambda h, b: ({**h, "Webhook-Signature": "v0,AAAA"}, b), id="other version"),
    ],
)
def test_what_was_not_signed_so_is_refused(spoil: Spoil) -> None:
    body = '{"type": "generation.completed"}'
    headers, spoiled = spoil(signed(body), body)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, headers, spoiled)


def test_another_secret_and_an_old_timestamp_are_refused() -> None:
    body = '{"type": "generation.completed"}'
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify_webhook(OTHER, signed(body), body)
    replayed = signed(body, when=datetime.now(UTC) - timedelta(minutes=6))
    with pytest.raises(WebhookVerificationError, match="too far"):
        verify_webhook(SECRET, replayed, body)


def test_a_signed_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="not a JSON object"):
        verify_webhook(SECRET, signed("[1, 2]"), "[1, 2]")
