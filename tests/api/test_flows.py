"""FlowService through a real server: chains, listing, aliases, regenerate and every delete path."""

from __future__ import annotations

import io
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import grpc
from consistency import assert_consistent
from expect import details, expect_error, until_terminal
from PIL import Image as PILImage

from genrpc.imagegen.v1 import (
    flow_pb2,
    generation_pb2,
    image_pb2,
)
from server.app import App

if TYPE_CHECKING:
    from genrpc.imagegen.v1.flow_pb2_grpc import FlowServiceAsyncStub as FlowStub
    from genrpc.imagegen.v1.generation_pb2_grpc import GenerationServiceAsyncStub as GenStub
    from genrpc.imagegen.v1.image_pb2_grpc import ImageServiceAsyncStub as ImageStub

Metadata = tuple[tuple[str, str], ...]
CODE = grpc.StatusCode
SUCCESS = generation_pb2.GENERATION_STATUS_SUCCESS


def picture(shade: int = 0) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (12, 12), (0, shade, 0)).save(buffer, "PNG")
    return buffer.getvalue()


async def fails(call: Awaitable[Any], code: grpc.StatusCode) -> tuple[str, list[str], str]:
    """Await a call that must fail with ``code``: its ErrorInfo reason, bad fields, message."""
    error = await expect_error(call, code)
    reason, violations = details(error)
    return reason, [field for field, _ in violations], error.details() or ""


async def upload(stub: ImageStub, auth: Metadata, **fields: Any) -> image_pb2.Image:
    fields.setdefault("content", picture())
    return await stub.UploadImage(image_pb2.UploadImageRequest(**fields), metadata=auth)


async def generate(gens: GenStub, auth: Metadata, **fields: Any) -> generation_pb2.Generation:
    """Create a generation and wait (bounded) until it succeeds."""
    created = await gens.CreateGeneration(
        generation_pb2.CreateGenerationRequest(**fields), metadata=auth
    )
    done = await until_terminal(gens, created.id, auth, timeout=15)
    assert done.status == SUCCESS, done.error
    return done


async def get_flow(flows: FlowStub, auth: Metadata, flow_id: str) -> flow_pb2.Flow:
    return await flows.GetFlow(flow_pb2.GetFlowRequest(id=flow_id), metadata=auth)


async def stored_keys(app: App) -> set[str]:
    return {info.key async for info in app.blobs.list("")}


# --- the chain of the issue ---------------------------------------------------------


async def test_chain_references_last_and_an_uploaded_alias(
    app: App, images: ImageStub, flows: FlowStub, gens: GenStub, auth: Metadata
) -> None:
    hero = await upload(images, auth, alias="@hero", flow_id="")
    first = await gens.CreateGeneration(
        generation_pb2.CreateGenerationRequest(prompt="a castle on a hill"), metadata=auth
    )
    flow_id = first.flow_id
    watch = gens.WatchGeneration(
        generation_pb2.WatchGenerationRequest(id=first.id), metadata=auth, timeout=15
    )
    statuses = [event.generation.status async for event in watch]
    assert statuses[-1] == SUCCESS  # the stream ends after the terminal state
    first_done = await gens.GetGeneration(
        generation_pb2.GetGenerationRequest(id=first.id), metadata=auth
    )

    second = await generate(
        gens,
        auth,
        prompt="the same castle at night",
        flow_id=flow_id,
        reference_images=["@last", "@hero"],
    )
    assert [(r.image_id, r.alias) for r in second.reference_images] == [
        (first_done.output_image.id, "@last"),
        (hero.id, "@hero"),
    ]
    assert second.flow_id == flow_id

    flow = await get_flow(flows, auth, flow_id)
    assert (flow.generation_count, flow.image_count) == (2, 2)
    listed = await flows.ListFlowGenerations(
        flow_pb2.ListFlowGenerationsRequest(id=flow_id), metadata=auth
    )
    assert [g.id for g in listed.generations] == [second.id, first.id]
    flow_images = await flows.ListFlowImages(
        flow_pb2.ListFlowImagesRequest(id=flow_id), metadata=auth
    )
    assert [i.id for i in flow_images.images] == [
        second.output_image.id,
        first_done.output_image.id,
    ]
    last = await images.ResolveAlias(
        image_pb2.ResolveAliasRequest(alias="@last", flow_id=flow_id), metadata=auth
    )
    assert last.image.id == second.output_image.id
    await assert_consistent(app)


