"""Resource IDs: time-ordered UUIDv7 strings, and their validation."""

from __future__ import annotations

import uuid

import uuid6

from server.domain.errors import invalid


def new_id() -> str:
    """A new time-ordered UUID (v7), for index locality."""
    return str(uuid6.uuid7())


def is_uuid(value: str) -> bool:
    """Whether ``value`` is a canonical UUID string."""
    try:
        return str(uuid.UUID(value)) == value.lower() and len(value) == 36
    except ValueError:
        return False


def require_uuid(field_name: str, value: str) -> str:
    """``value`` lower-cased, or INVALID_ARGUMENT naming ``field_name``."""
    if not value:
        raise invalid(field_name, "is required")
    if not is_uuid(value):
        raise invalid(field_name, f"must be a UUID, got {value[:40]!r}")
    return value.lower()
