"""The compiled REST renderer prints every reply byte for byte as json_format + reshaping does:
over generated messages of every reply type (hypothesis) and over a real server's replies."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest import (  # noqa: F401  (fixtures, by function name)
    app_fixture,
    app_overrides_fixture,
    client_fixture,
    ok,
    picture,
    until_status,
)

from genrpc.imagegen.v1 import generation_pb2, generation_pb2_grpc, image_pb2, image_pb2_grpc
from server.app import App
from server.gateway.rendering import _compile, generic, render
from server.gateway.requests import INT_RANGES
from server.gateway.routing import bindings

F = FieldDescriptor
# Timestamp's JSON range: 0001-01-01 to 9999-12-31.
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
DURATION_SECONDS = 315_576_000_000


def reply_types() -> list[Descriptor]:
    """Every message type a REST route answers with, and every type nested in one."""
    found: dict[str, Descriptor] = {}

    def walk(descriptor: Descriptor) -> None:
        if descriptor.full_name in found or descriptor.GetOptions().map_entry:
            return
        found[descriptor.full_name] = descriptor
        for field in descriptor.fields:
            if field.message_type is not None:
                walk(field.message_type)

    for binding in bindings():
        walk(binding.method.output_type)
    return [d for name, d in sorted(found.items()) if not name.startswith("google.protobuf.")]


def as_json(data: Any) -> str:
    """How the gateway writes a body (Starlette's JSONResponse)."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def assert_same(message: Message) -> None:
    fast, reference = render(message), generic(message)
    assert as_json(fast) == as_json(reference)
    assert fast == reference


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False, width=32),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


