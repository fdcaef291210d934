"""Dependency outages as the domain sees them: which dependency, and the caller's answer."""

from __future__ import annotations

from typing import Final

from server.domain.errors import DomainError, Status

DATABASE: Final = "database"
OBJECT_STORE: Final = "object_store"
REASONS: Final = {DATABASE: "DATABASE_UNAVAILABLE", OBJECT_STORE: "STORAGE_UNAVAILABLE"}


class DependencyUnavailableError(Exception):
    """A dependency (``DATABASE`` or ``OBJECT_STORE``) cannot be reached right now."""

    dependency: str = ""


def unavailable(dependency: str, correlation_id: str = "") -> DomainError:
    """The UNAVAILABLE a call answers while ``dependency`` is down (clients retry it)."""
    what = "the database" if dependency == DATABASE else "the image store"
    suffix = f" (correlation id {correlation_id})" if correlation_id else ""
    return DomainError(
        Status.UNAVAILABLE,
        REASONS.get(dependency, "DEPENDENCY_UNAVAILABLE"),
        f"{what} cannot be reached right now; try again shortly{suffix}",
        metadata={"dependency": dependency},
        retry_after_seconds=1.0,
    )
