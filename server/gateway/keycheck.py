"""Authentication before validation: a request the gateway would refuse for its body or
query is refused for its key first, when the API does not accept that key.

The gateway cannot tell a valid key from a well-formed unknown one (keys live behind the
API), and checking every key up front would cost every call a second round trip. So
only a request already headed for a 4xx of the gateway's own asks the API: it makes the
same RPC with bytes no message parses from. The API authenticates before it decodes, so
the answer is the key's refusal (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED,
UNAVAILABLE…) or, for an accepted key, INVALID_ARGUMENT MALFORMED_REQUEST, after which
the gateway's own refusal stands. Nothing runs with those bytes: no side effects.
"""

from __future__ import annotations

from typing import Final

import grpc
from starlette.requests import Request
from starlette.responses import Response

from server.gateway.errors import GatewayError
from server.gateway.responses import gateway_error, rpc_error
from server.gateway.routing import Binding
from server.gateway.state import Gateway
from server.gateway.upstream import CORRELATION_HEADER, call_metadata, full_method, reply_headers

# A field tag whose varint never ends: no protobuf message parses from it.
UNPARSEABLE: Final = b"\xff"
# The key check is one cheap call; bounded like any other.
CHECK_TIMEOUT_SECONDS: Final = 30.0


async def key_refusal(
    gateway: Gateway, binding: Binding, request: Request, cid: str
) -> Response | None:
    """The API's refusal of this request's key for ``binding``'s method, or None if the
    API accepts the key (the request's own problem is then the answer)."""
    name = full_method(binding.method)
    metadata = call_metadata(request.headers, cid)
    try:
        # No serializers: the bytes go as they are, and no answer is ever decoded.
        if binding.streaming:
            stream = gateway.upstream.channel.unary_stream(name, None, None)(
                UNPARSEABLE, metadata=metadata, timeout=CHECK_TIMEOUT_SECONDS
            )
            async for _ in stream:  # pragma: no cover - the API never answers these bytes
                break
            stream.cancel()
        else:
            await gateway.upstream.channel.unary_unary(name, None, None)(
                UNPARSEABLE, metadata=metadata, timeout=CHECK_TIMEOUT_SECONDS
            )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            return None  # authenticated; only then did the bytes fail to parse
        return rpc_error(
            error, reply_headers(cid, error.initial_metadata(), error.trailing_metadata())
        )
    return None  # pragma: no cover - an RPC that accepts any bytes has no key to check


async def refuse(
    gateway: Gateway, binding: Binding, request: Request, error: GatewayError, cid: str
) -> Response:
    """Answer the gateway's ``error`` about a request's body or query, unless its key is
    refused first (a bad key is 401 whatever the body)."""
    if 400 <= error.status < 500:
        refused = await key_refusal(gateway, binding, request, cid)
        if refused is not None:
            return refused
    return gateway_error(error, {CORRELATION_HEADER: cid})
