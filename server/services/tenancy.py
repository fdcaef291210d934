"""Tenancy use cases: projects, API keys, bootstrap and authentication, one transaction each."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.domain import keys
from server.domain.clock import utcnow
from server.domain.errors import DomainError, Status, invalid, not_found
from server.domain.ids import new_id
from server.domain.paging import Page
from server.domain.rules import LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT
from server.domain.tenancy import (
    DEV_PROJECT_NAME,
    DEV_PROJECT_SLUG,
    ApiKey,
    IssuedKey,
    Principal,
    Project,
    check_expire_days,
    check_key_name,
    check_new_project,
    parse_id,
)
from server.domain.webhooks import new_secret
from server.events.listener import CHANNEL, key_change_payload
from server.store.db import Database
from server.store.models import ApiKeyRow, ProjectRow

Sessions = async_sessionmaker[AsyncSession]

# last_used_time is a hint for people, not an audit log: writing it on every
# call would turn each read-only RPC into a write.
LAST_USED_RESOLUTION: Final = timedelta(minutes=1)
# Keys remembered by one process at most (each entry is a few hundred bytes).
_MAX_CACHED_KEYS: Final = 100_000


async def ensure_dev_project(sessions: Sessions) -> str | None:
    """On an empty database, create project ``default`` and a key for it; return its secret.

    Returns None when any project exists, or when another process created
    ``default`` at the same moment (the unique slug settles the race).
    """
    try:
        async with sessions.begin() as session:
            if await session.scalar(select(ProjectRow.id).limit(1)) is not None:
                return None
            now = utcnow()
            project = ProjectRow(
                id=new_id(),
                slug=DEV_PROJECT_SLUG,
                name=DEV_PROJECT_NAME,
                create_time=now,
                webhook_secret=new_secret(),
            )
            session.add(project)
            await session.flush()
            issued = _add_key(session, project_id=project.id, name="dev", expire_time=None)
    except IntegrityError:
        return None
    return issued.secret


async def bootstrap_admin(sessions: Sessions) -> str:
    """Create the first admin key and return its secret; refuse if any admin key ever existed.

    Revoked and expired admin keys count too: bootstrap is a way in for a new
    installation, not a way around a revocation.
    """
    async with sessions.begin() as session:
        existing = await session.scalar(select(ApiKeyRow.id).where(ApiKeyRow.admin).limit(1))
        if existing is not None:
            raise DomainError(
                Status.FAILED_PRECONDITION,
                "ADMIN_KEY_EXISTS",
                "an admin key already exists; create more with AdminService.CreateApiKey",
            )
        issued = _add_key(session, project_id=None, name="bootstrap", expire_time=None)
    return issued.secret


@dataclass(frozen=True, slots=True)
class _KnownKey:
    """A key as last read from the database, and when (monotonic seconds) it was read."""

    principal: Principal
    expire_time: datetime | None
    revoked: bool
    read_at: float


class Tenancy:
    """The AdminService use cases and API-key authentication, over the database.

    Authentication is served from a per-process cache of keys by secret hash: an
    entry is trusted for ``key_cache_seconds`` after it was read, then read again.
    Expiry is checked against the cached expire_time on every call, so an expired
    key is refused at once. A revoked key is refused within ``key_cache_seconds``
    on every replica: the replica that revoked drops its entry at once, and on
    PostgreSQL the revocation's NOTIFY (the channel watchers' changes use) makes
    every other replica drop it as soon as it arrives; the TTL bounds a lost
    notification. A lookup that was in flight when its key was dropped is not
    cached. Unknown secrets are never cached (each costs a lookup, as before).
    """

    def __init__(
        self,
        db: Database,
        *,
        key_cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._key_cache_seconds = key_cache_seconds
        self._clock = clock
        self._keys: dict[str, _KnownKey] = {}
        # key id -> secret hash of its cache entry, to drop it when told the key changed
        self._hashes: dict[str, str] = {}
        # Counts the drops: a lookup that began before one does not cache what it read.
        self._drops = 0

    def is_cached(self, key_id: str) -> bool:
        """Whether this process holds key ``key_id`` in its key cache (for tests and metrics)."""
        return key_id in self._hashes

    def forget_key(self, key_id: str | None) -> None:
        """Drop ``key_id`` from the key cache (every key when None): it changed elsewhere."""
        self._drops += 1
        if key_id is None:
            self._keys.clear()
            self._hashes.clear()
            return
        secret_hash = self._hashes.pop(key_id, None)
        if secret_hash is not None:
            self._keys.pop(secret_hash, None)

    async def create_project(self, *, slug: str, name: str) -> Project:
        """Create a project; its slug must be free."""
        slug, name = check_new_project(slug, name)
        row = ProjectRow(
            id=new_id(), slug=slug, name=name, create_time=utcnow(), webhook_secret=new_secret()
        )
        try:
            async with self._db.write.begin() as session:
                taken = await session.scalar(select(ProjectRow.id).where(ProjectRow.slug == slug))
                if taken is not None:
                    raise _slug_taken(slug)
                session.add(row)
        except IntegrityError:
            # Someone took the slug between our check and our insert.
            raise _slug_taken(slug) from None
        return _project(row)

    async def get_project(self, project_id: str) -> Project:
        """The caller's own project."""
        async with self._db.read() as session:
            row = await session.get(ProjectRow, project_id)
            if row is None:
                raise not_found("project", project_id)
            return _project(row)

    async def webhook_secret(self, project_id: str) -> str:
        """The project's webhook signing secret (made on first use for a project without one)."""
        async with self._db.read() as session:
            secret = await session.scalar(
                select(ProjectRow.webhook_secret).where(ProjectRow.id == project_id)
            )
        if secret:
            return secret
        return await self._set_webhook_secret(project_id, only_if_missing=True)

    async def rotate_webhook_secret(self, project_id: str) -> str:
        """Replace the project's webhook secret; deliveries from now on use the new one."""
        return await self._set_webhook_secret(project_id, only_if_missing=False)

    async def _set_webhook_secret(self, project_id: str, *, only_if_missing: bool) -> str:
        async with self._db.write.begin() as session:
            row = await session.get(ProjectRow, project_id, with_for_update=True)
            if row is None:
                raise not_found("project", project_id)
            if not (only_if_missing and row.webhook_secret):
                row.webhook_secret = new_secret()
            return row.webhook_secret or ""

    async def list_projects(self, *, limit: int, offset: int) -> Page[Project]:
        """A page of projects, oldest first."""
        if limit < 0 or limit > LIST_MAX_LIMIT:
            raise invalid(
                "limit", f"must be between 0 (default {LIST_DEFAULT_LIMIT}) and {LIST_MAX_LIMIT}"
            )
        if offset < 0:
            raise invalid("offset", "must not be negative")
        limit = limit or LIST_DEFAULT_LIMIT
        async with self._db.read() as session:
            total = await session.scalar(select(func.count()).select_from(ProjectRow)) or 0
            rows = await session.scalars(
                select(ProjectRow)
                .order_by(ProjectRow.create_time, ProjectRow.id)
                .limit(limit)
                .offset(offset)
            )
            projects = tuple(_project(row) for row in rows)
        return Page(projects, total, limit, offset, has_more=offset + len(projects) < total)

    async def create_api_key(self, *, project_id: str, name: str, expire_days: int) -> IssuedKey:
        """Create a project key, or an admin key when ``project_id`` is empty."""
        scope = parse_id("project_id", project_id) if project_id else None
        name = check_key_name(name)
        days = check_expire_days(expire_days)
        expire_time = utcnow() + timedelta(days=days) if days else None
        async with self._db.write.begin() as session:
            if scope is not None:
                await _require_project(session, scope)
            return _add_key(session, project_id=scope, name=name, expire_time=expire_time)

    async def list_api_keys(self, *, project_id: str) -> list[ApiKey]:
        """Keys of one project, or every key when ``project_id`` is empty; oldest first."""
        scope = parse_id("project_id", project_id) if project_id else None
        async with self._db.read() as session:
            query = select(ApiKeyRow).order_by(ApiKeyRow.create_time, ApiKeyRow.id)
            if scope is not None:
                await _require_project(session, scope)
                query = query.where(ApiKeyRow.project_id == scope)
            return [_api_key(row) for row in await session.scalars(query)]

    async def revoke_api_key(self, *, key_id: str) -> ApiKey:
        """Revoke a key at once; revoking it again keeps the first revoke time."""
        key_id = parse_id("id", key_id)
        async with self._db.write.begin() as session:
            row = await session.get(ApiKeyRow, key_id, with_for_update=True)
            if row is None:
                raise not_found("api key", key_id)
            if row.revoke_time is None:
                row.revoke_time = utcnow()
            revoked = _api_key(row)
            if not self._db.is_sqlite:
                # Delivered on commit: every replica's listener drops the key from its cache.
                await session.execute(select(func.pg_notify(CHANNEL, key_change_payload(key_id))))
        # This replica refuses the key from now on; others when the NOTIFY arrives, and
        # within key_cache_seconds whatever happens to it (SQLite has one process per file,
        # or Apps that only share the TTL).
        self.forget_key(key_id)
        return revoked

    async def authenticate(self, secret: str) -> Principal:
        """The principal ``secret`` stands for, or UNAUTHENTICATED.

        Served from the key cache when fresh; otherwise the lookup runs on the
        readers (on SQLite, beside the single writer instead of queueing behind
        it), and the writer records last_used_time.
        Messages never quote the secret: they end up in clients' logs.
        """
        principal = self.authenticate_cached(secret)
        if principal is not None:
            return principal
        return self._admit(await self._read_key(secret, keys.hash_secret(secret)))

    def authenticate_cached(self, secret: str) -> Principal | None:
        """As ``authenticate``, from a fresh cache entry without waiting; None if there is none.

        The hot path of every call: no database, no await.
        """
        if not keys.looks_like_key(secret):
            raise _unauthenticated("API_KEY_INVALID", "the API key is malformed")
        known = self._keys.get(keys.hash_secret(secret))
        if known is None or self._clock() - known.read_at >= self._key_cache_seconds:
            return None
        return self._admit(known)

    @staticmethod
    def _admit(known: _KnownKey) -> Principal:
        """The key's principal, or UNAUTHENTICATED if it is revoked or expired by now."""
        if known.revoked:
            raise _unauthenticated("API_KEY_REVOKED", "the API key has been revoked")
        if known.expire_time is not None and known.expire_time <= utcnow():
            raise _unauthenticated("API_KEY_EXPIRED", "the API key has expired")
        return known.principal

    async def _read_key(self, secret: str, secret_hash: str) -> _KnownKey:
        """Look the key up (and note its use, at most once a minute); cache what was found."""
        read_at = self._clock()
        drops = self._drops
        now = utcnow()
        async with self._db.read() as session:
            found = (
                await session.execute(
                    select(ApiKeyRow, ProjectRow.slug)
                    .outerjoin(ProjectRow, ProjectRow.id == ApiKeyRow.project_id)
                    .where(ApiKeyRow.secret_hash == secret_hash)
                )
            ).first()
        row, slug = (found[0], found[1]) if found is not None else (None, None)
        # The index finds the row by hash; the constant-time check guards against
        # a database whose string comparison is looser than ours.
        if row is None or not keys.hash_matches(secret, row.secret_hash):
            raise _unauthenticated("API_KEY_INVALID", "the API key is not valid")
        known = _KnownKey(
            Principal(key_id=row.id, project_id=row.project_id, admin=row.admin, project_slug=slug),
            row.expire_time,
            row.revoke_time is not None,
            read_at,
        )
        stale = now - LAST_USED_RESOLUTION
        if not known.revoked and (row.last_used_time is None or row.last_used_time < stale):
            # A transaction of its own, so the common case (fresh) stays read-only.
            # Conditional, so replicas racing on the same key write once a minute.
            async with self._db.write.begin() as session:
                await session.execute(
                    update(ApiKeyRow)
                    .where(
                        ApiKeyRow.id == row.id,
                        or_(ApiKeyRow.last_used_time.is_(None), ApiKeyRow.last_used_time < stale),
                    )
                    .values(last_used_time=now)
                )
        if self._key_cache_seconds > 0 and drops == self._drops:
            if len(self._keys) >= _MAX_CACHED_KEYS:
                # A flood of distinct keys: start over, never grow unbounded.
                self._keys.clear()
                self._hashes.clear()
            self._keys[secret_hash] = known
            self._hashes[row.id] = secret_hash
        return known