# --- list and get ------------------------------------------------------------------------


async def test_list_and_get_flows(
    images: ImageStub, flows: FlowStub, gens: GenStub, auth: Metadata
) -> None:
    made = [(await upload(images, auth, content=picture(i))).flow_id for i in range(3)]
    done = await generate(gens, auth, prompt="a kite", flow_id=made[0], flow_alias="@kite")

    everything = await flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=auth)
    assert [f.id for f in everything.flows] == list(reversed(made))  # newest first
    assert (everything.total, everything.has_more, everything.limit) == (3, False, 20)
    oldest = everything.flows[-1]
    assert (oldest.generation_count, oldest.image_count) == (1, 2)
    assert dict(oldest.aliases) == {"@kite": done.output_image.id}
    assert oldest == await get_flow(flows, auth, made[0])

    seen: list[str] = []
    token = ""
    while True:
        page = await flows.ListFlows(
            flow_pb2.ListFlowsRequest(limit=2, page_token=token), metadata=auth
        )
        seen.extend(f.id for f in page.flows)
        token = page.next_page_token
        assert page.has_more == bool(token)
        if not token:
            break
    assert seen == list(reversed(made))
    by_offset = await flows.ListFlows(flow_pb2.ListFlowsRequest(limit=2, offset=2), metadata=auth)
    assert [f.id for f in by_offset.flows] == [made[0]]

    paged = await flows.ListFlowImages(
        flow_pb2.ListFlowImagesRequest(id=made[0], limit=1), metadata=auth
    )
    assert (paged.total, paged.has_more, len(paged.images)) == (2, True, 1)
    assert paged.images[0].id == done.output_image.id
    paged = await flows.ListFlowImages(
        flow_pb2.ListFlowImagesRequest(id=made[0], limit=1, offset=1), metadata=auth
    )
    assert (paged.has_more, paged.images[0].source) == (False, image_pb2.IMAGE_SOURCE_UPLOADED)

    bad = [
        (flow_pb2.ListFlowsRequest(limit=101), "VALIDATION_ERROR", ["limit"]),
        (flow_pb2.ListFlowsRequest(page_token="%%%"), "INVALID_PAGE_TOKEN", ["page_token"]),
        (flow_pb2.ListFlowsRequest(page_token="eyJ0IjoxfQ"), "INVALID_PAGE_TOKEN", ["page_token"]),
    ]
    for request, reason, fields in bad:
        got = await fails(flows.ListFlows(request, metadata=auth), CODE.INVALID_ARGUMENT)
        assert got[:2] == (reason, fields), request
    got = await fails(
        flows.ListFlowGenerations(
            flow_pb2.ListFlowGenerationsRequest(id=made[0], limit=101), metadata=auth
        ),
        CODE.INVALID_ARGUMENT,
    )
    assert got[:2] == ("VALIDATION_ERROR", ["limit"])


# --- aliases -------------------------------------------------------------------------------


