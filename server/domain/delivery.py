"""Public delivery of image bytes: what the HTTP headers say, and conditional requests."""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.errors import DomainError, Status


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """What the HTTP request asked beyond the bytes."""

    if_none_match: str = ""
    head_only: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryHead:
    """What the response headers of a public image say; the bytes follow it."""

    image_id: str
    mime_type: str
    size: int
    etag: str
    not_modified: bool = False
    cache_status: str = ""


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether If-None-Match names ``etag`` (weak comparison, as RFC 9110 asks) or is ``*``."""
    wanted = f'"{etag}"'
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


def nothing_here() -> DomainError:
    """The one answer for an unknown project, image, alias or scope on a public route.

    It says nothing of which part was wrong, so a stranger cannot probe which
    project slugs or image IDs exist.
    """
    return DomainError(Status.NOT_FOUND, "NOT_FOUND", "not found")
