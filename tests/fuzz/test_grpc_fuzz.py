"""A gRPC fuzzer over every imagegen.v1 RPC: hypothesis-built request messages (any field
set to any value of its type: NaN, huge integers, unknown enum numbers, odd strings, deep
structs, out-of-range timestamps and durations), random bytes, and mutated serializations.
No call may answer INTERNAL, UNKNOWN or DATA_LOSS, and the server logs no traceback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served import Served

from genrpc.imagegen.v1 import admin_pb2, flow_pb2, generation_pb2, image_pb2  # noqa: F401
from server.api.server import SERVICE_NAMES
from server.gateway.requests import INT_RANGES

pytestmark = pytest.mark.slow

F = FieldDescriptor
EXAMPLES = 20
# Streams are read this long at most (an open watch waits for changes).
STREAM_SECONDS = 0.5
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
METHODS: list[MethodDescriptor] = [
    method
    for name in SERVICE_NAMES
    for method in descriptor_pool.Default().FindServiceByName(name).methods
]
TRICKY_STRINGS = [
    "",
    "0",
    "@",
    "@a",
    "@" + "a" * 200,
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    str(2**63),
    "9" * 50,
    "-1",
    "a" * 5000,
    "\x00",
    "\u202e",
    "🙂",
    "generation_id desc",
    "*",
]
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == F.TYPE_STRING:
        return st.one_of(st.sampled_from(TRICKY_STRINGS), st.text(max_size=40), st.uuids().map(str))
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=200)
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind == F.TYPE_ENUM:
        return st.integers(-3, 12)  # numbers outside the enum too (proto3 keeps them)
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        return st.one_of(st.sampled_from([low, high, 0, -1, 1]), st.integers(low, high))
    return st.floats(allow_nan=True, allow_infinity=True, width=32 if kind == F.TYPE_FLOAT else 64)


@st.composite
def message_of(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    """Any message of this type: each field unset or set to any value of its type."""
    message = message_factory.GetMessageClass(descriptor)()
    name = descriptor.full_name
    if name == "google.protobuf.Struct":
        message.update(draw(st.dictionaries(st.text(max_size=8), JSON, max_size=4)))
        return message
    if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        message.seconds = draw(scalar_int64)
        message.nanos = draw(st.integers(-(2**31), 2**31 - 1))
        return message
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.type == F.TYPE_MESSAGE:
            if depth >= 3:
                continue
            target = getattr(message, field.name)
            if field.message_type.GetOptions().map_entry:
                key_field, value_field = field.message_type.fields
                for _ in range(draw(st.integers(0, 2))):
                    key = draw(scalar(key_field))
                    if value_field.type == F.TYPE_MESSAGE:
                        target[key].CopyFrom(draw(message_of(value_field.message_type, depth + 1)))
                    else:
                        target[key] = draw(scalar(value_field))
            elif field.is_repeated:
                for _ in range(draw(st.integers(0, 2))):
                    target.add().CopyFrom(draw(message_of(field.message_type, depth + 1)))
            else:
                target.CopyFrom(draw(message_of(field.message_type, depth + 1)))
        elif field.is_repeated:
            getattr(message, field.name).extend(draw(st.lists(scalar(field), max_size=3)))
        else:
            setattr(message, field.name, draw(scalar(field)))
    return message


scalar_int64 = st.one_of(
    st.sampled_from([-(2**63), 2**63 - 1, 0, 315_576_000_001]), st.integers(-(2**63), 2**63 - 1)
)


@st.composite
def mutated(draw: st.DrawFn, descriptor: Descriptor) -> bytes:
    """A real serialization with bytes flipped, cut or inserted, or random bytes outright."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = bytearray(draw(message_of(descriptor)).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and where < len(data):
            data[where] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[where:]
        else:
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("fuzz-grpc") / "data").start()
    try:
        yield server
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()[-5000:]


def _full_name(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def _call(
    channel: grpc.aio.Channel, method: MethodDescriptor, payload: bytes, key: str
) -> grpc.StatusCode:
    """Send raw request bytes; the status code the call ends with."""
    metadata = (("x-api-key", key),)
    name = _full_name(method)
    try:
        if method.server_streaming:
            stream = channel.unary_stream(name)(payload, metadata=metadata, timeout=STREAM_SECONDS)
            async for _ in stream:
                pass
        else:
            await channel.unary_unary(name)(payload, metadata=metadata, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("mode", ["messages", "bytes"])
@pytest.mark.parametrize("method", METHODS, ids=[_full_name(m) for m in METHODS])
async def test_no_internal_errors(served: Served, method: MethodDescriptor, mode: str) -> None:
    key = (
        served.admin_key() if method.containing_service.name == "AdminService" else served.api_key()
    )
    strategy = (
        message_of(method.input_type).map(lambda m: m.SerializeToString())
        if mode == "messages"
        else mutated(method.input_type)
    )
    # Hypothesis draws the payloads up front (it cannot drive an async call itself).
    payloads: list[bytes] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(payload=strategy)
    def draw(payload: bytes) -> None:
        payloads.append(payload)

    draw()
    async with grpc.aio.insecure_channel(served.grpc_address) as channel:
        for payload in payloads:
            code = await _call(channel, method, payload, key)
            assert code not in FORBIDDEN, (_full_name(method), code, payload[:200])
