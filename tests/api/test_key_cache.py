"""The per-process API-key cache: a revoked key is refused within the bound on every replica."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import make_settings
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import event, update

from genrpc.imagegen.v1 import admin_pb2, admin_pb2_grpc
from server.app import App
from server.domain import keys
from server.domain.errors import DomainError
from server.services.tenancy import Tenancy, bootstrap_admin
from server.store.models import ApiKeyRow

CACHE_SECONDS = 1.0
# How long past the bound we keep asking before calling it a failure: generous,
# because a loaded machine may delay any one call, not because the bound is loose.
SLACK_SECONDS = 3.0


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo detail")


async def _list_projects(channel: grpc.aio.Channel, secret: str) -> None:
    await admin_pb2_grpc.AdminServiceStub(channel).ListProjects(
        admin_pb2.ListProjectsRequest(), metadata=(("x-api-key", secret),)
    )


async def test_revocation_reaches_another_replica_within_the_bound(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    # Two Apps on one database (PostgreSQL, or one SQLite file): replicas.
    settings = {"api_key_cache_seconds": CACHE_SECONDS, **storage}
    first = App(make_settings(tmp_path / "a", **settings))
    await first.start()
    second = App(make_settings(tmp_path / "a" if not storage else tmp_path / "b", **settings))
    await second.start()
    try:
        admin = await bootstrap_admin(first.sessions)
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as one,
            grpc.aio.insecure_channel(f"127.0.0.1:{second.grpc_port}") as two,
        ):
            stub = admin_pb2_grpc.AdminServiceStub(one)
            md = (("x-api-key", admin),)
            created = await stub.CreateApiKey(admin_pb2.CreateApiKeyRequest(), metadata=md)
            victim = created.api_key
            await _list_projects(two, victim)  # the second replica now holds it in its cache
            await _list_projects(one, victim)
            await stub.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=created.key.id), metadata=md)
            revoked_at = time.monotonic()
            # The replica that revoked refuses it from the next call.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _list_projects(one, victim)
            assert _reason(caught.value) == "API_KEY_REVOKED"
            # The other refuses it once its entry is older than the bound.
            while True:
                try:
                    await _list_projects(two, victim)
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert _reason(error) == "API_KEY_REVOKED"
                    break
                assert time.monotonic() - revoked_at < CACHE_SECONDS + SLACK_SECONDS, (
                    "the revoked key still works on the other replica past the bound"
                )
                await asyncio.sleep(0.05)
            await _list_projects(two, admin)  # other keys are untouched
    finally:
        await second.stop()
        await first.stop()


async def test_revocation_notify_drops_the_key_on_another_replica(
    tmp_path: Path, storage: dict[str, Any], backend: str
) -> None:
    # PostgreSQL only: the revocation's NOTIFY, on the channel watchers' changes use,
    # makes another replica drop the key from its cache when it arrives, long before the
    # TTL (the longest allowed, 5 s) would have it read again. Nothing calls the second
    # replica while we wait, so only the notification can empty its cache entry.
    if backend != "postgresql":
        pytest.skip("SQLite has no NOTIFY: the TTL is the bound (test above)")
    settings = {"api_key_cache_seconds": 5.0, **storage}
    first = App(make_settings(tmp_path / "a", **settings))
    await first.start()
    second = App(make_settings(tmp_path / "b", **settings))
    await second.start()
    try:
        assert second.listener is not None
        await asyncio.wait_for(second.listener.connected.wait(), 30)
        admin = await bootstrap_admin(first.sessions)
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as one,
            grpc.aio.insecure_channel(f"127.0.0.1:{second.grpc_port}") as two,
        ):
            stub = admin_pb2_grpc.AdminServiceStub(one)
            md = (("x-api-key", admin),)
            created = await stub.CreateApiKey(admin_pb2.CreateApiKeyRequest(), metadata=md)
            victim, victim_id = created.api_key, created.key.id
            await _list_projects(two, victim)
            await _list_projects(two, admin)
            assert second.tenancy.is_cached(victim_id)
            await stub.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=victim_id), metadata=md)
            # Bounded generously: a loaded machine may delay the notification, and the
            # assertion is about its cause (the entry dropped), not its speed.
            deadline = time.monotonic() + 30
            while second.tenancy.is_cached(victim_id):
                assert time.monotonic() < deadline, "the NOTIFY never dropped the revoked key"
                await asyncio.sleep(0.02)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _list_projects(two, victim)
            assert _reason(caught.value) == "API_KEY_REVOKED"
            await _list_projects(two, admin)  # other keys are untouched
    finally:
        await second.stop()
        await first.stop()


async def test_a_gap_in_notifications_empties_the_key_cache(app: App) -> None:
    # After the listener reconnects, revocations may have been missed: every key is
    # read again on its next call.
    secret = await bootstrap_admin(app.sessions)
    principal = await app.tenancy.authenticate(secret)
    assert app.tenancy.is_cached(principal.key_id)
    app.hub.notify_everyone()
    assert not app.tenancy.is_cached(principal.key_id)
    assert await app.tenancy.authenticate(secret) == principal
    assert app.tenancy.is_cached(principal.key_id)


async def test_a_lookup_in_flight_when_its_key_is_dropped_is_not_cached(app: App) -> None:
    # A drop (a NOTIFY) that arrives while a lookup runs may be about what the lookup
    # read before the revocation committed: what it read is used once, not cached.
    secret = await bootstrap_admin(app.sessions)
    tenancy = Tenancy(app.db, key_cache_seconds=CACHE_SECONDS)
    drops: list[str] = []

    def drop_during_lookup(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # The key's row is being read: the notification lands now.
        if "api_keys" in statement and not drops:
            drops.append(statement)
            tenancy.forget_key(None)

    engine = app.db.read_engine.sync_engine
    event.listen(engine, "before_cursor_execute", drop_during_lookup)
    try:
        principal = await tenancy.authenticate(secret)
    finally:
        event.remove(engine, "before_cursor_execute", drop_during_lookup)
    assert drops, "the lookup read the key"
    assert not tenancy.is_cached(principal.key_id)
    await tenancy.authenticate(secret)
    assert tenancy.is_cached(principal.key_id)


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_cached_key_is_trusted_for_the_bound_and_then_read_again(app: App) -> None:
    # Revoked behind the cache's back (as another replica would): trusted until the
    # entry is CACHE_SECONDS old, refused from then on.
    clock = _Clock()
    tenancy = Tenancy(app.db, key_cache_seconds=CACHE_SECONDS, clock=clock)
    secret = await bootstrap_admin(app.sessions)
    principal = await tenancy.authenticate(secret)
    assert principal.admin
    async with app.sessions.begin() as session:
        await session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.secret_hash == keys.hash_secret(secret))
            .values(revoke_time=datetime.now(UTC))
        )
    clock.now += CACHE_SECONDS / 2
    assert await tenancy.authenticate(secret) == principal
    clock.now += CACHE_SECONDS / 2
    with pytest.raises(DomainError) as caught:
        await tenancy.authenticate(secret)
    assert caught.value.reason == "API_KEY_REVOKED"


async def test_expiry_is_exact_even_while_cached(app: App) -> None:
    clock = _Clock()
    tenancy = Tenancy(app.db, key_cache_seconds=60.0, clock=clock)
    secret = await bootstrap_admin(app.sessions)
    soon = datetime.now(UTC) + timedelta(seconds=0.3)
    async with app.sessions.begin() as session:
        await session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.secret_hash == keys.hash_secret(secret))
            .values(expire_time=soon)
        )
    await tenancy.authenticate(secret)  # read and cached with its expire_time
    await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)
    with pytest.raises(DomainError) as caught:
        await tenancy.authenticate(secret)
    assert caught.value.reason == "API_KEY_EXPIRED"


async def test_cache_can_be_turned_off(app: App) -> None:
    tenancy = Tenancy(app.db, key_cache_seconds=0)
    secret = await bootstrap_admin(app.sessions)
    await tenancy.authenticate(secret)
    async with app.sessions.begin() as session:
        await session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.secret_hash == keys.hash_secret(secret))
            .values(revoke_time=datetime.now(UTC))
        )
    with pytest.raises(DomainError) as caught:
        await tenancy.authenticate(secret)
    assert caught.value.reason == "API_KEY_REVOKED"
