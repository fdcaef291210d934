"""Tenant isolation over every RPC of every service: another project's resources are NOT_FOUND,
admin RPCs refuse project keys, bad keys are UNAUTHENTICATED, and no key reaches the logs."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import structlog
from expect import until_terminal
from google.protobuf import duration_pb2
from sqlalchemy import update

from genrpc.imagegen.v1 import admin_pb2 as a
from genrpc.imagegen.v1 import admin_pb2_grpc, flow_pb2_grpc, generation_pb2_grpc, image_pb2_grpc
from genrpc.imagegen.v1 import flow_pb2 as f
from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import image_pb2 as i
from server.app import App
from server.domain import keys
from server.logs import configure_logging
from server.services.tenancy import bootstrap_admin
from server.store.models import ApiKeyRow


def png() -> bytes:
    import io as _io

    from PIL import Image

    out = _io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


@dataclass
class World:
    """Project A's resources, the keys of both projects and an admin key, and stubs."""

    generation: g.Generation
    image: i.Image
    flow_id: str
    a_key: str
    b_key: str
    admin_key: str
    gens: generation_pb2_grpc.GenerationServiceStub
    images: image_pb2_grpc.ImageServiceStub
    flows: flow_pb2_grpc.FlowServiceStub
    admin: admin_pb2_grpc.AdminServiceStub


@pytest.fixture
async def world(app: App, channel: grpc.aio.Channel) -> World:
    admin_key = await bootstrap_admin(app.sessions)
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    admin_md = (("x-api-key", admin_key),)
    project_b = await admin.CreateProject(
        a.CreateProjectRequest(slug="project-b"), metadata=admin_md
    )
    b_key = (
        await admin.CreateApiKey(a.CreateApiKeyRequest(project_id=project_b.id), metadata=admin_md)
    ).api_key
    a_key = app.dev_api_key or ""
    md = (("x-api-key", a_key),)
    gens = generation_pb2_grpc.GenerationServiceStub(channel)
    images = image_pb2_grpc.ImageServiceStub(channel)
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    flow_id = str(uuid.uuid4())
    image = await images.UploadImage(
        i.UploadImageRequest(content=png(), alias="@a-logo", flow_id=flow_id, flow_alias="@style"),
        metadata=md,
    )
    created = await gens.CreateGeneration(
        g.CreateGenerationRequest(prompt="a's picture", flow_id=flow_id, alias="@a-hero"),
        metadata=md,
    )
    generation = await until_terminal(gens, created.id, md)
    return World(generation, image, flow_id, a_key, b_key, admin_key, gens, images, flows, admin)


Call = Callable[[World, tuple[tuple[str, str], ...]], Awaitable[Any]]


async def drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


