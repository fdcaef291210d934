"""GenerationService rules (spec §2) against a real server: defaults, validation, lifecycle."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Sequence

import grpc
import pytest
from expect import details, expect_error, until_terminal
from google.protobuf import field_mask_pb2, struct_pb2
from PIL import Image as PILImage

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App

Md = Sequence[tuple[str, str]]
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> generation_pb2_grpc.GenerationServiceStub:
    return generation_pb2_grpc.GenerationServiceStub(channel)


def big_meta(size: int) -> struct_pb2.Struct:
    meta = struct_pb2.Struct()
    meta.update({"blob": "x" * size})
    return meta


async def test_create_returns_pending_with_defaults(stub, auth: Md) -> None:
    created = await stub.CreateGeneration(
        g.CreateGenerationRequest(prompt="  a serene mountain landscape at sunset  "),
        metadata=auth,
    )
    assert created.status == g.GENERATION_STATUS_PENDING
    assert uuid.UUID(created.id)
    assert created.prompt == "a serene mountain landscape at sunset"  # trimmed, not yet enhanced
    assert not created.HasField("original_prompt")
    assert created.aspect_ratio == "1:1"
    assert created.auto_enhance is True
    assert created.enhancement_template == "general"
    assert created.HasField("flow_id") and uuid.UUID(created.flow_id)  # minted
    assert created.revision == 1 and created.attempt == 0
    assert created.create_time.seconds > 0


@pytest.mark.parametrize(
    ("ratio", "size"),
    [
        ("1:1", (1024, 1024)),
        ("16:9", (1792, 1008)),
        ("9:16", (1008, 1792)),
        ("3:2", (1536, 1024)),
        ("21:9", (2016, 864)),
    ],
)
async def test_output_size_per_aspect_ratio(stub, auth: Md, app: App, ratio, size) -> None:
    created = await stub.CreateGeneration(
        g.CreateGenerationRequest(prompt="a red fox in snow", aspect_ratio=ratio), metadata=auth
    )
    done = await until_terminal(stub, created.id, auth)
    assert done.status == g.GENERATION_STATUS_SUCCESS, done.error
    image = done.output_image
    assert (image.width, image.height) == size
    assert image.mime_type == "image/png"
    stored = await app.blobs.get(await current_key(app, done))
    assert PILImage.open(io.BytesIO(stored)).size == size
    assert image.file_size == len(stored)


async def test_enhancement_sets_prompt_and_original_prompt(stub, auth: Md) -> None:
    created = await stub.CreateGeneration(
        g.CreateGenerationRequest(prompt="a teapot", enhancement_template="product"), metadata=auth
    )
    done = await until_terminal(stub, created.id, auth)
    assert done.original_prompt == "a teapot"
    assert done.prompt.startswith("a teapot") and done.prompt != "a teapot"
    plain = await stub.CreateGeneration(
        g.CreateGenerationRequest(prompt="a teapot", auto_enhance=False), metadata=auth
    )
    plain_done = await until_terminal(stub, plain.id, auth)
    assert plain_done.prompt == "a teapot"
    assert not plain_done.HasField("original_prompt")
    assert plain_done.auto_enhance is False


async def test_flow_id_three_states(stub, auth: Md) -> None:
    omitted = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a"), metadata=auth)
    assert omitted.HasField("flow_id")
    empty = await stub.CreateGeneration(
        g.CreateGenerationRequest(prompt="a", flow_id=""), metadata=auth
    )
    assert not empty.HasField("flow_id")
    chosen = str(uuid.uuid4())
    given = await stub.CreateGeneration(
        g.CreateGenerationRequest(prompt="a", flow_id=chosen), metadata=auth
    )
    assert given.flow_id == chosen
    again = await stub.CreateGeneration(
        g.CreateGenerationRequest(prompt="b", flow_id=chosen), metadata=auth
    )
    assert again.flow_id == chosen
    listed = await stub.ListGenerations(g.ListGenerationsRequest(flow_id=chosen), metadata=auth)
    assert {x.id for x in listed.generations} == {given.id, again.id}


async def test_request_id_makes_create_idempotent(stub, auth: Md) -> None:
    request = g.CreateGenerationRequest(prompt="a kite", request_id="create-kite-1")
    first = await stub.CreateGeneration(request, metadata=auth)
    second = await stub.CreateGeneration(request, metadata=auth)
    assert second.id == first.id
    listed = await stub.ListGenerations(g.ListGenerationsRequest(), metadata=auth)
    assert [x.id for x in listed.generations].count(first.id) == 1
    assert listed.total == 1
    other = g.CreateGenerationRequest(prompt="another kite", request_id="create-kite-1")
    await expect_error(
        stub.CreateGeneration(other, metadata=auth),
        grpc.StatusCode.FAILED_PRECONDITION,
        "REQUEST_ID_REUSED",
    )


def _create(**fields) -> g.CreateGenerationRequest:
    fields.setdefault("prompt", "a valid prompt")
    return g.CreateGenerationRequest(**fields)


BAD_CREATES = [
    ("empty prompt", _create(prompt=""), "prompt"),
    ("blank prompt", _create(prompt="   \n\t "), "prompt"),
    ("4001-character prompt", _create(prompt="x" * 4001), "prompt"),
    ("aspect ratio 4:3", _create(aspect_ratio="4:3"), "aspect_ratio"),
    ("unknown template", _create(enhancement_template="baroque"), "enhancement_template"),
    ("malformed flow id", _create(flow_id="not-a-uuid"), "flow_id"),
    ("bad alias grammar", _create(alias="hero"), "alias"),
    ("alias too long", _create(alias="@" + "a" * 50), "alias"),
    ("reserved alias", _create(alias="@last"), "alias"),
    ("bad flow alias", _create(flow_alias="@bad alias"), "flow_alias"),
    ("flow alias without flow", _create(flow_alias="@x", flow_id=""), "flow_alias"),
    ("malformed reference", _create(reference_images=["nope"]), "reference_images[0]"),
    (
        "four references",
        _create(reference_images=[str(uuid.uuid4()) for _ in range(4)]),
        "reference_images",
    ),
    ("meta over 16 KiB", _create(meta=big_meta(17 * 1024)), "meta"),
    ("request id over 64", _create(request_id="r" * 65), "request_id"),
]


@pytest.mark.parametrize(
    ("case", "request_", "field"), BAD_CREATES, ids=[c[0] for c in BAD_CREATES]
)
async def test_bad_create_is_invalid_argument_with_field_violation(
    stub, auth: Md, case: str, request_, field: str
) -> None:
    error = await expect_error(
        stub.CreateGeneration(request_, metadata=auth), INVALID, "VALIDATION_ERROR"
    )
    _, violations = details(error)
    assert field in [f for f, _ in violations], violations
    # Nothing was created.
    listed = await stub.ListGenerations(g.ListGenerationsRequest(), metadata=auth)
    assert listed.total == 0


async def test_every_problem_is_reported_at_once(stub, auth: Md) -> None:
    error = await expect_error(
        stub.CreateGeneration(_create(prompt="", aspect_ratio="4:3", alias="x"), metadata=auth),
        INVALID,
    )
    assert {f for f, _ in details(error)[1]} == {"prompt", "aspect_ratio", "alias"}


async def test_unknown_reference_is_not_found_naming_it(stub, auth: Md) -> None:
    missing = str(uuid.uuid4())
    error = await expect_error(
        stub.CreateGeneration(_create(reference_images=[missing]), metadata=auth),
        NOT_FOUND,
        "REFERENCE_NOT_FOUND",
    )
    assert missing in error.details()
    error = await expect_error(
        stub.CreateGeneration(_create(reference_images=["@nobody"]), metadata=auth),
        NOT_FOUND,
        "REFERENCE_NOT_FOUND",
    )
    assert "@nobody" in error.details()


async def test_unresolved_prompt_mentions_are_ignored(stub, auth: Md) -> None:
    created = await stub.CreateGeneration(
        _create(prompt="a portrait of @someone in the style of @nobody"), metadata=auth
    )
    assert list(created.reference_images) == []


BAD_LISTS = [
    ("limit 101", g.ListGenerationsRequest(limit=101), "limit"),
    ("negative limit", g.ListGenerationsRequest(limit=-1), "limit"),
    ("negative offset", g.ListGenerationsRequest(offset=-5), "offset"),
    ("malformed flow id", g.ListGenerationsRequest(flow_id="x"), "flow_id"),
    ("bad page token", g.ListGenerationsRequest(page_token="garbage!"), "page_token"),
    ("token plus offset", g.ListGenerationsRequest(page_token="abc", offset=3), "offset"),
    ("unknown status", g.ListGenerationsRequest(status=99), "status"),
]


@pytest.mark.parametrize(("case", "request_", "field"), BAD_LISTS, ids=[c[0] for c in BAD_LISTS])
async def test_bad_list_is_invalid_argument(stub, auth: Md, case, request_, field) -> None:
    error = await expect_error(stub.ListGenerations(request_, metadata=auth), INVALID)
    assert field in [f for f, _ in details(error)[1]], details(error)


async def test_page_token_from_other_filters_is_rejected(stub, auth: Md) -> None:
    for i in range(3):
        await stub.CreateGeneration(_create(prompt=f"p{i}"), metadata=auth)
    page = await stub.ListGenerations(g.ListGenerationsRequest(limit=1), metadata=auth)
    assert page.next_page_token
    await expect_error(
        stub.ListGenerations(
            g.ListGenerationsRequest(
                limit=1, page_token=page.next_page_token, status=g.GENERATION_STATUS_FAILED
            ),
            metadata=auth,
        ),
        INVALID,
        "INVALID_PAGE_TOKEN",
    )


@pytest.mark.parametrize(
    "call",
    [
        "GetGeneration",
        "DeleteGeneration",
        "RegenerateGeneration",
        "UpdateGeneration",
        "WatchGeneration",
    ],
)
async def test_ids_malformed_and_unknown(stub, auth: Md, call: str) -> None:
    requests = {
        "GetGeneration": g.GetGenerationRequest,
        "DeleteGeneration": g.DeleteGenerationRequest,
        "RegenerateGeneration": g.RegenerateGenerationRequest,
        "UpdateGeneration": lambda id: g.UpdateGenerationRequest(id=id, prompt="p"),
        "WatchGeneration": g.WatchGenerationRequest,
    }
    method = getattr(stub, call)

    async def invoke(generation_id: str):
        result = method(requests[call](id=generation_id), metadata=auth)
        if call == "WatchGeneration":
            return [event async for event in result]
        return await result

    await expect_error(invoke("not-a-uuid"), INVALID, "VALIDATION_ERROR")
    await expect_error(invoke(""), INVALID, "VALIDATION_ERROR")
    await expect_error(invoke(str(uuid.uuid4())), NOT_FOUND, "GENERATION_NOT_FOUND")


async def test_list_paging_offset_and_keyset(stub, auth: Md) -> None:
    ids = []
    for i in range(7):
        created = await stub.CreateGeneration(_create(prompt=f"prompt {i}"), metadata=auth)
        ids.append(created.id)
    newest_first = list(reversed(ids))
    page = await stub.ListGenerations(g.ListGenerationsRequest(limit=3), metadata=auth)
    assert [x.id for x in page.generations] == newest_first[:3]
    assert (page.total, page.limit, page.offset, page.has_more) == (7, 3, 0, True)
    page2 = await stub.ListGenerations(g.ListGenerationsRequest(limit=3, offset=3), metadata=auth)
    assert [x.id for x in page2.generations] == newest_first[3:6]
    last = await stub.ListGenerations(g.ListGenerationsRequest(limit=3, offset=6), metadata=auth)
    assert [x.id for x in last.generations] == newest_first[6:]
    assert last.has_more is False and last.next_page_token == ""
    walked, token = [], ""
    while True:
        keyset = await stub.ListGenerations(
            g.ListGenerationsRequest(limit=2, page_token=token), metadata=auth
        )
        walked += [x.id for x in keyset.generations]
        token = keyset.next_page_token
        if not token:
            break
    assert walked == newest_first
    default = await stub.ListGenerations(g.ListGenerationsRequest(), metadata=auth)
    assert default.limit == 20


async def test_list_filters_by_status(stub, auth: Md) -> None:
    created = await stub.CreateGeneration(_create(), metadata=auth)
    await until_terminal(stub, created.id, auth)
    ok = await stub.ListGenerations(
        g.ListGenerationsRequest(status=g.GENERATION_STATUS_SUCCESS), metadata=auth
    )
    assert [x.id for x in ok.generations] == [created.id]
    failed = await stub.ListGenerations(
        g.ListGenerationsRequest(status=g.GENERATION_STATUS_FAILED), metadata=auth
    )
    assert failed.total == 0


async def test_every_kind_of_page_lists_what_it_matches(stub, auth: Md, app: App) -> None:
    # Each mix of filters, cursor or not, and empty pages (their total asked apart) has
    # a statement of its own: all of them, against the generations they should list.
    await app.engine.stop(0)  # they stay PENDING unless cancelled here
    made: list[g.Generation] = []
    for n in range(7):
        flow_id = made[0].flow_id if n in (2, 4, 5) else ""
        request = _create(prompt=f"a kite {n}", flow_id=flow_id)
        made.append(await stub.CreateGeneration(request, metadata=auth))
    for n in (1, 4, 6):
        cancel = g.CancelGenerationRequest(id=made[n].id)
        made[n] = await stub.CancelGeneration(cancel, metadata=auth)
    flow = made[0].flow_id
    statuses = (0, g.GENERATION_STATUS_PENDING, g.GENERATION_STATUS_CANCELLED)
    for flow_id in ("", flow):
        for status in (*statuses, g.GENERATION_STATUS_FAILED):
            expected = [
                x.id
                for x in reversed(made)
                if (not flow_id or x.flow_id == flow_id) and (not status or x.status == status)
            ]
            query = {"flow_id": flow_id, "status": status}
            walked, token = [], ""
            while True:
                request = g.ListGenerationsRequest(limit=2, page_token=token, **query)
                page = await stub.ListGenerations(request, metadata=auth)
                assert page.total == len(expected), query
                walked += [x.id for x in page.generations]
                token = page.next_page_token
                if not token:
                    break
            assert walked == expected, query
            by_offset = g.ListGenerationsRequest(limit=2, offset=1, **query)
            page = await stub.ListGenerations(by_offset, metadata=auth)
            assert [x.id for x in page.generations] == expected[1:3], query
            assert (page.total, page.has_more) == (len(expected), len(expected) > 3), query
            beyond = g.ListGenerationsRequest(limit=2, offset=len(made), **query)
            page = await stub.ListGenerations(beyond, metadata=auth)
            assert (list(page.generations), page.total) == ([], len(expected)), query


async def test_update_prompt_regenerates_keeping_image_id_and_url(stub, auth: Md, app: App) -> None:
    created = await stub.CreateGeneration(
        _create(prompt="a red barn", auto_enhance=False), metadata=auth
    )
    first = await until_terminal(stub, created.id, auth)
    image = first.output_image
    first_bytes = await app.blobs.get(await current_key(app, first))
    updated = await stub.UpdateGeneration(
        g.UpdateGenerationRequest(id=created.id, prompt="a blue boat at night"), metadata=auth
    )
    assert updated.status == g.GENERATION_STATUS_PENDING
    second = await until_terminal(stub, created.id, auth)
    assert second.status == g.GENERATION_STATUS_SUCCESS
    assert second.prompt == "a blue boat at night"
    assert second.output_image.id == image.id
    assert second.output_image.url == image.url
    assert second.output_image.etag != image.etag
    assert await app.blobs.get(await current_key(app, second)) != first_bytes
    # Only the new version is left in the store (the worker sweeps the old one just
    # after committing the new one, so it may take a moment after SUCCESS is visible).
    prefix = f"projects/{second.project_id}/generations/{second.id}/"
    for _ in range(200):
        if len([i async for i in app.blobs.list(prefix)]) == 1:
            break
        await asyncio.sleep(0.05)
    assert len([i async for i in app.blobs.list(prefix)]) == 1


async def current_key(app: App, generation: g.Generation) -> str:
    """The object key the output image row points at now."""
    from server.store.models import ImageRow

    async with app.db.read() as session:
        row = await session.get(ImageRow, generation.output_image.id)
        assert row is not None
        return row.object_key


async def test_update_meta_and_flow_only_changes_the_record(stub, auth: Md) -> None:
    created = await stub.CreateGeneration(_create(), metadata=auth)
    done = await until_terminal(stub, created.id, auth)
    meta = struct_pb2.Struct()
    meta.update({"campaign": "spring"})
    updated = await stub.UpdateGeneration(
        g.UpdateGenerationRequest(id=created.id, meta=meta, flow_id=""), metadata=auth
    )
    assert updated.status == g.GENERATION_STATUS_SUCCESS
    assert updated.meta["campaign"] == "spring"
    assert not updated.HasField("flow_id")
    assert updated.revision == done.revision + 1
    assert updated.output_image.etag == done.output_image.etag


async def test_update_mask_rules(stub, auth: Md) -> None:
    created = await stub.CreateGeneration(_create(), metadata=auth)
    await expect_error(
        stub.UpdateGeneration(
            g.UpdateGenerationRequest(
                id=created.id, update_mask=field_mask_pb2.FieldMask(paths=["alias"])
            ),
            metadata=auth,
        ),
        INVALID,
    )
    await expect_error(
        stub.UpdateGeneration(
            g.UpdateGenerationRequest(id=created.id, aspect_ratio="4:3"), metadata=auth
        ),
        INVALID,
    )
    await expect_error(
        stub.UpdateGeneration(g.UpdateGenerationRequest(id=created.id, prompt=" "), metadata=auth),
        INVALID,
    )
    # A mask naming meta with no meta clears it.
    cleared = await stub.UpdateGeneration(
        g.UpdateGenerationRequest(
            id=created.id, update_mask=field_mask_pb2.FieldMask(paths=["meta"])
        ),
        metadata=auth,
    )
    assert dict(cleared.meta) == {}


async def test_regenerate_from_success_and_from_failure(stub, auth: Md, app: App) -> None:
    created = await stub.CreateGeneration(_create(prompt="a cactus"), metadata=auth)
    first = await until_terminal(stub, created.id, auth)
    again = await stub.RegenerateGeneration(
        g.RegenerateGenerationRequest(id=created.id), metadata=auth
    )
    assert again.status == g.GENERATION_STATUS_PENDING
    second = await until_terminal(stub, created.id, auth)
    assert second.output_image.id == first.output_image.id
    assert second.output_image.etag != first.output_image.etag  # new content
    assert second.attempt == first.attempt + 1


async def test_regenerate_request_id_starts_one_run(stub, auth: Md) -> None:
    created = await stub.CreateGeneration(_create(), metadata=auth)
    await until_terminal(stub, created.id, auth)
    request = g.RegenerateGenerationRequest(id=created.id, request_id="regen-1")
    await stub.RegenerateGeneration(request, metadata=auth)
    await stub.RegenerateGeneration(request, metadata=auth)
    done = await until_terminal(stub, created.id, auth)
    assert done.attempt == 2


@pytest.mark.parametrize("request_id", ["r" * 65, "tab\there"], ids=["too long", "unprintable"])
async def test_regenerate_with_a_bad_request_id_is_refused_and_starts_nothing(
    stub, auth: Md, request_id: str
) -> None:
    created = await stub.CreateGeneration(_create(), metadata=auth)
    first = await until_terminal(stub, created.id, auth)
    error = await expect_error(
        stub.RegenerateGeneration(
            g.RegenerateGenerationRequest(id=created.id, request_id=request_id), metadata=auth
        ),
        INVALID,
        "VALIDATION_ERROR",
    )
    _, violations = details(error)
    assert [f for f, _ in violations] == ["request_id"]
    again = await stub.GetGeneration(g.GetGenerationRequest(id=created.id), metadata=auth)
    assert (again.revision, again.attempt) == (first.revision, first.attempt)


async def test_a_regenerate_request_id_reused_for_another_generation_is_refused(
    stub, auth: Md
) -> None:
    one = await stub.CreateGeneration(_create(prompt="one"), metadata=auth)
    two = await stub.CreateGeneration(_create(prompt="two"), metadata=auth)
    await stub.RegenerateGeneration(
        g.RegenerateGenerationRequest(id=one.id, request_id="regen-shared"), metadata=auth
    )
    await expect_error(
        stub.RegenerateGeneration(
            g.RegenerateGenerationRequest(id=two.id, request_id="regen-shared"), metadata=auth
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "REQUEST_ID_REUSED",
    )


async def test_delete_removes_generation_and_image(stub, auth: Md, app: App) -> None:
    created = await stub.CreateGeneration(_create(), metadata=auth)
    await until_terminal(stub, created.id, auth)
    deleted = await stub.DeleteGeneration(g.DeleteGenerationRequest(id=created.id), metadata=auth)
    assert deleted.id == created.id and deleted.image_deleted
    await expect_error(
        stub.GetGeneration(g.GetGenerationRequest(id=created.id), metadata=auth), NOT_FOUND
    )
    assert [i async for i in app.blobs.list("")] == []
    await expect_error(
        stub.DeleteGeneration(g.DeleteGenerationRequest(id=created.id), metadata=auth), NOT_FOUND
    )


async def test_delete_keeps_an_image_that_holds_a_project_alias(stub, auth: Md, app: App) -> None:
    created = await stub.CreateGeneration(_create(alias="@keeper"), metadata=auth)
    done = await until_terminal(stub, created.id, auth)
    assert done.output_image.alias == "@keeper"
    deleted = await stub.DeleteGeneration(g.DeleteGenerationRequest(id=created.id), metadata=auth)
    assert deleted.image_deleted is False
    from server.store.models import ImageRow

    async with app.db.read() as session:
        row = await session.get(ImageRow, done.output_image.id)
    assert row is not None and row.generation_id is None and row.alias == "@keeper"
    assert [i.key async for i in app.blobs.list("")] == [row.object_key]


async def test_alias_moves_to_the_newest_generation(stub, auth: Md) -> None:
    one = await until_terminal(
        stub, (await stub.CreateGeneration(_create(alias="@hero"), metadata=auth)).id, auth
    )
    two = await until_terminal(
        stub, (await stub.CreateGeneration(_create(alias="@hero"), metadata=auth)).id, auth
    )
    assert two.output_image.alias == "@hero"
    one_now = await stub.GetGeneration(g.GetGenerationRequest(id=one.id), metadata=auth)
    assert one_now.output_image.alias == ""


async def test_moving_a_generation_moves_its_output_image(stub, auth: Md, channel) -> None:
    from genrpc.imagegen.v1 import image_pb2, image_pb2_grpc

    created = await stub.CreateGeneration(_create(), metadata=auth)
    done = await until_terminal(stub, created.id, auth)
    target = str(uuid.uuid4())
    moved = await stub.UpdateGeneration(
        g.UpdateGenerationRequest(id=created.id, flow_id=target), metadata=auth
    )
    assert moved.flow_id == target and moved.output_image.flow_id == target
    images = image_pb2_grpc.ImageServiceStub(channel)
    image = await images.GetImage(
        image_pb2.GetImageRequest(id_or_alias=done.output_image.id), metadata=auth
    )
    assert image.flow_id == target
    detached = await stub.UpdateGeneration(
        g.UpdateGenerationRequest(id=created.id, flow_id=""), metadata=auth
    )
    assert not detached.output_image.HasField("flow_id")
