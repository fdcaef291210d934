"""ImageService through a real server: upload, read back, list, update, delete, presign, errors."""

from __future__ import annotations

import asyncio
import io
import math
import os
import urllib.request
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
from consistency import assert_consistent
from expect import details, expect_error, until_terminal
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2
from PIL import Image as PILImage
from sqlalchemy import func, select

from genrpc.imagegen.v1 import (
    flow_pb2,
    generation_pb2,
    image_pb2,
)
from server.app import App
from server.store.models import FlowAliasRow, GenerationReferenceRow, ImageRow

if TYPE_CHECKING:
    from genrpc.imagegen.v1.flow_pb2_grpc import FlowServiceAsyncStub as FlowStub
    from genrpc.imagegen.v1.generation_pb2_grpc import GenerationServiceAsyncStub as GenStub
    from genrpc.imagegen.v1.image_pb2_grpc import ImageServiceAsyncStub as ImageStub

Metadata = tuple[tuple[str, str], ...]
CODE = grpc.StatusCode
CHUNK = 64 * 1024


# --- helpers -----------------------------------------------------------------


def picture(fmt: str = "PNG", size: tuple[int, int] = (256, 256)) -> bytes:
    """A noise picture: it barely compresses, so a 256×256 PNG is about 190 KiB."""
    buffer = io.BytesIO()
    PILImage.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buffer, fmt)
    return buffer.getvalue()


async def fails(call: Awaitable[Any], code: grpc.StatusCode) -> tuple[str, list[str], str]:
    """Await a call that must fail with ``code``: its ErrorInfo reason, bad fields, message."""
    error = await expect_error(call, code)
    reason, violations = details(error)
    return reason, [field for field, _ in violations], error.details() or ""


async def read_all(
    stub: ImageStub, auth: Metadata, id_or_alias: str, flow_id: str = ""
) -> list[image_pb2.ImageChunk]:
    request = image_pb2.ReadImageContentRequest(id_or_alias=id_or_alias, flow_id=flow_id)
    return [chunk async for chunk in stub.ReadImageContent(request, metadata=auth)]


async def wait_success(gens: GenStub, auth: Metadata, generation_id: str) -> Any:
    done = await until_terminal(gens, generation_id, auth, timeout=15)
    assert done.status == generation_pb2.GENERATION_STATUS_SUCCESS, done.error
    return done


async def upload(stub: ImageStub, auth: Metadata, **fields: Any) -> image_pb2.Image:
    fields.setdefault("content", picture(size=(16, 16)))
    return await stub.UploadImage(image_pb2.UploadImageRequest(**fields), metadata=auth)


async def stored_keys(app: App) -> set[str]:
    return {info.key async for info in app.blobs.list("")}


# --- upload and read back ------------------------------------------------------


async def test_upload_reads_back_in_chunks(app: App, images: ImageStub, auth: Metadata) -> None:
    payload = picture()
    assert len(payload) > 2 * CHUNK
    meta = struct_pb2.Struct()
    meta.update({"origin": "test"})
    image = await upload(images, auth, content=payload, alias="@hero", meta=meta)

    assert uuid.UUID(image.id)
    assert image.source == image_pb2.IMAGE_SOURCE_UPLOADED
    assert (image.mime_type, image.width, image.height) == ("image/png", 256, 256)
    assert image.file_size == len(payload)
    assert image.alias == "@hero"
    assert image.HasField("flow_id")  # flow_id omitted: a flow was minted
    assert not image.HasField("generation_id")
    assert image.url.endswith(f"/cdn/default/img/{image.id}")
    assert dict(image.meta) == {"origin": "test"}
    key = f"projects/{image.project_id}/uploads/{image.id}/v1.png"
    assert await stored_keys(app) == {key}

    chunks = await read_all(images, auth, image.id)
    assert len(chunks) == math.ceil(len(payload) / CHUNK)
    assert all(len(c.data) == CHUNK for c in chunks[:-1])
    assert 0 < len(chunks[-1].data) <= CHUNK
    assert (chunks[0].mime_type, chunks[0].total_size) == ("image/png", len(payload))
    assert all(c.mime_type == "" and c.total_size == 0 for c in chunks[1:])
    assert b"".join(c.data for c in chunks) == payload
    # By alias too.
    assert b"".join(c.data for c in await read_all(images, auth, "@hero")) == payload
    await assert_consistent(app)