async def test_update_and_delete_flow_aliases(
    app: App, images: ImageStub, flows: FlowStub, auth: Metadata, other: Metadata
) -> None:
    a = await upload(images, auth, content=picture(1))
    b = await upload(images, auth, content=picture(2), flow_id="")
    flow_id = a.flow_id

    merged = await flows.UpdateFlowAliases(
        flow_pb2.UpdateFlowAliasesRequest(id=flow_id, aliases={"@a": a.id}), metadata=auth
    )
    assert dict(merged.aliases) == {"@a": a.id}
    # Merged, not replaced; an existing alias repoints. Any image of the project will do.
    merged = await flows.UpdateFlowAliases(
        flow_pb2.UpdateFlowAliasesRequest(id=flow_id, aliases={"@b": b.id, "@a": b.id}),
        metadata=auth,
    )
    assert dict(merged.aliases) == {"@a": b.id, "@b": b.id}

    missing = str(uuid.uuid4())
    reason, _, message = await fails(
        flows.UpdateFlowAliases(
            flow_pb2.UpdateFlowAliasesRequest(id=flow_id, aliases={"@c": a.id, "@d": missing}),
            metadata=auth,
        ),
        CODE.NOT_FOUND,
    )
    assert reason == "IMAGE_NOT_FOUND" and missing in message
    assert dict((await get_flow(flows, auth, flow_id)).aliases) == {"@a": b.id, "@b": b.id}
    theirs = await upload(images, other)
    reason, _, _ = await fails(
        flows.UpdateFlowAliases(
            flow_pb2.UpdateFlowAliasesRequest(id=flow_id, aliases={"@t": theirs.id}),
            metadata=auth,
        ),
        CODE.NOT_FOUND,
    )
    assert reason == "IMAGE_NOT_FOUND"
    reason, fields, _ = await fails(
        flows.UpdateFlowAliases(
            flow_pb2.UpdateFlowAliasesRequest(id=flow_id, aliases={"@x": "image-1"}),
            metadata=auth,
        ),
        CODE.INVALID_ARGUMENT,
    )
    assert (reason, fields) == ("VALIDATION_ERROR", ["aliases[@x]"])

    removed = await flows.DeleteFlowAlias(
        flow_pb2.DeleteFlowAliasRequest(id=flow_id, alias="@a"), metadata=auth
    )
    assert dict(removed.aliases) == {"@b": b.id}
    reason, _, _ = await fails(
        flows.DeleteFlowAlias(
            flow_pb2.DeleteFlowAliasRequest(id=flow_id, alias="@a"), metadata=auth
        ),
        CODE.NOT_FOUND,
    )
    assert reason == "FLOW_ALIAS_NOT_FOUND"
    for alias in ("", "a", "@last"):
        reason, fields, _ = await fails(
            flows.DeleteFlowAlias(
                flow_pb2.DeleteFlowAliasRequest(id=flow_id, alias=alias), metadata=auth
            ),
            CODE.INVALID_ARGUMENT,
        )
        assert (reason, fields) == ("VALIDATION_ERROR", ["alias"]), alias
    # The image stays; only the map entry went.
    await images.GetImage(image_pb2.GetImageRequest(id_or_alias=a.id), metadata=auth)
    await assert_consistent(app)


# --- regenerate ------------------------------------------------------------------------------


async def test_regenerate_flow_runs_the_latest_generation(
    app: App, images: ImageStub, flows: FlowStub, gens: GenStub, auth: Metadata
) -> None:
    first = await generate(gens, auth, prompt="a boat")
    latest = await generate(gens, auth, prompt="a boat at dawn", flow_id=first.flow_id)
    again = await flows.RegenerateFlow(
        flow_pb2.RegenerateFlowRequest(id=first.flow_id), metadata=auth
    )
    assert again.id == latest.id
    assert again.status == generation_pb2.GENERATION_STATUS_PENDING
    done = await until_terminal(gens, latest.id, auth, timeout=15)
    assert done.status == SUCCESS
    assert done.output_image.id == latest.output_image.id  # same image, new content
    assert done.output_image.etag != latest.output_image.etag
    untouched = await gens.GetGeneration(
        generation_pb2.GetGenerationRequest(id=first.id), metadata=auth
    )
    assert untouched.revision == first.revision

    uploads_only = (await upload(images, auth)).flow_id
    reason, _, _ = await fails(
        flows.RegenerateFlow(flow_pb2.RegenerateFlowRequest(id=uploads_only), metadata=auth),
        CODE.FAILED_PRECONDITION,
    )
    assert reason == "FLOW_HAS_NO_GENERATIONS"
    await assert_consistent(app)


# --- delete paths --------------------------------------------------------------------------


