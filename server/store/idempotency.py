"""Idempotency keys (AIP-155): the first request with a request_id wins; retries replay it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime
from enum import Enum

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.errors import DomainError, Status
from server.store.models import IdempotencyKeyRow
from server.store.upsert import insert_if_absent


def fingerprint(request: object) -> str:
    """A digest of a validated request, to detect a key reused for another request.

    The request is written as canonical JSON (sorted keys, no spaces), so the
    digest depends on the request's content only, not on how Python prints it.
    """
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _plain(value: object) -> object:
    """JSON for what json.dumps cannot write itself: commands, enums, sets and bytes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    raise TypeError(f"cannot fingerprint a {type(value).__name__}")


async def claim_request_id(
    session: AsyncSession,
    project_id: str,
    scope: str,
    request_id: str,
    resource_id: str,
    digest: str,
    now: datetime,
) -> str | None:
    """Record ``request_id`` for ``resource_id``; if it was used before, the earlier resource ID.

    Runs inside the caller's transaction, so the key and the resource commit together.
    """
    table = IdempotencyKeyRow.__table__
    values = {
        "project_id": project_id,
        "scope": scope,
        "request_id": request_id,
        "resource_id": resource_id,
        "fingerprint": digest,
        "create_time": now,
    }
    if await insert_if_absent(session, table, values):  # type: ignore[arg-type]
        return None
    existing = await session.get(IdempotencyKeyRow, (project_id, scope, request_id))
    assert existing is not None
    if existing.fingerprint != digest:
        raise DomainError(
            Status.FAILED_PRECONDITION,
            "REQUEST_ID_REUSED",
            "request_id was already used for a different request",
        )
    return existing.resource_id


async def prune_request_ids(session: AsyncSession, before: datetime) -> int:
    """Forget request_ids recorded before ``before`` (a retry after that is a new request)."""
    result = await session.execute(
        delete(IdempotencyKeyRow).where(IdempotencyKeyRow.create_time < before)
    )
    return int(getattr(result, "rowcount", 0) or 0)