async def test_format_comes_from_the_bytes(app: App, images: ImageStub, auth: Metadata) -> None:
    cases = [
        ("JPEG", "", "image/jpeg", "jpg"),
        ("JPEG", "IMAGE/JPG", "image/jpeg", "jpg"),
        ("WEBP", "image/webp", "image/webp", "webp"),
        ("PNG", "image/png; charset=binary", "image/png", "png"),
    ]
    keys = set()
    for fmt, claimed, mime, extension in cases:
        payload = picture(fmt, (40, 30))
        image = await upload(images, auth, content=payload, mime_type=claimed)
        assert (image.mime_type, image.width, image.height) == (mime, 40, 30), claimed
        keys.add(f"projects/{image.project_id}/uploads/{image.id}/v1.{extension}")
        assert b"".join(c.data for c in await read_all(images, auth, image.id)) == payload
    assert await stored_keys(app) == keys


async def test_upload_flow_states(images: ImageStub, flows: FlowStub, auth: Metadata) -> None:
    minted = await upload(images, auth)
    assert minted.HasField("flow_id")
    flow = await flows.GetFlow(flow_pb2.GetFlowRequest(id=minted.flow_id), metadata=auth)
    assert flow.image_count == 1

    none = await upload(images, auth, flow_id="")
    assert not none.HasField("flow_id")

    given = str(uuid.uuid4())
    into = await upload(images, auth, flow_id=given, flow_alias="@cover")
    assert into.flow_id == given
    flow = await flows.GetFlow(flow_pb2.GetFlowRequest(id=given), metadata=auth)
    assert dict(flow.aliases) == {"@cover": into.id}

    reason, fields, _ = await fails(
        upload(images, auth, flow_id="", flow_alias="@cover"), CODE.INVALID_ARGUMENT
    )
    assert (reason, fields) == ("VALIDATION_ERROR", ["flow_alias"])
    reason, fields, _ = await fails(upload(images, auth, flow_id="nope"), CODE.INVALID_ARGUMENT)
    assert (reason, fields) == ("VALIDATION_ERROR", ["flow_id"])


async def test_upload_is_idempotent(app: App, images: ImageStub, auth: Metadata) -> None:
    payload = picture(size=(8, 8))
    first = await upload(images, auth, content=payload, request_id="req-1", flow_id="")
    again = await upload(images, auth, content=payload, request_id="req-1", flow_id="")
    assert again.id == first.id
    assert len(await stored_keys(app)) == 1
    reason, _, _ = await fails(
        upload(images, auth, content=picture(size=(9, 9)), request_id="req-1", flow_id=""),
        CODE.FAILED_PRECONDITION,
    )
    assert reason == "REQUEST_ID_REUSED"
    listed = await images.ListImages(image_pb2.ListImagesRequest(), metadata=auth)
    assert listed.total == 1
    await assert_consistent(app)


def _bomb() -> bytes:
    # 64 megapixels of one colour compress to a few KiB.
    buffer = io.BytesIO()
    PILImage.new("1", (8000, 8000)).save(buffer, "PNG")
    return buffer.getvalue()


def _flipped_middle(payload: bytes) -> bytes:
    middle = len(payload) // 2
    return (
        payload[:middle]
        + bytes(b ^ 0xFF for b in payload[middle : middle + 64])
        + payload[middle + 64 :]
    )


BAD_UPLOADS = [
    # (name, content, claimed mime type, reason, field)
    ("empty", b"", "", "VALIDATION_ERROR", "content"),
    ("oversize", b"\x89PNG" + bytes(5 * 1024 * 1024), "", "IMAGE_TOO_LARGE", "content"),
    ("garbage", os.urandom(4096), "", "UNSUPPORTED_IMAGE", "content"),
    ("truncated", picture()[:50_000], "", "UNSUPPORTED_IMAGE", "content"),
    ("corrupt", _flipped_middle(picture()), "", "UNSUPPORTED_IMAGE", "content"),
    ("gif", picture("GIF", (32, 32)), "image/gif", "UNSUPPORTED_IMAGE", "content"),
    ("bmp", picture("BMP", (32, 32)), "", "UNSUPPORTED_IMAGE", "content"),
    ("bomb", _bomb(), "", "IMAGE_TOO_LARGE", "content"),
    ("mismatch", picture("PNG", (32, 32)), "image/jpeg", "MIME_TYPE_MISMATCH", "mime_type"),
    (
        "nonsense type",
        picture("PNG", (32, 32)),
        "text/plain",
        "MIME_TYPE_MISMATCH",
        "mime_type",
    ),
]


