"""Live scopes and live URLs: the scope resource, its rules, and the cache key of a URL."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from server.domain.errors import ValidationErrors

SCOPE_SLUG: Final = re.compile(r"[A-Za-z0-9_-]{1,63}")
DEFAULT_GENERATIONS_LIMIT: Final = 30
MAX_GENERATIONS_LIMIT: Final = 100_000
# A refused miss of a full scope does not clear with time: the hint is an hour.
SCOPE_FULL_RETRY_SECONDS: Final = 3600.0
# How long a miss that timed out suggests waiting before asking again.
PENDING_RETRY_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True)
class LiveScope:
    """A live scope as stored, with how many generations it holds."""

    id: str
    project_id: str
    slug: str
    allow_new_generations: bool
    new_generations_limit: int
    current_generations: int
    last_generated_time: datetime | None
    meta: dict[str, Any]
    create_time: datetime


@dataclass(frozen=True, slots=True)
class LiveScopeChanges:
    """The fields an UpdateLiveScope sets; None leaves one as it is."""

    allow_new_generations: bool | None = None
    new_generations_limit: int | None = None
    meta: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class LiveRequest:
    """What a live URL asks for, and who asks."""

    project_slug: str
    scope: str
    prompt: str
    aspect_ratio: str
    auto_enhance: bool
    template: str
    client_ip: str


def check_scope_slug(errors: ValidationErrors, slug: str, field: str = "slug") -> str:
    """The slug, recording a violation if it is not 1 to 63 letters, digits, '_' or '-'."""
    if not SCOPE_SLUG.fullmatch(slug):
        errors.add(field, "must be 1 to 63 letters, digits, '_' or '-'")
    return slug


def check_generations_limit(errors: ValidationErrors, limit: int) -> int:
    """The per-scope generation cap, recording a violation if out of range."""
    if not 0 <= limit <= MAX_GENERATIONS_LIMIT:
        errors.add("new_generations_limit", f"must be 0 to {MAX_GENERATIONS_LIMIT}")
    return limit


def cache_key(prompt: str, aspect_ratio: str, auto_enhance: bool, template: str) -> str:
    """The cache key of a live URL within its scope: prompt, aspect ratio, enhancement choice.

    The template only matters when enhancement runs, so it is left out otherwise.
    """
    material = json.dumps(
        [prompt, aspect_ratio, auto_enhance, template if auto_enhance else ""],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()