# Every RPC of the project API, aimed at project A's resources.
PROJECT_CALLS: dict[str, Call] = {
    "CreateGeneration(reference)": lambda w, md: w.gens.CreateGeneration(
        g.CreateGenerationRequest(prompt="x", reference_images=[w.image.id]), metadata=md
    ),
    "CreateGeneration(alias reference)": lambda w, md: w.gens.CreateGeneration(
        g.CreateGenerationRequest(prompt="x", reference_images=["@a-logo"]), metadata=md
    ),
    "CreateGeneration(flow)": lambda w, md: w.gens.CreateGeneration(
        g.CreateGenerationRequest(prompt="x", flow_id=w.flow_id), metadata=md
    ),
    "GetGeneration": lambda w, md: w.gens.GetGeneration(
        g.GetGenerationRequest(id=w.generation.id), metadata=md
    ),
    "UpdateGeneration": lambda w, md: w.gens.UpdateGeneration(
        g.UpdateGenerationRequest(id=w.generation.id, prompt="stolen"), metadata=md
    ),
    "RegenerateGeneration": lambda w, md: w.gens.RegenerateGeneration(
        g.RegenerateGenerationRequest(id=w.generation.id), metadata=md
    ),
    "DeleteGeneration": lambda w, md: w.gens.DeleteGeneration(
        g.DeleteGenerationRequest(id=w.generation.id), metadata=md
    ),
    "WatchGeneration": lambda w, md: drain(
        w.gens.WatchGeneration(g.WatchGenerationRequest(id=w.generation.id), metadata=md)
    ),
    "UploadImage(flow)": lambda w, md: w.images.UploadImage(
        i.UploadImageRequest(content=png(), flow_id=w.flow_id), metadata=md
    ),
    "GetImage(id)": lambda w, md: w.images.GetImage(
        i.GetImageRequest(id_or_alias=w.image.id), metadata=md
    ),
    "GetImage(alias)": lambda w, md: w.images.GetImage(
        i.GetImageRequest(id_or_alias="@a-logo"), metadata=md
    ),
    "ResolveAlias": lambda w, md: w.images.ResolveAlias(
        i.ResolveAliasRequest(alias="@a-logo"), metadata=md
    ),
    "ResolveAlias(flow)": lambda w, md: w.images.ResolveAlias(
        i.ResolveAliasRequest(alias="@style", flow_id=w.flow_id), metadata=md
    ),
    "UpdateImage": lambda w, md: w.images.UpdateImage(
        i.UpdateImageRequest(id_or_alias=w.image.id, focal_point=i.FocalPoint(x=0.5, y=0.5)),
        metadata=md,
    ),
    "SetImageAlias": lambda w, md: w.images.SetImageAlias(
        i.SetImageAliasRequest(id=w.image.id, alias="@mine"), metadata=md
    ),
    "DeleteImage": lambda w, md: w.images.DeleteImage(
        i.DeleteImageRequest(id=w.image.id), metadata=md
    ),
    "ReadImageContent": lambda w, md: drain(
        w.images.ReadImageContent(i.ReadImageContentRequest(id_or_alias=w.image.id), metadata=md)
    ),
    "GetImageUrl": lambda w, md: w.images.GetImageUrl(
        i.GetImageUrlRequest(id_or_alias=w.image.id, ttl=duration_pb2.Duration(seconds=60)),
        metadata=md,
    ),
    "GetFlow": lambda w, md: w.flows.GetFlow(f.GetFlowRequest(id=w.flow_id), metadata=md),
    "ListFlowGenerations": lambda w, md: w.flows.ListFlowGenerations(
        f.ListFlowGenerationsRequest(id=w.flow_id), metadata=md
    ),
    "ListFlowImages": lambda w, md: w.flows.ListFlowImages(
        f.ListFlowImagesRequest(id=w.flow_id), metadata=md
    ),
    "UpdateFlowAliases": lambda w, md: w.flows.UpdateFlowAliases(
        f.UpdateFlowAliasesRequest(id=w.flow_id, aliases={"@x": w.image.id}), metadata=md
    ),
    "DeleteFlowAlias": lambda w, md: w.flows.DeleteFlowAlias(
        f.DeleteFlowAliasRequest(id=w.flow_id, alias="@style"), metadata=md
    ),
    "RegenerateFlow": lambda w, md: w.flows.RegenerateFlow(
        f.RegenerateFlowRequest(id=w.flow_id), metadata=md
    ),
    "DeleteFlow": lambda w, md: w.flows.DeleteFlow(f.DeleteFlowRequest(id=w.flow_id), metadata=md),
}

# Listings answer with B's own (empty) world rather than NOT_FOUND.
LISTINGS: dict[str, Call] = {
    "ListGenerations": lambda w, md: w.gens.ListGenerations(
        g.ListGenerationsRequest(), metadata=md
    ),
    "ListImages": lambda w, md: w.images.ListImages(i.ListImagesRequest(), metadata=md),
    "ListFlows": lambda w, md: w.flows.ListFlows(f.ListFlowsRequest(), metadata=md),
}

ADMIN_CALLS: dict[str, Call] = {
    "CreateProject": lambda w, md: w.admin.CreateProject(
        a.CreateProjectRequest(slug="sneaky"), metadata=md
    ),
    "ListProjects": lambda w, md: w.admin.ListProjects(a.ListProjectsRequest(), metadata=md),
    "CreateApiKey": lambda w, md: w.admin.CreateApiKey(a.CreateApiKeyRequest(), metadata=md),
    "ListApiKeys": lambda w, md: w.admin.ListApiKeys(a.ListApiKeysRequest(), metadata=md),
    "RevokeApiKey": lambda w, md: w.admin.RevokeApiKey(
        a.RevokeApiKeyRequest(id=str(uuid.uuid4())), metadata=md
    ),
}
EVERY_CALL = {**PROJECT_CALLS, **LISTINGS, **ADMIN_CALLS}


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_another_projects_resources_are_not_found(app: App, world: World) -> None:
    b = (("x-api-key", world.b_key),)
    codes = {name: await code_of(call(world, b)) for name, call in PROJECT_CALLS.items()}
    wrong = {name: code for name, code in codes.items() if code != grpc.StatusCode.NOT_FOUND}
    assert not wrong, wrong
    for name, call in LISTINGS.items():
        listed = await call(world, b)
        assert listed.total == 0, name
    # Nothing of A's changed.
    a_md = (("x-api-key", world.a_key),)
    again = await world.gens.GetGeneration(
        g.GetGenerationRequest(id=world.generation.id), metadata=a_md
    )
    assert again.revision == world.generation.revision and again.prompt == world.generation.prompt
    image = await world.images.GetImage(
        i.GetImageRequest(id_or_alias=world.image.id), metadata=a_md
    )
    assert image.alias == "@a-logo"
    flow = await world.flows.GetFlow(f.GetFlowRequest(id=world.flow_id), metadata=a_md)
    assert flow.aliases["@style"] == world.image.id and "@x" not in flow.aliases