async def test_bad_uploads_are_refused(app: App, images: ImageStub, auth: Metadata) -> None:
    for name, content, claimed, reason, field in BAD_UPLOADS:
        got, fields, message = await fails(
            upload(images, auth, content=content, mime_type=claimed), CODE.INVALID_ARGUMENT
        )
        assert (got, fields) == (reason, [field]), (name, message)
        if name in ("gif", "bmp"):
            assert name.upper() in message, message
    # Nothing was stored for any of them.
    assert await stored_keys(app) == set()
    await assert_consistent(app)


# --- get, list, update ---------------------------------------------------------


async def test_get_by_id_and_alias(images: ImageStub, auth: Metadata) -> None:
    image = await upload(images, auth, alias="@logo")
    by_id = await images.GetImage(image_pb2.GetImageRequest(id_or_alias=image.id), metadata=auth)
    by_alias = await images.GetImage(image_pb2.GetImageRequest(id_or_alias="@logo"), metadata=auth)
    upper = await images.GetImage(
        image_pb2.GetImageRequest(id_or_alias=image.id.upper()), metadata=auth
    )
    assert by_id == by_alias == upper == image
    reason, _, _ = await fails(
        images.GetImage(image_pb2.GetImageRequest(id_or_alias=str(uuid.uuid4())), metadata=auth),
        CODE.NOT_FOUND,
    )
    assert reason == "IMAGE_NOT_FOUND"
    reason, _, _ = await fails(
        images.GetImage(image_pb2.GetImageRequest(id_or_alias="@nobody"), metadata=auth),
        CODE.NOT_FOUND,
    )
    assert reason == "ALIAS_NOT_FOUND"


async def test_list_filters_and_paging(images: ImageStub, gens: GenStub, auth: Metadata) -> None:
    flow_id = str(uuid.uuid4())
    uploaded = [(await upload(images, auth, flow_id=flow_id)).id for _ in range(5)]
    created = await gens.CreateGeneration(
        generation_pb2.CreateGenerationRequest(prompt="a red fox", flow_id=""), metadata=auth
    )
    generated = (await wait_success(gens, auth, created.id)).output_image.id
    await upload(images, auth, flow_id="", alias="@solo")

    everything = await images.ListImages(image_pb2.ListImagesRequest(), metadata=auth)
    assert everything.total == 7 and not everything.has_more
    times = [(i.create_time.ToDatetime(), i.id) for i in everything.images]
    assert times == sorted(times, reverse=True)  # newest first

    pages: list[str] = []
    token = ""
    while True:
        page = await images.ListImages(
            image_pb2.ListImagesRequest(flow_id=flow_id, limit=2, page_token=token), metadata=auth
        )
        assert page.total == 5 and page.limit == 2
        pages.extend(i.id for i in page.images)
        token = page.next_page_token
        assert page.has_more == bool(token)
        if not token:
            break
    assert pages == list(reversed(uploaded))

    by_offset = await images.ListImages(
        image_pb2.ListImagesRequest(flow_id=flow_id, limit=2, offset=3), metadata=auth
    )
    assert [i.id for i in by_offset.images] == list(reversed(uploaded))[3:]
    assert (by_offset.offset, by_offset.has_more) == (3, False)

    only_generated = await images.ListImages(
        image_pb2.ListImagesRequest(source=image_pb2.IMAGE_SOURCE_GENERATED), metadata=auth
    )
    assert [i.id for i in only_generated.images] == [generated]
    only_uploaded = await images.ListImages(
        image_pb2.ListImagesRequest(source=image_pb2.IMAGE_SOURCE_UPLOADED), metadata=auth
    )
    assert only_uploaded.total == 6
    solo = await images.ListImages(image_pb2.ListImagesRequest(alias="@solo"), metadata=auth)
    assert [i.alias for i in solo.images] == ["@solo"]

    first = await images.ListImages(
        image_pb2.ListImagesRequest(flow_id=flow_id, limit=2), metadata=auth
    )
    bad = [
        (image_pb2.ListImagesRequest(limit=101), "VALIDATION_ERROR", ["limit"]),
        (image_pb2.ListImagesRequest(limit=-1), "VALIDATION_ERROR", ["limit"]),
        (image_pb2.ListImagesRequest(offset=-1), "VALIDATION_ERROR", ["offset"]),
        (image_pb2.ListImagesRequest(page_token="garbage!"), "INVALID_PAGE_TOKEN", ["page_token"]),
        # A token is bound to the filters of the query that made it.
        (
            image_pb2.ListImagesRequest(page_token=first.next_page_token),
            "INVALID_PAGE_TOKEN",
            ["page_token"],
        ),
        (image_pb2.ListImagesRequest(flow_id="nope"), "VALIDATION_ERROR", ["flow_id"]),
        (image_pb2.ListImagesRequest(alias="solo"), "VALIDATION_ERROR", ["alias"]),
        (image_pb2.ListImagesRequest(source=9), "VALIDATION_ERROR", ["source"]),  # type: ignore[arg-type]
    ]
    for request, reason, fields in bad:
        got = await fails(images.ListImages(request, metadata=auth), CODE.INVALID_ARGUMENT)
        assert got[:2] == (reason, fields), request


