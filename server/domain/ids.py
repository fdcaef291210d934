"""Resource IDs: time-ordered UUIDv7 strings, and their validation."""

from __future__ import annotations

import re

import uuid6

from server.domain.errors import invalid


def new_id() -> str:
    """A new time-ordered UUID (v7), for index locality."""
    return str(uuid6.uuid7())


# The canonical form, in either case: 8-4-4-4-12 ASCII hex digits and nothing else.
_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def is_uuid(value: str) -> bool:
    """Whether ``value`` is a canonical UUID string (every ID of every request is checked)."""
    return _CANONICAL_UUID.fullmatch(value) is not None


def require_uuid(field_name: str, value: str) -> str:
    """``value`` lower-cased, or INVALID_ARGUMENT naming ``field_name``."""
    if not value:
        raise invalid(field_name, "is required")
    if not is_uuid(value):
        raise invalid(field_name, f"must be a UUID, got {value[:40]!r}")
    return value.lower()
