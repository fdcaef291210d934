"""AdminService through a real server: projects, keys, revocation, and the dev project."""

from __future__ import annotations

import asyncio
import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from conftest import make_settings
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from genrpc.imagegen.v1 import admin_pb2, admin_pb2_grpc, generation_pb2, generation_pb2_grpc
from server.app import App
from server.domain import keys
from server.services.tenancy import bootstrap_admin, ensure_dev_project
from server.store.db import create_engine, session_factory
from server.store.migrate import upgrade

if TYPE_CHECKING:
    from genrpc.imagegen.v1.admin_pb2_grpc import AdminServiceAsyncStub as Stub

Metadata = tuple[tuple[str, str], ...]


def _md(secret: str) -> Metadata:
    return (("x-api-key", secret),)


def _details(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """The ErrorInfo reason and the BadRequest field names of an error."""
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return reason, fields


async def _fails(call: object, code: grpc.StatusCode) -> tuple[str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    return _details(caught.value)


@pytest.fixture
async def admin(app: App) -> Metadata:
    return _md(await bootstrap_admin(app.sessions))


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> Stub:
    return admin_pb2_grpc.AdminServiceStub(channel)


# --- projects ------------------------------------------------------------------


async def test_create_project(stub: Stub, admin: Metadata) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    project = await stub.CreateProject(
        admin_pb2.CreateProjectRequest(slug="acme", name="Acme Inc."), metadata=admin
    )
    assert uuid.UUID(project.id)
    assert (project.slug, project.name) == ("acme", "Acme Inc.")
    assert before < project.create_time.ToDatetime(UTC) < datetime.now(UTC) + timedelta(seconds=1)
    listed = await stub.ListProjects(admin_pb2.ListProjectsRequest(), metadata=admin)
    assert project in listed.projects


@pytest.mark.parametrize("name", ["", "   "])
async def test_project_name_defaults_to_slug(stub: Stub, admin: Metadata, name: str) -> None:
    project = await stub.CreateProject(
        admin_pb2.CreateProjectRequest(slug="no-name", name=name), metadata=admin
    )
    assert project.name == "no-name"


@pytest.mark.parametrize("slug", ["ab", "9lives", "a-b-c", "x" * 63, "a-"])
async def test_good_slugs(stub: Stub, admin: Metadata, slug: str) -> None:
    project = await stub.CreateProject(admin_pb2.CreateProjectRequest(slug=slug), metadata=admin)
    assert project.slug == slug


@pytest.mark.parametrize(
    "slug", ["", "a", "-ab", "Acme", "a_b", "a b", "a.b", "é-x", "x" * 64, " ab"]
)
async def test_bad_slugs(stub: Stub, admin: Metadata, slug: str) -> None:
    reason, fields = await _fails(
        stub.CreateProject(admin_pb2.CreateProjectRequest(slug=slug), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert (reason, fields) == ("VALIDATION_ERROR", ["slug"])


async def test_project_name_length(stub: Stub, admin: Metadata) -> None:
    await stub.CreateProject(
        admin_pb2.CreateProjectRequest(slug="long-ok", name="n" * 200), metadata=admin
    )
    _, fields = await _fails(
        stub.CreateProject(
            admin_pb2.CreateProjectRequest(slug="long-bad", name="n" * 201), metadata=admin
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert fields == ["name"]


async def test_bad_slug_and_name_are_reported_together(stub: Stub, admin: Metadata) -> None:
    _, fields = await _fails(
        stub.CreateProject(
            admin_pb2.CreateProjectRequest(slug="A", name="n" * 201), metadata=admin
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert sorted(fields) == ["name", "slug"]


async def test_slug_taken(stub: Stub, admin: Metadata) -> None:
    await stub.CreateProject(admin_pb2.CreateProjectRequest(slug="twice"), metadata=admin)
    reason, _ = await _fails(
        stub.CreateProject(admin_pb2.CreateProjectRequest(slug="twice"), metadata=admin),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert reason == "PROJECT_SLUG_TAKEN"
    # The dev project holds "default".
    reason, _ = await _fails(
        stub.CreateProject(admin_pb2.CreateProjectRequest(slug="default"), metadata=admin),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert reason == "PROJECT_SLUG_TAKEN"


async def test_slug_taken_by_racing_creates(stub: Stub, admin: Metadata) -> None:
    calls = [
        stub.CreateProject(admin_pb2.CreateProjectRequest(slug="race"), metadata=admin)
        for _ in range(5)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    created = [r for r in results if isinstance(r, admin_pb2.Project)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(created) == 1
    assert [e.code() for e in refused] == [grpc.StatusCode.ALREADY_EXISTS] * 4


async def test_list_projects_pages_oldest_first(stub: Stub, admin: Metadata) -> None:
    slugs = ["default"]
    for n in range(5):
        slugs.append(f"p{n}")
        await stub.CreateProject(admin_pb2.CreateProjectRequest(slug=f"p{n}"), metadata=admin)

    page = await stub.ListProjects(admin_pb2.ListProjectsRequest(), metadata=admin)
    assert [p.slug for p in page.projects] == slugs
    assert (page.total, page.limit, page.offset, page.has_more) == (6, 20, 0, False)

    page = await stub.ListProjects(admin_pb2.ListProjectsRequest(limit=2), metadata=admin)
    assert [p.slug for p in page.projects] == slugs[:2]
    assert (page.total, page.limit, page.offset, page.has_more) == (6, 2, 0, True)

    page = await stub.ListProjects(admin_pb2.ListProjectsRequest(limit=2, offset=4), metadata=admin)
    assert [p.slug for p in page.projects] == slugs[4:]
    assert (page.total, page.has_more) == (6, False)

    page = await stub.ListProjects(admin_pb2.ListProjectsRequest(offset=50), metadata=admin)
    assert (list(page.projects), page.total, page.has_more) == ([], 6, False)

    page = await stub.ListProjects(admin_pb2.ListProjectsRequest(limit=100), metadata=admin)
    assert page.limit == 100


@pytest.mark.parametrize(
    ("limit", "offset", "field"), [(-1, 0, "limit"), (101, 0, "limit"), (0, -1, "offset")]
)
async def test_list_projects_bad_paging(
    stub: Stub, admin: Metadata, limit: int, offset: int, field: str
) -> None:
    _, fields = await _fails(
        stub.ListProjects(
            admin_pb2.ListProjectsRequest(limit=limit, offset=offset), metadata=admin
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert fields == [field]


# --- keys ----------------------------------------------------------------------


async def test_create_project_key(channel: grpc.aio.Channel, stub: Stub, admin: Metadata) -> None:
    project = await stub.CreateProject(admin_pb2.CreateProjectRequest(slug="keyed"), metadata=admin)
    created = await stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(project_id=project.id, name="ci"), metadata=admin
    )
    secret, key = created.api_key, created.key
    assert keys.looks_like_key(secret)
    assert secret.startswith("igk_")
    assert not secret.startswith("igk_admin_")
    assert (key.project_id, key.name, key.admin) == (project.id, "ci", False)
    assert key.prefix == secret[:12]
    assert key.HasField("create_time")
    assert not key.HasField("expire_time")
    assert not key.HasField("revoke_time")
    assert not key.HasField("last_used_time")

    # It is a working project key: past auth, an unknown id is NOT_FOUND
    # (UNIMPLEMENTED accepted while the services are being written).
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await generation_pb2_grpc.GenerationServiceStub(channel).GetGeneration(
            generation_pb2.GetGenerationRequest(id=str(uuid.uuid4())), metadata=_md(secret)
        )
    assert caught.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED)
    # ...and not an admin key.
    await _fails(
        stub.ListProjects(admin_pb2.ListProjectsRequest(), metadata=_md(secret)),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_create_admin_key(stub: Stub, admin: Metadata) -> None:
    created = await stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(name="second admin"), metadata=admin
    )
    assert created.api_key.startswith("igk_admin_")
    assert keys.looks_like_key(created.api_key)
    assert created.key.admin
    assert created.key.project_id == ""
    assert created.key.prefix == created.api_key[:12]
    # The new admin key administers.
    await stub.ListProjects(admin_pb2.ListProjectsRequest(), metadata=_md(created.api_key))


async def test_every_key_is_different(stub: Stub, admin: Metadata) -> None:
    created = [
        await stub.CreateApiKey(admin_pb2.CreateApiKeyRequest(), metadata=admin) for _ in range(5)
    ]
    assert len({c.api_key for c in created}) == 5
    assert len({c.key.id for c in created}) == 5


@pytest.mark.parametrize("days", [1, 30, 3650])
async def test_key_expiry(stub: Stub, admin: Metadata, days: int) -> None:
    created = await stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(expire_days=days), metadata=admin
    )
    expected = datetime.now(UTC) + timedelta(days=days)
    assert abs(created.key.expire_time.ToDatetime(UTC) - expected) < timedelta(minutes=1)
    await stub.ListProjects(admin_pb2.ListProjectsRequest(), metadata=_md(created.api_key))


@pytest.mark.parametrize(
    ("request_fields", "code", "reason", "field"),
    [
        ({"project_id": "not-a-uuid"}, "INVALID_ARGUMENT", "VALIDATION_ERROR", "project_id"),
        ({"project_id": str(uuid.uuid4())}, "NOT_FOUND", "PROJECT_NOT_FOUND", None),
        ({"expire_days": -1}, "INVALID_ARGUMENT", "VALIDATION_ERROR", "expire_days"),
        ({"expire_days": 3651}, "INVALID_ARGUMENT", "VALIDATION_ERROR", "expire_days"),
        ({"name": "n" * 201}, "INVALID_ARGUMENT", "VALIDATION_ERROR", "name"),
    ],
)
async def test_create_api_key_bad_input(
    stub: Stub,
    admin: Metadata,
    request_fields: dict[str, object],
    code: str,
    reason: str,
    field: str | None,
) -> None:
    before = await stub.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=admin)
    got_reason, fields = await _fails(
        stub.CreateApiKey(admin_pb2.CreateApiKeyRequest(**request_fields), metadata=admin),  # type: ignore[arg-type]
        grpc.StatusCode[code],
    )
    assert got_reason == reason
    assert fields == ([field] if field else [])
    after = await stub.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=admin)
    assert len(after.keys) == len(before.keys)


async def test_list_api_keys(app: App, stub: Stub, admin: Metadata) -> None:
    project = await stub.CreateProject(admin_pb2.CreateProjectRequest(slug="lk"), metadata=admin)
    first = await stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(project_id=project.id, name="one"), metadata=admin
    )
    second = await stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(project_id=project.id, name="two"), metadata=admin
    )
    extra_admin = await stub.CreateApiKey(admin_pb2.CreateApiKeyRequest(), metadata=admin)

    everything = await stub.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=admin)
    # dev key, bootstrap admin key, then ours, oldest first.
    assert len(everything.keys) == 5
    assert [k.id for k in everything.keys[2:]] == [first.key.id, second.key.id, extra_admin.key.id]
    assert sum(k.admin for k in everything.keys) == 2

    mine = await stub.ListApiKeys(
        admin_pb2.ListApiKeysRequest(project_id=project.id), metadata=admin
    )
    assert [(k.id, k.name) for k in mine.keys] == [(first.key.id, "one"), (second.key.id, "two")]

    # Never the secrets: not in any field, not anywhere in the bytes on the wire.
    assert app.dev_api_key
    wire = everything.SerializeToString()
    for secret in (first.api_key, second.api_key, extra_admin.api_key, app.dev_api_key):
        assert secret.encode() not in wire
        assert keys.hash_secret(secret).encode() not in wire


async def test_list_api_keys_bad_project(stub: Stub, admin: Metadata) -> None:
    _, fields = await _fails(
        stub.ListApiKeys(admin_pb2.ListApiKeysRequest(project_id="nope"), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert fields == ["project_id"]
    reason, _ = await _fails(
        stub.ListApiKeys(
            admin_pb2.ListApiKeysRequest(project_id=str(uuid.uuid4())), metadata=admin
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert reason == "PROJECT_NOT_FOUND"


async def test_revoke_api_key(stub: Stub, admin: Metadata) -> None:
    created = await stub.CreateApiKey(admin_pb2.CreateApiKeyRequest(), metadata=admin)
    victim = _md(created.api_key)
    await stub.ListProjects(admin_pb2.ListProjectsRequest(), metadata=victim)

    revoked = await stub.RevokeApiKey(
        admin_pb2.RevokeApiKeyRequest(id=created.key.id), metadata=admin
    )
    assert revoked.id == created.key.id
    assert revoked.HasField("revoke_time")
    reason, _ = await _fails(
        stub.ListProjects(admin_pb2.ListProjectsRequest(), metadata=victim),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert reason == "API_KEY_REVOKED"

    # Revoking again is fine and keeps the first revoke time.
    await asyncio.sleep(0.01)
    again = await stub.RevokeApiKey(
        admin_pb2.RevokeApiKeyRequest(id=created.key.id), metadata=admin
    )
    assert again.revoke_time == revoked.revoke_time
    listed = await stub.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=admin)
    (row,) = [k for k in listed.keys if k.id == created.key.id]
    assert row.revoke_time == revoked.revoke_time


async def test_revoke_api_key_bad_input(stub: Stub, admin: Metadata) -> None:
    reason, _ = await _fails(
        stub.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=str(uuid.uuid4())), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
    )
    assert reason == "API_KEY_NOT_FOUND"
    for bad in ("", "42"):
        _, fields = await _fails(
            stub.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=bad), metadata=admin),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert fields == ["id"]


async def test_every_admin_rpc_needs_an_admin_key(app: App, stub: Stub) -> None:
    assert app.dev_api_key
    requests = [
        (stub.CreateProject, admin_pb2.CreateProjectRequest(slug="sneaky")),
        (stub.ListProjects, admin_pb2.ListProjectsRequest()),
        (stub.CreateApiKey, admin_pb2.CreateApiKeyRequest()),
        (stub.ListApiKeys, admin_pb2.ListApiKeysRequest()),
        (stub.RevokeApiKey, admin_pb2.RevokeApiKeyRequest(id=str(uuid.uuid4()))),
    ]
    for method, request in requests:
        reason, _ = await _fails(
            method(request, metadata=_md(app.dev_api_key)),  # type: ignore[operator]
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert reason == "ADMIN_KEY_REQUIRED"
        reason, _ = await _fails(
            method(request),  # type: ignore[operator]
            grpc.StatusCode.UNAUTHENTICATED,
        )
        assert reason == "API_KEY_MISSING"


# --- the dev project -------------------------------------------------------------


async def test_dev_project_on_first_start(app: App, stub: Stub, admin: Metadata) -> None:
    assert app.dev_api_key
    assert keys.looks_like_key(app.dev_api_key)
    assert app.dev_key_path == app.settings.data_dir / "dev-api-key"
    assert app.dev_key_path.read_text().strip() == app.dev_api_key
    assert stat.S_IMODE(app.dev_key_path.stat().st_mode) == 0o600

    (project,) = (await stub.ListProjects(admin_pb2.ListProjectsRequest(), metadata=admin)).projects
    assert (project.slug, project.name) == ("default", "Default project")
    listed = await stub.ListApiKeys(
        admin_pb2.ListApiKeysRequest(project_id=project.id), metadata=admin
    )
    (dev_key,) = listed.keys
    assert dev_key.prefix == app.dev_api_key[:12]
    assert not dev_key.admin


async def test_dev_project_only_on_first_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = App(make_settings(data))
    await first.start()
    await first.stop()
    assert first.dev_api_key
    key_file = data / "dev-api-key"
    assert key_file.read_text().strip() == first.dev_api_key
    key_file.unlink()

    second = App(make_settings(data))
    await second.start()
    try:
        assert second.dev_api_key is None
        assert not key_file.exists()
        # The first key still works.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.grpc_port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await generation_pb2_grpc.GenerationServiceStub(channel).GetGeneration(
                    generation_pb2.GetGenerationRequest(id=str(uuid.uuid4())),
                    metadata=_md(first.dev_api_key),
                )
            # Past auth (UNIMPLEMENTED accepted while the services are being written).
            assert caught.value.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.UNIMPLEMENTED,
            )
    finally:
        await second.stop()


async def test_dev_project_off(tmp_path: Path) -> None:
    app = App(make_settings(tmp_path / "data", dev_project=False))
    await app.start()
    try:
        assert app.dev_api_key is None
        assert not (tmp_path / "data" / "dev-api-key").exists()
    finally:
        await app.stop()


async def test_ensure_dev_project_is_safe_when_two_start_at_once(tmp_path: Path) -> None:
    # Two engines on one SQLite file stand for two processes starting together.
    url = f"sqlite+aiosqlite:///{tmp_path / 'race.db'}"
    engines = [create_engine(url) for _ in range(4)]
    try:
        await upgrade(engines[0])
        results = await asyncio.gather(
            *(ensure_dev_project(session_factory(engine)) for engine in engines)
        )
        assert sum(result is not None for result in results) == 1
        assert await ensure_dev_project(session_factory(engines[0])) is None
    finally:
        for engine in engines:
            await engine.dispose()


async def test_ensure_dev_project_skips_a_database_with_projects(app: App) -> None:
    # The app fixture's start already made "default"; a further start adds nothing.
    assert await ensure_dev_project(app.sessions) is None