async def test_update_focal_point_and_meta(images: ImageStub, auth: Metadata) -> None:
    image = await upload(images, auth)
    meta = struct_pb2.Struct()
    meta.update({"caption": "a cat"})
    updated = await images.UpdateImage(
        image_pb2.UpdateImageRequest(
            id_or_alias=image.id, focal_point=image_pb2.FocalPoint(x=0.25, y=1.0), meta=meta
        ),
        metadata=auth,
    )
    assert (updated.focal_point.x, updated.focal_point.y) == (0.25, 1.0)
    assert dict(updated.meta) == {"caption": "a cat"}
    assert updated.update_time.ToDatetime() >= image.update_time.ToDatetime()

    # With a mask only the named fields change, even if others are present.
    other_meta = struct_pb2.Struct()
    other_meta.update({"caption": "a dog"})
    masked = await images.UpdateImage(
        image_pb2.UpdateImageRequest(
            id_or_alias=image.id,
            focal_point=image_pb2.FocalPoint(x=0.5, y=0.5),
            meta=other_meta,
            update_mask=field_mask_pb2.FieldMask(paths=["meta"]),
        ),
        metadata=auth,
    )
    assert (masked.focal_point.x, masked.focal_point.y) == (0.25, 1.0)
    assert dict(masked.meta) == {"caption": "a dog"}

    # A masked field absent from the request is cleared.
    cleared = await images.UpdateImage(
        image_pb2.UpdateImageRequest(
            id_or_alias=image.id, update_mask=field_mask_pb2.FieldMask(paths=["focal_point"])
        ),
        metadata=auth,
    )
    assert not cleared.HasField("focal_point")
    assert dict(cleared.meta) == {"caption": "a dog"}

    big = struct_pb2.Struct()
    big.update({"blob": "x" * 17_000})
    bad = [
        (image_pb2.FocalPoint(x=1.5, y=0.5), None, None, ["focal_point.x"]),
        (image_pb2.FocalPoint(x=-0.1, y=2), None, None, ["focal_point.x", "focal_point.y"]),
        (image_pb2.FocalPoint(x=math.nan, y=0), None, None, ["focal_point.x"]),
        (None, big, None, ["meta"]),
        (None, None, ["alias"], ["update_mask"]),
    ]
    for focal, new_meta, paths, fields in bad:
        request = image_pb2.UpdateImageRequest(id_or_alias=image.id)
        if focal is not None:
            request.focal_point.CopyFrom(focal)
        if new_meta is not None:
            request.meta.CopyFrom(new_meta)
        if paths is not None:
            request.update_mask.paths.extend(paths)
        reason, got, _ = await fails(
            images.UpdateImage(request, metadata=auth), CODE.INVALID_ARGUMENT
        )
        assert (reason, got) == ("VALIDATION_ERROR", fields)


# --- delete ----------------------------------------------------------------------


