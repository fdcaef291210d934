"""Aliases through a real server: grammar, reserved names, conflicts, moves and resolution order."""

from __future__ import annotations

import io
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from consistency import assert_consistent
from expect import details, expect_error, until_terminal
from PIL import Image as PILImage

from genrpc.imagegen.v1 import (
    flow_pb2,
    generation_pb2,
    generation_pb2_grpc,
    image_pb2,
    image_pb2_grpc,
)
from server.app import App

if TYPE_CHECKING:
    from genrpc.imagegen.v1.flow_pb2_grpc import FlowServiceAsyncStub as FlowStub
    from genrpc.imagegen.v1.generation_pb2_grpc import GenerationServiceAsyncStub as GenStub
    from genrpc.imagegen.v1.image_pb2_grpc import ImageServiceAsyncStub as ImageStub

Metadata = tuple[tuple[str, str], ...]
CODE = grpc.StatusCode
TECHNICAL = image_pb2.ALIAS_SCOPE_TECHNICAL
FLOW = image_pb2.ALIAS_SCOPE_FLOW
PROJECT = image_pb2.ALIAS_SCOPE_PROJECT


def picture(shade: int = 0) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (12, 12), (shade, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


async def fails(call: Awaitable[Any], code: grpc.StatusCode) -> tuple[str, list[str]]:
    """Await a call that must fail with ``code``: its ErrorInfo reason and bad fields."""
    reason, violations = details(await expect_error(call, code))
    return reason, [field for field, _ in violations]


async def upload(stub: ImageStub, auth: Metadata, **fields: Any) -> image_pb2.Image:
    fields.setdefault("content", picture())
    return await stub.UploadImage(image_pb2.UploadImageRequest(**fields), metadata=auth)


async def set_alias(
    stub: ImageStub, auth: Metadata, image_id: str, alias: str, reassign: bool = False
) -> image_pb2.Image:
    return await stub.SetImageAlias(
        image_pb2.SetImageAliasRequest(id=image_id, alias=alias, reassign=reassign), metadata=auth
    )


async def resolve(
    stub: ImageStub, auth: Metadata, alias: str, flow_id: str = ""
) -> tuple[str, int]:
    found = await stub.ResolveAlias(
        image_pb2.ResolveAliasRequest(alias=alias, flow_id=flow_id), metadata=auth
    )
    return found.image.id, found.scope


async def test_alias_grammar(images: ImageStub, flows: FlowStub, auth: Metadata) -> None:
    image = await upload(images, auth)
    for alias in ("@a", "@" + "x" * 49, "@Hero_2-b"):
        assert (await set_alias(images, auth, image.id, alias)).alias == alias
    malformed = ["hero", "@", "@a b", "@" + "x" * 50, "@héro", "@@x", "@a.b", "@a/b"]
    for alias in malformed:
        assert await fails(set_alias(images, auth, image.id, alias), CODE.INVALID_ARGUMENT) == (
            "VALIDATION_ERROR",
            ["alias"],
        ), alias
        got = await fails(upload(images, auth, alias=alias), CODE.INVALID_ARGUMENT)
        assert got == ("VALIDATION_ERROR", ["alias"]), alias
        got = await fails(upload(images, auth, flow_alias=alias), CODE.INVALID_ARGUMENT)
        assert got == ("VALIDATION_ERROR", ["flow_alias"]), alias
        got = await fails(
            flows.UpdateFlowAliases(
                flow_pb2.UpdateFlowAliasesRequest(id=image.flow_id, aliases={alias: image.id}),
                metadata=auth,
            ),
            CODE.INVALID_ARGUMENT,
        )
        assert got == ("VALIDATION_ERROR", [f"aliases[{alias[:60]}]"]), alias
    # Aliases are case-sensitive: @Hero_2-b and @hero_2-b are different names.
    other = await upload(images, auth, alias="@hero_2-b")
    assert other.alias == "@hero_2-b"


async def test_reserved_technical_aliases_are_refused(
    images: ImageStub, flows: FlowStub, auth: Metadata
) -> None:
    image = await upload(images, auth)
    for alias in ("@last", "@first", "@upload"):
        calls = [
            (set_alias(images, auth, image.id, alias), "alias"),
            (upload(images, auth, alias=alias), "alias"),
            (upload(images, auth, flow_alias=alias), "flow_alias"),
            (
                flows.UpdateFlowAliases(
                    flow_pb2.UpdateFlowAliasesRequest(id=image.flow_id, aliases={alias: image.id}),
                    metadata=auth,
                ),
                f"aliases[{alias}]",
            ),
        ]
        for call, field in calls:
            error = await expect_error(call, CODE.INVALID_ARGUMENT, "VALIDATION_ERROR")
            violations = details(error)[1]
            assert [f for f, _ in violations] == [field]
            assert "reserved" in violations[0][1]


async def test_taken_alias_conflicts_unless_reassigned(
    app: App, images: ImageStub, auth: Metadata
) -> None:
    first = await upload(images, auth, alias="@hero")
    second = await upload(images, auth)

    error = await expect_error(
        set_alias(images, auth, second.id, "@hero"), CODE.ALREADY_EXISTS, "ALIAS_CONFLICT"
    )
    assert first.id in (error.details() or "")
    still = await images.GetImage(image_pb2.GetImageRequest(id_or_alias="@hero"), metadata=auth)
    assert still.id == first.id

    # Setting the alias an image already holds is a no-op, not a conflict.
    assert (await set_alias(images, auth, first.id, "@hero")).alias == "@hero"

    moved = await set_alias(images, auth, second.id, "@hero", reassign=True)
    assert moved.alias == "@hero"
    previous = await images.GetImage(image_pb2.GetImageRequest(id_or_alias=first.id), metadata=auth)
    assert previous.alias == ""
    assert (await resolve(images, auth, "@hero")) == (second.id, PROJECT)

    cleared = await set_alias(images, auth, second.id, "")
    assert cleared.alias == ""
    await expect_error(
        images.GetImage(image_pb2.GetImageRequest(id_or_alias="@hero"), metadata=auth),
        CODE.NOT_FOUND,
        "ALIAS_NOT_FOUND",
    )
    await expect_error(
        set_alias(images, auth, str(uuid.uuid4()), "@ghost"), CODE.NOT_FOUND, "IMAGE_NOT_FOUND"
    )
    await assert_consistent(app)


async def test_upload_moves_a_project_alias(images: ImageStub, auth: Metadata) -> None:
    first = await upload(images, auth, alias="@logo", content=picture(10))
    second = await upload(images, auth, alias="@logo", content=picture(20))
    assert second.alias == "@logo"
    assert (await resolve(images, auth, "@logo")) == (second.id, PROJECT)
    previous = await images.GetImage(image_pb2.GetImageRequest(id_or_alias=first.id), metadata=auth)
    assert previous.alias == ""
    assert previous.update_time.ToDatetime() >= first.update_time.ToDatetime()


async def test_resolution_order_technical_flow_project(
    app: App, images: ImageStub, flows: FlowStub, gens: GenStub, auth: Metadata
) -> None:
    flow_id = str(uuid.uuid4())
    generated = []
    for prompt in ("a red square", "a blue circle"):
        created = await gens.CreateGeneration(
            generation_pb2.CreateGenerationRequest(prompt=prompt, flow_id=flow_id), metadata=auth
        )
        done = await until_terminal(gens, created.id, auth, timeout=15)
        assert done.status == generation_pb2.GENERATION_STATUS_SUCCESS, done.error
        generated.append(done.output_image.id)
    first_upload = await upload(images, auth, flow_id=flow_id, content=picture(1))
    last_upload = await upload(images, auth, flow_id=flow_id, content=picture(2))
    # Same name in both scopes: the flow alias wins inside the flow.
    project_holder = await upload(images, auth, flow_id="", alias="@hero")
    await flows.UpdateFlowAliases(
        flow_pb2.UpdateFlowAliasesRequest(id=flow_id, aliases={"@hero": first_upload.id}),
        metadata=auth,
    )

    assert await resolve(images, auth, "@last", flow_id) == (generated[1], TECHNICAL)
    assert await resolve(images, auth, "@first", flow_id) == (generated[0], TECHNICAL)
    assert await resolve(images, auth, "@upload", flow_id) == (last_upload.id, TECHNICAL)
    assert await resolve(images, auth, "@hero", flow_id) == (first_upload.id, FLOW)
    assert await resolve(images, auth, "@hero") == (project_holder.id, PROJECT)
    # A project alias is found from inside any flow when the flow has no such alias.
    await set_alias(images, auth, last_upload.id, "@only-project")
    assert await resolve(images, auth, "@only-project", flow_id) == (last_upload.id, PROJECT)

    # GetImage and ReadImageContent resolve the same way.
    got = await images.GetImage(
        image_pb2.GetImageRequest(id_or_alias="@last", flow_id=flow_id), metadata=auth
    )
    assert got.id == generated[1]
    request = image_pb2.ReadImageContentRequest(id_or_alias="@upload", flow_id=flow_id)
    content = b"".join([c.data async for c in images.ReadImageContent(request, metadata=auth)])
    assert content == picture(2)

    # A flow without generated images has no @last.
    lone = await upload(images, auth, content=picture(3))
    assert await resolve(images, auth, "@upload", lone.flow_id) == (lone.id, TECHNICAL)
    empty_flow = lone.flow_id
    await expect_error(
        images.ResolveAlias(
            image_pb2.ResolveAliasRequest(alias="@last", flow_id=empty_flow), metadata=auth
        ),
        CODE.NOT_FOUND,
        "ALIAS_NOT_FOUND",
    )
    await assert_consistent(app)


async def test_resolution_errors(images: ImageStub, auth: Metadata) -> None:
    image = await upload(images, auth, alias="@known")
    for alias in ("@last", "@first", "@upload"):
        calls = [
            images.ResolveAlias(image_pb2.ResolveAliasRequest(alias=alias), metadata=auth),
            images.GetImage(image_pb2.GetImageRequest(id_or_alias=alias), metadata=auth),
            images.UpdateImage(image_pb2.UpdateImageRequest(id_or_alias=alias), metadata=auth),
            images.GetImageUrl(image_pb2.GetImageUrlRequest(id_or_alias=alias), metadata=auth),
        ]
        for call in calls:
            reason, fields = await fails(call, CODE.INVALID_ARGUMENT)
            assert (reason, fields) == ("FLOW_CONTEXT_REQUIRED", ["flow_id"])
        request = image_pb2.ReadImageContentRequest(id_or_alias=alias)
        stream = images.ReadImageContent(request, metadata=auth)
        reason, fields = await fails(_drain(stream), CODE.INVALID_ARGUMENT)
        assert (reason, fields) == ("FLOW_CONTEXT_REQUIRED", ["flow_id"])

    await expect_error(
        images.ResolveAlias(image_pb2.ResolveAliasRequest(alias="@unknown"), metadata=auth),
        CODE.NOT_FOUND,
        "ALIAS_NOT_FOUND",
    )
    # An unknown flow in context is named as such.
    await expect_error(
        images.ResolveAlias(
            image_pb2.ResolveAliasRequest(alias="@known", flow_id=str(uuid.uuid4())),
            metadata=auth,
        ),
        CODE.NOT_FOUND,
        "FLOW_NOT_FOUND",
    )
    bad = [
        image_pb2.ResolveAliasRequest(alias=""),
        image_pb2.ResolveAliasRequest(alias="known"),
        image_pb2.ResolveAliasRequest(alias=image.id),  # an ID is not an alias
        image_pb2.ResolveAliasRequest(alias="@known", flow_id="not-a-flow"),
    ]
    for request in bad:
        reason, fields = await fails(
            images.ResolveAlias(request, metadata=auth), CODE.INVALID_ARGUMENT
        )
        assert reason == "VALIDATION_ERROR" and len(fields) == 1, request


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def test_prompt_mentions_merge_after_explicit_references(app, channel, auth) -> None:
    """Explicit references first, then resolvable @mentions; duplicates once; at most 3."""
    from expect import details

    from genrpc.imagegen.v1 import generation_pb2 as gen
    from genrpc.imagegen.v1 import image_pb2 as img

    images = image_pb2_grpc.ImageServiceStub(channel)
    gens = generation_pb2_grpc.GenerationServiceStub(channel)
    ids = {}
    for name, shade in (("@ma", 10), ("@mb", 90), ("@mc", 170), ("@md", 250)):
        uploaded = await images.UploadImage(
            img.UploadImageRequest(content=picture(shade), alias=name), metadata=auth
        )
        ids[name] = uploaded.id
    created = await gens.CreateGeneration(
        gen.CreateGenerationRequest(
            prompt="@ma beside @mb, drawn by @nobody", reference_images=["@mb"]
        ),
        metadata=auth,
    )
    assert [(r.image_id, r.alias) for r in created.reference_images] == [
        (ids["@mb"], "@mb"),
        (ids["@ma"], "@ma"),
    ]
    assert list(created.requested_references) == ["@mb"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gens.CreateGeneration(
            gen.CreateGenerationRequest(prompt="with @mc and @md", reference_images=["@ma", "@mb"]),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[0] == "TOO_MANY_REFERENCES"
