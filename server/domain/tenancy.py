"""Tenancy: projects, API keys, the principal a key stands for, and their input rules."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from server.domain.errors import ValidationErrors, invalid

SLUG_MAX_CHARS: Final = 63
# Lowercase letters, digits and "-", starting with a letter or digit, 2..63 characters.
SLUG_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
NAME_MAX_CHARS: Final = 200
# Ten years: a longer-lived key should be a key that never expires, said explicitly with 0.
EXPIRE_DAYS_MAX: Final = 3650
DEV_PROJECT_SLUG: Final = "default"
DEV_PROJECT_NAME: Final = "Default project"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a project key (one project) or an admin key."""

    key_id: str
    project_id: str | None
    admin: bool
    # The project's slug (image URLs name it); None for admin keys and the gateway.
    project_slug: str | None = None

    @property
    def label(self) -> str:
        """What logs may say about the caller (never the secret)."""
        if self.admin:
            return f"admin:{self.key_id}"
        # A principal of no project and no admin rights: the gateway (DeliveryService).
        return f"project:{self.project_id}" if self.project_id else self.key_id


@dataclass(frozen=True, slots=True)
class Project:
    """A tenant."""

    id: str
    slug: str
    name: str
    create_time: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's public description; the secret is not part of it."""

    id: str
    project_id: str | None
    admin: bool
    name: str
    prefix: str
    create_time: datetime
    expire_time: datetime | None
    revoke_time: datetime | None
    last_used_time: datetime | None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: its secret, shown to the caller this once, and its description."""

    secret: str
    key: ApiKey


def check_new_project(slug: str, name: str) -> tuple[str, str]:
    """The slug and display name of a project to create (name defaults to the slug)."""
    errors = ValidationErrors()
    if not SLUG_PATTERN.fullmatch(slug):
        errors.add(
            "slug",
            "must be 2 to 63 characters of lowercase letters, digits and '-', "
            "starting with a letter or digit",
        )
    name = name.strip() or slug
    if len(name) > NAME_MAX_CHARS:
        errors.add("name", f"must be at most {NAME_MAX_CHARS} characters")
    errors.raise_if_any()
    return slug, name


def check_key_name(name: str) -> str:
    """The label of a key to create."""
    name = name.strip()
    if len(name) > NAME_MAX_CHARS:
        raise invalid("name", f"must be at most {NAME_MAX_CHARS} characters")
    return name


def check_expire_days(days: int) -> int | None:
    """Days until a new key expires, or None for a key that never does (0)."""
    if days < 0 or days > EXPIRE_DAYS_MAX:
        raise invalid("expire_days", f"must be between 0 (never) and {EXPIRE_DAYS_MAX}")
    return days or None


def parse_id(field_name: str, value: str) -> str:
    """The canonical form of a UUID given in ``field_name``; anything else is INVALID_ARGUMENT."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise invalid(field_name, "must be a UUID") from None