async def test_delete_uploaded_image_leaves_the_flow_alias_maps(
    app: App, images: ImageStub, flows: FlowStub, auth: Metadata
) -> None:
    flow_id = str(uuid.uuid4())
    ref = await upload(images, auth, flow_id=flow_id, alias="@ref", flow_alias="@style")
    elsewhere = (await upload(images, auth)).flow_id
    for target in (flow_id, elsewhere):
        await flows.UpdateFlowAliases(
            flow_pb2.UpdateFlowAliasesRequest(id=target, aliases={"@again": ref.id}),
            metadata=auth,
        )

    deleted = await images.DeleteImage(image_pb2.DeleteImageRequest(id=ref.id), metadata=auth)
    assert deleted.id == ref.id

    # The foreign-key cascade really ran.
    async with app.db.read() as session:
        count = await session.scalar(
            select(func.count()).select_from(FlowAliasRow).where(FlowAliasRow.image_id == ref.id)
        )
        assert count == 0
        assert await session.get(ImageRow, ref.id) is None
    for target in (flow_id, elsewhere):
        flow = await flows.GetFlow(flow_pb2.GetFlowRequest(id=target), metadata=auth)
        assert dict(flow.aliases) == {}

    reason, _, _ = await fails(
        images.GetImage(image_pb2.GetImageRequest(id_or_alias=ref.id), metadata=auth),
        CODE.NOT_FOUND,
    )
    assert reason == "IMAGE_NOT_FOUND"
    reason, _, _ = await fails(
        images.GetImage(image_pb2.GetImageRequest(id_or_alias="@ref"), metadata=auth),
        CODE.NOT_FOUND,
    )
    assert reason == "ALIAS_NOT_FOUND"
    reason, _, _ = await fails(
        images.DeleteImage(image_pb2.DeleteImageRequest(id=ref.id), metadata=auth),
        CODE.NOT_FOUND,
    )
    assert reason == "IMAGE_NOT_FOUND"
    await assert_consistent(app)


async def test_delete_referenced_image_clears_the_recorded_references(
    app: App, images: ImageStub, gens: GenStub, auth: Metadata
) -> None:
    flow_id = str(uuid.uuid4())
    ref = await upload(images, auth, flow_id=flow_id, alias="@ref", flow_alias="@style")
    created = await gens.CreateGeneration(
        generation_pb2.CreateGenerationRequest(
            prompt="a cat in the style of @style", flow_id=flow_id, reference_images=["@ref"]
        ),
        metadata=auth,
    )
    done = await wait_success(gens, auth, created.id)
    assert [(r.image_id, r.alias) for r in done.reference_images] == [(ref.id, "@ref")]

    await images.DeleteImage(image_pb2.DeleteImageRequest(id=ref.id), metadata=auth)

    # The foreign-key cascade really ran.
    async with app.db.read() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(GenerationReferenceRow)
            .where(GenerationReferenceRow.image_id == ref.id)
        )
        assert count == 0
    after = await gens.GetGeneration(
        generation_pb2.GetGenerationRequest(id=created.id), metadata=auth
    )
    assert list(after.reference_images) == []
    assert after.revision > done.revision  # watchers see the change
    assert after.output_image.id == done.output_image.id
    await assert_consistent(app)


async def test_delete_generated_image_unlinks_its_generation(
    app: App, images: ImageStub, gens: GenStub, auth: Metadata
) -> None:
    created = await gens.CreateGeneration(
        generation_pb2.CreateGenerationRequest(prompt="a lighthouse"), metadata=auth
    )
    done = await wait_success(gens, auth, created.id)
    output = done.output_image
    payload = b"".join(c.data for c in await read_all(images, auth, output.id))
    assert payload == await app.blobs.get(
        next(iter(await stored_keys(app)))
    )  # the generated bytes read back as stored
    assert output.generation_id == created.id

    await images.DeleteImage(image_pb2.DeleteImageRequest(id=output.id), metadata=auth)
    after = await gens.GetGeneration(
        generation_pb2.GetGenerationRequest(id=created.id), metadata=auth
    )
    assert not after.HasField("output_image")
    assert after.status == generation_pb2.GENERATION_STATUS_SUCCESS
    assert await stored_keys(app) == set()
    await assert_consistent(app)


# --- presigned URLs ----------------------------------------------------------------