async def test_another_projects_image_cannot_enter_a_flow_of_mine(world: World) -> None:
    b = (("x-api-key", world.b_key),)
    mine = await world.gens.CreateGeneration(g.CreateGenerationRequest(prompt="b's"), metadata=b)
    assert (
        await code_of(
            world.flows.UpdateFlowAliases(
                f.UpdateFlowAliasesRequest(id=mine.flow_id, aliases={"@x": world.image.id}),
                metadata=b,
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )


async def test_admin_rpcs_refuse_project_keys(world: World) -> None:
    for key in (world.a_key, world.b_key):
        md = (("x-api-key", key),)
        codes = {name: await code_of(call(world, md)) for name, call in ADMIN_CALLS.items()}
        assert set(codes.values()) == {grpc.StatusCode.PERMISSION_DENIED}, codes


async def test_project_rpcs_refuse_admin_keys(world: World) -> None:
    md = (("x-api-key", world.admin_key),)
    codes = {
        name: await code_of(call(world, md)) for name, call in {**PROJECT_CALLS, **LISTINGS}.items()
    }
    assert set(codes.values()) == {grpc.StatusCode.PERMISSION_DENIED}, codes


async def _expire(app: App, secret: str) -> None:
    async with app.db.write.begin() as session:
        await session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.secret_hash == keys.hash_secret(secret))
            .values(expire_time=datetime.now(UTC) - timedelta(seconds=1))
        )


async def test_every_rpc_refuses_missing_malformed_expired_and_revoked_keys(
    app: App, world: World
) -> None:
    admin_md = (("x-api-key", world.admin_key),)
    project = (await world.admin.ListProjects(a.ListProjectsRequest(), metadata=admin_md)).projects[
        0
    ]
    expired = (
        await world.admin.CreateApiKey(
            a.CreateApiKeyRequest(project_id=project.id), metadata=admin_md
        )
    ).api_key
    await _expire(app, expired)
    revoked_issue = await world.admin.CreateApiKey(
        a.CreateApiKeyRequest(project_id=project.id), metadata=admin_md
    )
    await world.admin.RevokeApiKey(
        a.RevokeApiKeyRequest(id=revoked_issue.key.id), metadata=admin_md
    )
    bad_keys: dict[str, tuple[tuple[str, str], ...]] = {
        "missing": (),
        "malformed": (("x-api-key", "not-a-key"),),
        "unknown": (("x-api-key", "igk_" + "A" * 43),),
        "expired": (("x-api-key", expired),),
        "revoked": (("x-api-key", revoked_issue.api_key),),
    }
    for label, md in bad_keys.items():
        codes = {name: await code_of(call(world, md)) for name, call in EVERY_CALL.items()}
        wrong = {n: c for n, c in codes.items() if c != grpc.StatusCode.UNAUTHENTICATED}
        assert not wrong, (label, wrong)


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer)
    try:
        yield buffer
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


async def test_no_key_reaches_the_logs_of_a_run_over_every_service(
    app: App, world: World, captured_logs: io.StringIO
) -> None:
    keys_used = [world.a_key, world.b_key, world.admin_key]
    for key in [*keys_used, "igk_" + "B" * 43, "not-a-key"]:
        md = (("x-api-key", key),)
        for call in EVERY_CALL.values():
            await code_of(call(world, md))
    for call in PROJECT_CALLS.values():  # the owner's own calls, successes included
        await code_of(call(world, (("x-api-key", world.a_key),)))
    text = captured_logs.getvalue()
    assert '"event": "rpc"' in text  # the run really was logged
    for secret in keys_used:
        assert secret not in text
        assert keys.hash_secret(secret) not in text
        assert secret[12:30] not in text  # nor a telling piece of one