async def test_delete_generation_without_a_project_alias_deletes_its_image(
    app: App, images: ImageStub, gens: GenStub, auth: Metadata
) -> None:
    done = await generate(gens, auth, prompt="a pear", flow_alias="@pear")
    deleted = await gens.DeleteGeneration(
        generation_pb2.DeleteGenerationRequest(id=done.id), metadata=auth
    )
    assert deleted.image_deleted
    reason, _, _ = await fails(
        images.GetImage(image_pb2.GetImageRequest(id_or_alias=done.output_image.id), metadata=auth),
        CODE.NOT_FOUND,
    )
    assert reason == "IMAGE_NOT_FOUND"
    assert await stored_keys(app) == set()
    await assert_consistent(app)


async def test_delete_generation_keeps_an_image_with_a_project_alias(
    app: App, images: ImageStub, flows: FlowStub, gens: GenStub, auth: Metadata
) -> None:
    done = await generate(gens, auth, prompt="a plum", alias="@plum", flow_alias="@p")
    deleted = await gens.DeleteGeneration(
        generation_pb2.DeleteGenerationRequest(id=done.id), metadata=auth
    )
    assert not deleted.image_deleted
    kept = await images.GetImage(image_pb2.GetImageRequest(id_or_alias="@plum"), metadata=auth)
    assert kept.id == done.output_image.id
    assert not kept.HasField("generation_id")
    content = b"".join(
        [
            chunk.data
            async for chunk in images.ReadImageContent(
                image_pb2.ReadImageContentRequest(id_or_alias="@plum"), metadata=auth
            )
        ]
    )
    assert len(content) == kept.file_size
    assert dict((await get_flow(flows, auth, done.flow_id)).aliases) == {"@p": kept.id}
    await assert_consistent(app)


async def test_delete_flow(
    app: App, images: ImageStub, flows: FlowStub, gens: GenStub, auth: Metadata
) -> None:
    kept_gen = await generate(gens, auth, prompt="a lamp", alias="@keep")
    flow_id = kept_gen.flow_id
    plain_gen = await generate(gens, auth, prompt="a chair", flow_id=flow_id)
    plain_upload = await upload(images, auth, flow_id=flow_id, flow_alias="@u", content=picture(1))
    aliased_upload = await upload(images, auth, flow_id=flow_id, alias="@v", content=picture(2))
    outside = await upload(images, auth, content=picture(3))
    # A generation moved to another flow takes its output image along: deleting
    # the old flow leaves both alone.
    moved = await generate(gens, auth, prompt="a table", flow_id=flow_id)
    await gens.UpdateGeneration(
        generation_pb2.UpdateGenerationRequest(id=moved.id, flow_id=outside.flow_id),
        metadata=auth,
    )
    await flows.UpdateFlowAliases(
        flow_pb2.UpdateFlowAliasesRequest(
            id=flow_id, aliases={"@outside": outside.id, "@chair": plain_gen.output_image.id}
        ),
        metadata=auth,
    )

    deleted = await flows.DeleteFlow(flow_pb2.DeleteFlowRequest(id=flow_id), metadata=auth)
    assert (deleted.id, deleted.generations_deleted, deleted.images_deleted) == (flow_id, 2, 2)

    for call in (
        flows.GetFlow(flow_pb2.GetFlowRequest(id=flow_id), metadata=auth),
        flows.DeleteFlow(flow_pb2.DeleteFlowRequest(id=flow_id), metadata=auth),
    ):
        assert (await fails(call, CODE.NOT_FOUND))[0] == "FLOW_NOT_FOUND"
    for generation_id in (kept_gen.id, plain_gen.id):
        reason, _, _ = await fails(
            gens.GetGeneration(
                generation_pb2.GetGenerationRequest(id=generation_id), metadata=auth
            ),
            CODE.NOT_FOUND,
        )
        assert reason == "GENERATION_NOT_FOUND"
    for gone in (plain_gen.output_image.id, plain_upload.id):
        reason, _, _ = await fails(
            images.GetImage(image_pb2.GetImageRequest(id_or_alias=gone), metadata=auth),
            CODE.NOT_FOUND,
        )
        assert reason == "IMAGE_NOT_FOUND"
    # Aliased images stay, unlinked from the flow (and the kept output from its generation).
    for alias, image_id in (("@keep", kept_gen.output_image.id), ("@v", aliased_upload.id)):
        image = await images.GetImage(image_pb2.GetImageRequest(id_or_alias=alias), metadata=auth)
        assert image.id == image_id
        assert not image.HasField("flow_id") and not image.HasField("generation_id")
    still = await gens.GetGeneration(
        generation_pb2.GetGenerationRequest(id=moved.id), metadata=auth
    )
    assert still.output_image.id == moved.output_image.id
    assert still.output_image.flow_id == still.flow_id == outside.flow_id
    assert (
        await images.GetImage(image_pb2.GetImageRequest(id_or_alias=outside.id), metadata=auth)
    ).flow_id == outside.flow_id
    assert len(await stored_keys(app)) == 4  # @keep, @v, the moved output, outside
    await assert_consistent(app)


