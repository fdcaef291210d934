"""Webhook rules: which addresses are public, URL and event checks, the retry schedule."""

from __future__ import annotations

import pytest

from server.domain.errors import ValidationErrors
from server.domain.lifecycle import GenerationStatus
from server.domain.webhooks import (
    WebhookEvent,
    check_webhook,
    event_for,
    is_public_address,
    retry_delay,
    url_problem,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1%eth0",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::",
    ],
)
def test_private_loopback_link_local_and_special_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_public(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "is required"),
        ("example.com/hook", "must be an http or https URL"),
        ("file:///etc/passwd", "must be an http or https URL"),
        ("http:///nohost", "must name a host"),
        ("https://a:b@example.com/", "must not carry credentials"),
        ("https://example.com/#x", "must not have a fragment"),
        ("https://example.com:99999/", "is not a valid URL"),
        ("https://example.com/" + "x" * 2048, "is longer than 2048 characters"),
    ],
)
def test_url_problems(url: str, problem: str) -> None:
    assert url_problem(url) == problem


def test_events_default_to_completed_and_unknown_ones_are_violations() -> None:
    errors = ValidationErrors()
    target = check_webhook(errors, "https://example.com/h", [])
    assert target is not None and target.events == ("completed",)
    both = check_webhook(errors, "https://example.com/h", ["processing", "completed", "processing"])
    assert both is not None and both.events == ("processing", "completed")
    errors.raise_if_any()
    bad = ValidationErrors()
    check_webhook(bad, "https://example.com/h", ["done"])
    with pytest.raises(Exception, match=r"webhook\.events\[0\]"):
        bad.raise_if_any()


def test_which_status_sends_which_event() -> None:
    assert event_for(GenerationStatus.PROCESSING) is WebhookEvent.PROCESSING
    for status in (GenerationStatus.SUCCESS, GenerationStatus.FAILED, GenerationStatus.CANCELLED):
        assert event_for(status) is WebhookEvent.COMPLETED
    assert event_for(GenerationStatus.PENDING) is None
    assert WebhookEvent.COMPLETED.type_name == "generation.completed"


def test_retry_delays_double_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    assert [retry_delay(n, 1.0, 10.0, 1.0) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]
    assert [retry_delay(n, 1.0, 10.0, 0.0) for n in (1, 2, 3)] == [0.5, 1, 2]