def _add_key(
    session: AsyncSession, *, project_id: str | None, name: str, expire_time: datetime | None
) -> IssuedKey:
    minted = keys.mint_key(admin=project_id is None)
    row = ApiKeyRow(
        id=new_id(),
        project_id=project_id,
        admin=project_id is None,
        name=name,
        prefix=minted.prefix,
        secret_hash=minted.secret_hash,
        create_time=utcnow(),
        expire_time=expire_time,
        revoke_time=None,
        last_used_time=None,
    )
    session.add(row)
    return IssuedKey(secret=minted.secret, key=_api_key(row))


async def _require_project(session: AsyncSession, project_id: str) -> None:
    if await session.get(ProjectRow, project_id) is None:
        raise not_found("project", project_id)


def _slug_taken(slug: str) -> DomainError:
    return DomainError(
        Status.ALREADY_EXISTS,
        "PROJECT_SLUG_TAKEN",
        f"a project with slug {slug!r} already exists",
        metadata={"slug": slug},
    )


def _unauthenticated(reason: str, message: str) -> DomainError:
    return DomainError(Status.UNAUTHENTICATED, reason, message)


def _project(row: ProjectRow) -> Project:
    return Project(id=row.id, slug=row.slug, name=row.name, create_time=row.create_time)


def _api_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        project_id=row.project_id,
        admin=row.admin,
        name=row.name,
        prefix=row.prefix,
        create_time=row.create_time,
        expire_time=row.expire_time,
        revoke_time=row.revoke_time,
        last_used_time=row.last_used_time,
    )