def scalars(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == F.TYPE_STRING:
        return st.text(max_size=12)
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        edges = st.sampled_from([low, high, 0, 2**53 + 1 if high > 2**53 else high])
        return st.integers(low, high) | edges
    if kind == F.TYPE_ENUM:
        assert field.enum_type is not None
        known = [value.number for value in field.enum_type.values]
        # Open enums carry numbers the schema does not name (a newer server's values).
        return st.sampled_from(known) | st.integers(-(2**31), 2**31 - 1)
    if kind == F.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == F.TYPE_DOUBLE:
        return st.floats()
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=12)
    raise AssertionError(f"no strategy for {field.full_name}")


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type with any subset of fields set, nested 3 deep."""
    cls = GetMessageClass(descriptor)
    name = descriptor.full_name
    if name == "google.protobuf.Timestamp":
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n),
            st.integers(*TIMESTAMP_SECONDS),
            st.sampled_from([0, 1_000_000, 1_000, 1]) | st.integers(0, 999_999_999),
        )
    if name == "google.protobuf.Duration":
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n if s >= 0 else -n),
            st.integers(-DURATION_SECONDS, DURATION_SECONDS),
            st.integers(0, 999_999_999),
        )
    if name == "google.protobuf.Struct":
        return st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4).map(_struct)
    if name == "google.protobuf.Value":
        return JSON_VALUES.map(lambda v: _struct({"v": v}).fields["v"])
    if name == "google.protobuf.ListValue":
        return st.lists(JSON_VALUES, max_size=3).map(lambda v: _struct({"v": v}).fields["v"])
    fields = {}
    for field in descriptor.fields:
        if field.message_type is not None and depth >= 3 and not field.is_repeated:
            continue
        fields[field.name] = st.none() | _values(field, depth)

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for key, value in values.items():
            if value is not None:
                _set(message, descriptor.fields_by_name[key], value)
        return message

    return st.fixed_dictionaries(fields).map(build)


def _values(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        return st.dictionaries(_single(key, depth), _single(value, depth), max_size=3)
    if field.is_repeated:
        if field.message_type is not None and depth >= 3:
            return st.just([])
        return st.lists(_single(field, depth), max_size=3)
    return _single(field, depth)


def _single(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        return messages(field.message_type, depth + 1)
    return scalars(field)


def _set(message: Message, field: FieldDescriptor, value: Any) -> None:
    entry = field.message_type
    target = getattr(message, field.name)
    if entry is not None and entry.GetOptions().map_entry:
        for key, item in value.items():
            if entry.fields_by_name["value"].message_type is not None:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        target.extend(value)
    elif field.message_type is not None:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


REPLY_TYPES = reply_types()


def test_the_reply_types_are_found() -> None:
    names = {d.full_name for d in REPLY_TYPES}
    assert {"imagegen.v1.Generation", "imagegen.v1.Image", "imagegen.v1.FocalPoint"} <= names
    assert "imagegen.v1.ListGenerationsResponse" in names


def test_generation_and_image_are_compiled_and_floats_fall_back() -> None:
    # The read path's types go through the compiled converter, not json_format…
    assert _compile(generation_pb2.Generation.DESCRIPTOR) is not generic
    assert _compile(image_pb2.Image.DESCRIPTOR) is not generic
    # …and a type with float fields is printed by json_format (its float formatting).
    assert _compile(image_pb2.FocalPoint.DESCRIPTOR) is generic


@pytest.mark.parametrize("descriptor", REPLY_TYPES, ids=lambda d: d.name)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_render_prints_what_json_format_prints(
    descriptor: Descriptor, data: st.DataObject
) -> None:
    assert_same(data.draw(messages(descriptor)))


def test_unknown_enum_numbers_and_int64_edges_print_as_json_format_does() -> None:
    generation = generation_pb2.Generation(
        id="g",
        status=99,  # type: ignore[arg-type]  # an open enum's number without a name
        revision=2**63 - 1,
        seed=-(2**63),
        processing_time_ms=2**53 + 1,
    )
    generation.meta.update({"nested": {"n": 1.5, "list": [True, None, "x"]}})
    generation.reference_images.add()
    assert_same(generation)
    data = render(generation)
    assert data["status"] == 99 and data["revision"] == 2**63 - 1
    assert data["meta"] == {"nested": {"n": 1.5, "list": [True, None, "x"]}}
    # Unset fields without presence are printed; unset message fields are not.
    assert data["prompt"] == "" and data["requestedReferences"] == []
    assert "outputImage" not in data and "createTime" not in data


async def test_a_real_servers_replies_render_byte_for_byte(
    app: App,
    client: httpx.AsyncClient,
    gens: generation_pb2_grpc.GenerationServiceStub,
    images: image_pb2_grpc.ImageServiceStub,
    auth: tuple[tuple[str, str], ...],
) -> None:
    """Real replies (a finished generation with its image and meta, lists, an upload's
    image with a focal point) render as the reference does, and the gateway sends the
    reference bytes for a generation it reads."""
    created = ok(
        await client.post(
            "/api/v1/generations",
            json={"prompt": "a lighthouse at dusk", "meta": {"k": [1, "two"]}, "seed": 7},
        ),
        201,
    )
    await until_status(client, created["id"])
    upload = await client.post(
        "/api/v1/images/upload",
        files={"file": ("p.png", picture(), "image/png")},
        data={"alias": "@hero"},
    )
    image = ok(upload, 201)
    focal = {"focalPoint": {"x": 0.25, "y": 0.75}, "meta": {"a": 1}}
    ok(await client.put(f"/api/v1/images/{image['id']}", json=focal))
    generation = await gens.GetGeneration(
        generation_pb2.GetGenerationRequest(id=created["id"]), metadata=auth
    )
    replies: list[Message] = [
        generation,
        await gens.ListGenerations(generation_pb2.ListGenerationsRequest(limit=5), metadata=auth),
        await images.ListImages(image_pb2.ListImagesRequest(limit=5), metadata=auth),
    ]
    assert generation.HasField("output_image") and generation.meta.fields
    listed = replies[2]
    assert isinstance(listed, image_pb2.ListImagesResponse)
    assert any(image.HasField("focal_point") for image in listed.images)
    for reply in replies:
        assert_same(reply)
    response = await client.get(f"/api/v1/generations/{created['id']}")
    assert response.status_code == 200
    assert response.content == as_json({"success": True, "data": generic(generation)}).encode()
