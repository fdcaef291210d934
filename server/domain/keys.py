"""API key secrets: their format, how they are hashed for storage, and how they are compared.

Format: a project key is ``igk_`` followed by 43 URL-safe base64 characters
(32 random bytes from :mod:`secrets`); an admin key is ``igk_admin_`` followed
by the same 43 characters. The distinct prefixes let people and secret
scanners tell the two apart at a glance and make keys easy to grep for in a
leak; the database's ``admin`` column, not the prefix, decides what a key may
do. The lengths differ (47 and 53 characters), so neither form can be read as
the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

PROJECT_KEY_PREFIX: Final = "igk_"
ADMIN_KEY_PREFIX: Final = "igk_admin_"
SECRET_BYTES: Final = 32
# 32 bytes in unpadded URL-safe base64.
SECRET_BODY_CHARS: Final = 43
# How much of a secret is kept in clear to recognise the key in listings.
DISPLAY_PREFIX_CHARS: Final = 12
# Longest value worth hashing and looking up: anything longer is not a key.
MAX_KEY_CHARS: Final = len(ADMIN_KEY_PREFIX) + SECRET_BODY_CHARS

_KEY_PATTERN: Final = re.compile(
    rf"(?:{re.escape(ADMIN_KEY_PREFIX)}|{re.escape(PROJECT_KEY_PREFIX)})"
    rf"[A-Za-z0-9_-]{{{SECRET_BODY_CHARS}}}"
)


@dataclass(frozen=True, slots=True)
class MintedKey:
    """A fresh secret and what may be stored about it (the secret itself never is)."""

    secret: str
    secret_hash: str
    prefix: str


def mint_key(*, admin: bool) -> MintedKey:
    """A new random secret of the admin or project form, with its hash and display prefix."""
    body = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
    secret = (ADMIN_KEY_PREFIX if admin else PROJECT_KEY_PREFIX) + body
    return MintedKey(secret=secret, secret_hash=hash_secret(secret), prefix=display_prefix(secret))


def hash_secret(secret: str) -> str:
    """The stored form of a secret: SHA-256, hex.

    A plain fast hash is enough here, unlike for passwords: a secret carries
    256 bits of randomness, so nobody can brute-force it from its hash, and a
    fast hash keeps the per-call lookup cheap. Unsalted on purpose, so the
    hash can be looked up by an index.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    """The first characters of a secret, shown in listings to recognise the key."""
    return secret[:DISPLAY_PREFIX_CHARS]


def looks_like_key(value: str) -> bool:
    """Whether ``value`` has the shape of an imagegen key (checked before any lookup)."""
    return len(value) <= MAX_KEY_CHARS and _KEY_PATTERN.fullmatch(value) is not None


def hash_matches(secret: str, secret_hash: str) -> bool:
    """Whether ``secret`` hashes to ``secret_hash``, in constant time."""
    return hmac.compare_digest(hash_secret(secret).encode(), secret_hash.encode())
