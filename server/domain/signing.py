"""Signed gateway URLs of the local image store: HMAC-SHA256 over the image and the expiry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from datetime import datetime


def signed_path(image_id: str) -> str:
    """The gateway path a signed URL of ``image_id`` points at (its query carries the rest)."""
    return f"/signed/img/{image_id}"


class UrlSigner:
    """Signs and checks ``(image_id, expires)`` pairs with one secret.

    The signature covers the image ID and the expiry (Unix seconds), so changing
    either, or the signature itself, makes the URL worthless; the image's bytes
    are whatever its current version is when the URL is used, as with the
    image's own URL.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the URL signing secret must be at least 16 bytes")
        self._secret = secret

    def signature(self, image_id: str, expires: int) -> str:
        """The URL-safe signature of an image ID and expiry."""
        digest = hmac.new(
            self._secret, f"img:{image_id}:{expires}".encode(), hashlib.sha256
        ).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def url(self, image_id: str, expire_time: datetime) -> str:
        """The gateway-relative signed URL (the caller prefixes the public base URL).

        The expiry is rounded up to a whole second, so the URL works until at
        least ``expire_time`` (the time GetImageUrl reports).
        """
        expires = math.ceil(expire_time.timestamp())
        signature = self.signature(image_id, expires)
        return f"{signed_path(image_id)}?expires={expires}&signature={signature}"

    def verify(self, image_id: str, expires: int, signature: str, now: datetime) -> bool:
        """Whether the signature is ours for these values and the expiry has not passed."""
        expected = self.signature(image_id, expires)
        # Constant time, so a guesser learns nothing from how long a refusal takes.
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return False
        return now.timestamp() < expires
