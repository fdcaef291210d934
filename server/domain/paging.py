"""Pages of listings: limit/offset validation, opaque keyset page tokens (AIP-158), Page[T]."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from server.domain.errors import ValidationErrors, invalid
from server.domain.rules import LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT


@dataclass(frozen=True, slots=True)
class Cursor:
    """The position after the last row of a page: its create time and ID."""

    create_time: datetime
    id: str


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing: its items, the total matching, and where the next page starts."""

    items: Sequence[T]
    total: int
    limit: int
    offset: int
    has_more: bool
    next_page_token: str = ""


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


class Keyed(Protocol):
    """A listed resource: listings are ordered by create time, then ID."""

    @property
    def id(self) -> str: ...

    @property
    def create_time(self) -> datetime: ...


K = TypeVar("K", bound=Keyed)


def keyset_page(
    items: Sequence[K], total: int, request: PageRequest, has_more: bool, filters: object
) -> Page[K]:
    """The page of ``items``, with a token for the next one when more follow."""
    token = ""
    if has_more and items:
        last = items[-1]
        token = encode_token(Cursor(last.create_time, last.id), filters)
    return Page(items, total, request.limit, request.offset, has_more, token)


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