async def test_delete_empty_flow(
    app: App, images: ImageStub, flows: FlowStub, auth: Metadata
) -> None:
    flow_id = str(uuid.uuid4())
    image = await upload(images, auth, flow_id=flow_id)
    await images.DeleteImage(image_pb2.DeleteImageRequest(id=image.id), metadata=auth)
    deleted = await flows.DeleteFlow(flow_pb2.DeleteFlowRequest(id=flow_id), metadata=auth)
    assert (deleted.generations_deleted, deleted.images_deleted) == (0, 0)
    await assert_consistent(app)


# --- unknown, malformed and other projects' flows --------------------------------------------


def flow_calls(flows: FlowStub, flow_id: str, auth: Metadata) -> list[Awaitable[Any]]:
    return [
        flows.GetFlow(flow_pb2.GetFlowRequest(id=flow_id), metadata=auth),
        flows.ListFlowGenerations(flow_pb2.ListFlowGenerationsRequest(id=flow_id), metadata=auth),
        flows.ListFlowImages(flow_pb2.ListFlowImagesRequest(id=flow_id), metadata=auth),
        flows.UpdateFlowAliases(
            flow_pb2.UpdateFlowAliasesRequest(id=flow_id, aliases={}), metadata=auth
        ),
        flows.DeleteFlowAlias(
            flow_pb2.DeleteFlowAliasRequest(id=flow_id, alias="@a"), metadata=auth
        ),
        flows.RegenerateFlow(flow_pb2.RegenerateFlowRequest(id=flow_id), metadata=auth),
        flows.DeleteFlow(flow_pb2.DeleteFlowRequest(id=flow_id), metadata=auth),
    ]


async def test_unknown_and_malformed_flows(flows: FlowStub, auth: Metadata) -> None:
    for call in flow_calls(flows, str(uuid.uuid4()), auth):
        reason, _, _ = await fails(call, CODE.NOT_FOUND)
        assert reason == "FLOW_NOT_FOUND"
    for bad_id in ("", "flow-1", "0123"):
        for call in flow_calls(flows, bad_id, auth):
            reason, fields, _ = await fails(call, CODE.INVALID_ARGUMENT)
            assert (reason, fields) == ("VALIDATION_ERROR", ["id"]), bad_id


async def test_another_projects_flow_is_not_found(
    app: App, images: ImageStub, flows: FlowStub, auth: Metadata, other: Metadata
) -> None:
    mine = await upload(images, auth, flow_alias="@mine")
    for call in flow_calls(flows, mine.flow_id, other):
        reason, _, _ = await fails(call, CODE.NOT_FOUND)
        assert reason == "FLOW_NOT_FOUND"
    listed = await flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=other)
    assert listed.total == 0
    reason, _, _ = await fails(
        images.ResolveAlias(
            image_pb2.ResolveAliasRequest(alias="@mine", flow_id=mine.flow_id), metadata=other
        ),
        CODE.NOT_FOUND,
    )
    assert reason == "FLOW_NOT_FOUND"
    # Still intact for its owner.
    assert dict((await get_flow(flows, auth, mine.flow_id)).aliases) == {"@mine": mine.id}
    await assert_consistent(app)