async def test_presigned_url(backend: str, images: ImageStub, auth: Metadata) -> None:
    payload = picture(size=(20, 20))
    image = await upload(images, auth, content=payload)
    for seconds in (0, -5, 7 * 86400 + 1):
        request = image_pb2.GetImageUrlRequest(
            id_or_alias=image.id, ttl=duration_pb2.Duration(seconds=seconds)
        )
        reason, fields, _ = await fails(
            images.GetImageUrl(request, metadata=auth), CODE.INVALID_ARGUMENT
        )
        assert (reason, fields) == ("VALIDATION_ERROR", ["ttl"])

    for ttl in (None, timedelta(days=7)):
        request = image_pb2.GetImageUrlRequest(id_or_alias=image.id)
        if ttl is not None:
            request.ttl.FromTimedelta(ttl)
        before = datetime.now(UTC)
        signed = await images.GetImageUrl(request, metadata=auth)
        expected = before + (ttl or timedelta(hours=1))
        assert abs(signed.expire_time.ToDatetime(UTC) - expected) < timedelta(seconds=5)
        if backend == "sqlite":
            # The local store signs a gateway URL (this app serves no HTTP; fetching it is
            # tests/gateway/test_delivery_images.py's part).
            assert f"/signed/img/{image.id}?expires=" in signed.url and "&signature=" in signed.url
            continue
        fetched = await asyncio.to_thread(lambda url=signed.url: urllib.request.urlopen(url).read())
        assert fetched == payload


# --- malformed IDs and other projects --------------------------------------------


async def test_malformed_ids(images: ImageStub, auth: Metadata) -> None:
    calls = [
        images.GetImage(image_pb2.GetImageRequest(id_or_alias="1234"), metadata=auth),
        images.GetImage(image_pb2.GetImageRequest(id_or_alias=""), metadata=auth),
        images.GetImage(
            image_pb2.GetImageRequest(id_or_alias="@hero", flow_id="flow-1"), metadata=auth
        ),
        images.DeleteImage(image_pb2.DeleteImageRequest(id="not-a-uuid"), metadata=auth),
        images.DeleteImage(image_pb2.DeleteImageRequest(id=""), metadata=auth),
        images.SetImageAlias(image_pb2.SetImageAliasRequest(id="x", alias="@a1"), metadata=auth),
        images.UpdateImage(image_pb2.UpdateImageRequest(id_or_alias="{}"), metadata=auth),
        images.GetImageUrl(image_pb2.GetImageUrlRequest(id_or_alias="12-34"), metadata=auth),
        read_all(images, auth, "zzz"),
    ]
    for call in calls:
        reason, fields, _ = await fails(call, CODE.INVALID_ARGUMENT)
        assert reason == "VALIDATION_ERROR" and len(fields) == 1


async def test_another_projects_image_is_not_found(
    app: App, images: ImageStub, auth: Metadata, other: Metadata
) -> None:
    mine = await upload(images, auth, alias="@mine")
    calls = [
        images.GetImage(image_pb2.GetImageRequest(id_or_alias=mine.id), metadata=other),
        images.GetImage(image_pb2.GetImageRequest(id_or_alias="@mine"), metadata=other),
        images.DeleteImage(image_pb2.DeleteImageRequest(id=mine.id), metadata=other),
        images.UpdateImage(
            image_pb2.UpdateImageRequest(id_or_alias=mine.id, meta=struct_pb2.Struct()),
            metadata=other,
        ),
        images.SetImageAlias(
            image_pb2.SetImageAliasRequest(id=mine.id, alias="@taken"), metadata=other
        ),
        images.GetImageUrl(image_pb2.GetImageUrlRequest(id_or_alias=mine.id), metadata=other),
        read_all(images, other, mine.id),
    ]
    for call in calls:
        reason, _, _ = await fails(call, CODE.NOT_FOUND)
        assert reason in ("IMAGE_NOT_FOUND", "ALIAS_NOT_FOUND")
    # Uploading into another project's flow is refused the same way.
    reason, _, _ = await fails(upload(images, other, flow_id=mine.flow_id), CODE.NOT_FOUND)
    assert reason == "FLOW_NOT_FOUND"
    # The other project's alias space is its own.
    theirs = await upload(images, other, alias="@mine")
    assert theirs.alias == "@mine"
    listed = await images.ListImages(image_pb2.ListImagesRequest(), metadata=other)
    assert [i.id for i in listed.images] == [theirs.id]
    again = await images.GetImage(image_pb2.GetImageRequest(id_or_alias=mine.id), metadata=auth)
    assert again.alias == "@mine"
    await assert_consistent(app)
