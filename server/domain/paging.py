"""Limit/offset validation and opaque keyset page tokens (AIP-158)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from server.domain.errors import ValidationErrors, invalid
from server.domain.rules import LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT


@dataclass(frozen=True, slots=True)
class Cursor:
    """The position after the last row of a page: its create time and ID."""

    create_time: datetime
    id: str


@dataclass(frozen=True, slots=True)
class PageRequest:
    """A validated page request: limit, offset, and an optional keyset cursor."""

    limit: int
    offset: int
    after: Cursor | None


def page_request(limit: int, offset: int, page_token: str, filters: object) -> PageRequest:
    """Validate paging fields; ``filters`` binds a token to the query that made it."""
    errors = ValidationErrors()
    if limit < 0 or limit > LIST_MAX_LIMIT:
        errors.add(
            "limit", f"must be between 0 and {LIST_MAX_LIMIT} (0 means {LIST_DEFAULT_LIMIT})"
        )
    if offset < 0:
        errors.add("offset", "must not be negative")
    if page_token and offset:
        errors.add("offset", "must be 0 when page_token is set")
    errors.raise_if_any()
    after = decode_token(page_token, filters) if page_token else None
    return PageRequest(limit or LIST_DEFAULT_LIMIT, offset, after)


def _fingerprint(filters: object) -> str:
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:12]


def encode_token(cursor: Cursor, filters: object) -> str:
    """An opaque token for the page after ``cursor`` under the same filters."""
    raw = json.dumps(
        {"t": cursor.create_time.isoformat(), "i": cursor.id, "f": _fingerprint(filters)},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str, filters: object) -> Cursor:
    """The cursor in ``token``; INVALID_ARGUMENT if it is malformed or from other filters."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        cursor = Cursor(datetime.fromisoformat(data["t"]), str(data["i"]))
        fingerprint = data["f"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise invalid("page_token", "is malformed", reason="INVALID_PAGE_TOKEN") from exc
    if cursor.create_time.tzinfo is None:
        raise invalid("page_token", "is malformed", reason="INVALID_PAGE_TOKEN")
    if fingerprint != _fingerprint(filters):
        raise invalid("page_token", "belongs to a query with other filters", "INVALID_PAGE_TOKEN")
    return cursor
