"""API-key authentication through a real server: who gets in, to what, and how often."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from conftest import make_settings
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy import update

from genrpc.imagegen.v1 import admin_pb2, admin_pb2_grpc, generation_pb2, generation_pb2_grpc
from server.api.auth import KeyAuthenticator
from server.app import App
from server.domain import keys
from server.domain.errors import DomainError, Status
from server.services.tenancy import bootstrap_admin
from server.store.models import ApiKeyRow

Metadata = tuple[tuple[str, str], ...]


def _md(secret: str) -> Metadata:
    return (("x-api-key", secret),)


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo detail")


def _retry_delay(error: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo detail")


async def _list_projects(channel: grpc.aio.Channel, metadata: Metadata) -> None:
    await admin_pb2_grpc.AdminServiceStub(channel).ListProjects(
        admin_pb2.ListProjectsRequest(), metadata=metadata
    )


async def _get_generation(channel: grpc.aio.Channel, metadata: Metadata) -> None:
    await generation_pb2_grpc.GenerationServiceStub(channel).GetGeneration(
        generation_pb2.GetGenerationRequest(id=str(uuid.uuid4())), metadata=metadata
    )


async def _expect(call: object, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    assert _reason(caught.value) == reason
    return caught.value


@pytest.fixture
async def admin_key(app: App) -> str:
    return await bootstrap_admin(app.sessions)


@pytest.fixture
def project_key(app: App) -> str:
    assert app.dev_api_key
    return app.dev_api_key


async def _set_key_times(app: App, secret: str, **values: datetime) -> None:
    async with app.sessions.begin() as session:
        await session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.secret_hash == keys.hash_secret(secret))
            .values(**values)
        )


# --- who gets in -------------------------------------------------------------


async def test_project_key_passes_auth(channel: grpc.aio.Channel, project_key: str) -> None:
    # An unknown id answers NOT_FOUND once the call is past authentication and
    # authorisation (which refuse with UNAUTHENTICATED / PERMISSION_DENIED).
    # UNIMPLEMENTED is accepted too while the services are being written; the
    # lead's cross-tenant tests will pin each service down.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _get_generation(channel, _md(project_key))
    assert caught.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED)


async def test_admin_key_passes_auth(channel: grpc.aio.Channel, admin_key: str) -> None:
    await _list_projects(channel, _md(admin_key))


@pytest.mark.parametrize("call", [_list_projects, _get_generation])
async def test_missing_key(channel: grpc.aio.Channel, call: object) -> None:
    for metadata in ((), _md(""), _md("   ")):
        await _expect(
            call(channel, metadata),  # type: ignore[operator]
            grpc.StatusCode.UNAUTHENTICATED,
            "API_KEY_MISSING",
        )


MALFORMED = [
    "hello",
    "igk_",
    "igk_tooshort",
    "Bearer " + "igk_" + "A" * 43,
    "igk_" + "A" * 42 + "!",
    "igk_" + "A" * 44,
    "igk_admin_" + "A" * 42,
    "igk_" + "A" * 2000,  # long, but under gRPC's own 8 KiB metadata limit
]


@pytest.mark.parametrize("secret", MALFORMED)
async def test_malformed_key(channel: grpc.aio.Channel, secret: str) -> None:
    for call in (_list_projects, _get_generation):
        error = await _expect(
            call(channel, _md(secret)), grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID"
        )
        assert secret not in (error.details() or "")


@pytest.mark.parametrize("admin", [False, True])
async def test_unknown_key(channel: grpc.aio.Channel, admin: bool) -> None:
    secret = keys.mint_key(admin=admin).secret
    assert keys.looks_like_key(secret)
    for call in (_list_projects, _get_generation):
        error = await _expect(
            call(channel, _md(secret)), grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID"
        )
        assert secret not in (error.details() or "")


async def test_expired_key(
    app: App, channel: grpc.aio.Channel, project_key: str, admin_key: str
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    await _set_key_times(app, project_key, expire_time=past)
    await _set_key_times(app, admin_key, expire_time=past)
    error = await _expect(
        _get_generation(channel, _md(project_key)),
        grpc.StatusCode.UNAUTHENTICATED,
        "API_KEY_EXPIRED",
    )
    assert project_key not in (error.details() or "")
    await _expect(
        _list_projects(channel, _md(admin_key)), grpc.StatusCode.UNAUTHENTICATED, "API_KEY_EXPIRED"
    )


async def test_key_expiring_later_still_works(
    app: App, channel: grpc.aio.Channel, admin_key: str
) -> None:
    await _set_key_times(app, admin_key, expire_time=datetime.now(UTC) + timedelta(minutes=5))
    await _list_projects(channel, _md(admin_key))


async def test_revoked_key_stops_at_once(channel: grpc.aio.Channel, admin_key: str) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    created = await stub.CreateApiKey(admin_pb2.CreateApiKeyRequest(), metadata=_md(admin_key))
    victim = created.api_key
    await _list_projects(channel, _md(victim))  # works, and would sit in any cache
    await stub.RevokeApiKey(
        admin_pb2.RevokeApiKeyRequest(id=created.key.id), metadata=_md(admin_key)
    )
    error = await _expect(
        _list_projects(channel, _md(victim)), grpc.StatusCode.UNAUTHENTICATED, "API_KEY_REVOKED"
    )
    assert victim not in (error.details() or "")
    await _list_projects(channel, _md(admin_key))  # the other admin key is untouched


async def test_revoked_project_key(app: App, channel: grpc.aio.Channel, project_key: str) -> None:
    await _set_key_times(app, project_key, revoke_time=datetime.now(UTC))
    await _expect(
        _get_generation(channel, _md(project_key)),
        grpc.StatusCode.UNAUTHENTICATED,
        "API_KEY_REVOKED",
    )


# --- to what -----------------------------------------------------------------


async def test_project_key_cannot_administer(channel: grpc.aio.Channel, project_key: str) -> None:
    await _expect(
        _list_projects(channel, _md(project_key)),
        grpc.StatusCode.PERMISSION_DENIED,
        "ADMIN_KEY_REQUIRED",
    )


async def test_admin_key_cannot_use_project_api(channel: grpc.aio.Channel, admin_key: str) -> None:
    await _expect(
        _get_generation(channel, _md(admin_key)),
        grpc.StatusCode.PERMISSION_DENIED,
        "PROJECT_KEY_REQUIRED",
    )


@pytest.mark.parametrize(
    "method",
    [
        "/some.other.v1.Service/Method",
        # The shape of a wire name mangled by an import rewrite: closed, not open.
        "/genrpc.imagegen.v1.AdminService/CreateApiKey",
        "/genrpc.imagegen.v1.GenerationService/GetGeneration",
    ],
)
async def test_methods_outside_the_api_are_closed(
    app: App, admin_key: str, project_key: str, method: str
) -> None:
    authenticator = KeyAuthenticator(app.tenancy, app.settings)
    for secret in (admin_key, project_key):
        with pytest.raises(DomainError) as caught:
            await authenticator.authenticate(method, {"x-api-key": secret}, [])
        assert caught.value.status is Status.PERMISSION_DENIED
        assert caught.value.reason == "METHOD_NOT_ALLOWED"


async def test_health_is_open(channel: grpc.aio.Channel) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="imagegen.v1.AdminService")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_is_open(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = [
        service.name async for reply in call for service in reply.list_services_response.service
    ]
    assert "imagegen.v1.AdminService" in names
    assert "imagegen.v1.GenerationService" in names


async def test_request_id_is_sent_with_the_status_on_success_and_failure(
    channel: grpc.aio.Channel, admin_key: str
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    ok = stub.ListProjects(
        admin_pb2.ListProjectsRequest(), metadata=(*_md(admin_key), ("x-request-id", "req-ok"))
    )
    await ok
    # A unary call's headers come with its status (one batch fewer than initial metadata).
    assert ("x-request-id", "req-ok") in tuple(await ok.trailing_metadata())
    assert tuple(await ok.initial_metadata()) == ()
    denied = stub.ListProjects(
        admin_pb2.ListProjectsRequest(), metadata=(("x-request-id", "req-no"),)
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await denied
    assert ("x-request-id", "req-no") in tuple(await denied.trailing_metadata())


async def test_a_stream_sends_its_request_id_before_its_first_message(
    channel: grpc.aio.Channel, auth: tuple[tuple[str, str], ...]
) -> None:
    # Streams cannot wait for the status: the headers come first, as initial metadata.
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    watch = stub.WatchGenerations(
        generation_pb2.WatchGenerationsRequest(), metadata=(*auth, ("x-request-id", "req-watch"))
    )
    assert ("x-request-id", "req-watch") in tuple(await watch.initial_metadata())
    watch.cancel()
    refused = stub.WatchGenerations(
        generation_pb2.WatchGenerationsRequest(), metadata=(("x-request-id", "req-nokey"),)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in refused:
            pass
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ("x-request-id", "req-nokey") in tuple(await refused.initial_metadata())


async def test_last_used_time_is_written_at_most_once_a_minute(
    channel: grpc.aio.Channel, admin_key: str
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    # bootstrap_admin made the key; the first call marks it used.
    first = (await stub.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=_md(admin_key))).keys
    (admin,) = [key for key in first if key.admin]
    assert admin.HasField("last_used_time")
    for _ in range(3):
        await _list_projects(channel, _md(admin_key))
    again = (await stub.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=_md(admin_key))).keys
    (admin_again,) = [key for key in again if key.admin]
    assert admin_again.last_used_time == admin.last_used_time


async def test_last_used_time_is_refreshed_after_a_minute(
    app: App, channel: grpc.aio.Channel, admin_key: str
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    long_ago = datetime.now(UTC) - timedelta(minutes=2)
    await _set_key_times(app, admin_key, last_used_time=long_ago)
    listed = (await stub.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=_md(admin_key))).keys
    (admin,) = [key for key in listed if key.admin]
    assert admin.last_used_time.ToDatetime(UTC) > long_ago + timedelta(minutes=1)


# --- how often -----------------------------------------------------------------


@pytest.fixture
async def limited_app(tmp_path: Path) -> AsyncIterator[App]:
    started = App(make_settings(tmp_path / "limited", rate_limit_per_minute=3))
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


def _budget(metadata: object) -> tuple[str | None, str | None]:
    values = dict(metadata)  # type: ignore[call-overload]
    return values.get("x-ratelimit-limit"), values.get("x-ratelimit-remaining")


async def test_rate_limit(limited_app: App) -> None:
    admin_key = await bootstrap_admin(limited_app.sessions)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited_app.grpc_port}") as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        for remaining in ("2", "1", "0"):
            call = stub.ListProjects(admin_pb2.ListProjectsRequest(), metadata=_md(admin_key))
            await call
            assert _budget(await call.trailing_metadata()) == ("3", remaining)

        call = stub.ListProjects(admin_pb2.ListProjectsRequest(), metadata=_md(admin_key))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _reason(caught.value) == "RATE_LIMITED"
        # One call per 20 s refills; a little of that has already passed.
        assert 15 < _retry_delay(caught.value) <= 20
        assert _budget(await call.trailing_metadata()) == ("3", "0")

        # The bucket is per key: the dev project's key has its own.
        assert limited_app.dev_api_key
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await _get_generation(channel, _md(limited_app.dev_api_key))
        assert other.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED)


async def test_rate_limit_counts_only_authenticated_calls(limited_app: App) -> None:
    admin_key = await bootstrap_admin(limited_app.sessions)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited_app.grpc_port}") as channel:
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _list_projects(channel, ())
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await _list_projects(channel, _md(admin_key))


async def test_rate_limit_burst(tmp_path: Path) -> None:
    app = App(make_settings(tmp_path / "burst", rate_limit_per_minute=1, rate_limit_burst=5))
    await app.start()
    try:
        admin_key = await bootstrap_admin(app.sessions)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            for _ in range(5):
                await _list_projects(channel, _md(admin_key))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _list_projects(channel, _md(admin_key))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert 55 < _retry_delay(caught.value) <= 60
    finally:
        await app.stop()


async def test_rate_limit_is_off_by_default(channel: grpc.aio.Channel, admin_key: str) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    for _ in range(30):
        call = stub.ListProjects(admin_pb2.ListProjectsRequest(), metadata=_md(admin_key))
        await call
    assert _budget(await call.trailing_metadata()) == (None, None)
