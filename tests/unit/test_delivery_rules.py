"""Pure rules of delivery: URL signatures, live cache keys, whom X-Forwarded-For names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from server.domain.delivery import etag_matches
from server.domain.live import cache_key
from server.domain.signing import UrlSigner
from server.gateway.clientip import client_ip, parse_proxies

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
IMAGE = "0190aaaa-0000-7000-8000-000000000001"


def test_signatures_bind_image_and_expiry_and_expire() -> None:
    signer = UrlSigner(b"k" * 32)
    expires = int((NOW + timedelta(minutes=5)).timestamp())
    good = signer.signature(IMAGE, expires)
    assert signer.verify(IMAGE, expires, good, NOW)
    assert not signer.verify(IMAGE, expires, good, NOW + timedelta(minutes=5))
    assert not signer.verify(IMAGE, expires + 1, good, NOW)
    assert not signer.verify(IMAGE.replace("1", "2"), expires, good, NOW)
    assert not signer.verify(IMAGE, expires, good[:-1] + ("A" if good[-1] != "A" else "B"), NOW)
    assert not UrlSigner(b"j" * 32).verify(IMAGE, expires, good, NOW)
    url = signer.url(IMAGE, NOW + timedelta(minutes=5))
    assert url == f"/signed/img/{IMAGE}?expires={expires}&signature={good}"
    with pytest.raises(ValueError, match="at least 16 bytes"):
        UrlSigner(b"short")


def test_cache_key_covers_prompt_aspect_and_enhancement() -> None:
    base = cache_key("a cat", "1:1", False, "general")
    assert base == cache_key("a cat", "1:1", False, "photorealistic")  # no enhancement
    assert base != cache_key("a cat", "16:9", False, "general")
    assert base != cache_key("a cat ", "1:1", False, "general")
    enhanced = cache_key("a cat", "1:1", True, "general")
    assert enhanced != base != cache_key("a cat", "1:1", True, "photorealistic")


def test_forwarded_for_is_believed_only_from_trusted_hops() -> None:
    proxies = parse_proxies("10.0.0.0/8, 127.0.0.1")
    assert client_ip("127.0.0.1", None, proxies) == "127.0.0.1"
    assert client_ip("198.51.100.1", "203.0.113.9", proxies) == "198.51.100.1"
    assert client_ip("127.0.0.1", "203.0.113.9", proxies) == "203.0.113.9"
    assert client_ip("127.0.0.1", "1.1.1.1, 203.0.113.9, 10.2.3.4", proxies) == "203.0.113.9"
    assert client_ip("127.0.0.1", "not-an-ip, 10.0.0.1", proxies) == "not-an-ip"
    assert client_ip("127.0.0.1", "203.0.113.9", ()) == "127.0.0.1"


def test_etag_matching() -> None:
    assert etag_matches('"abc"', "abc") and etag_matches('W/"abc"', "abc")
    assert etag_matches('"x", "abc"', "abc") and etag_matches("*", "abc")
    assert not etag_matches('"abcd"', "abc") and not etag_matches("", "abc")
