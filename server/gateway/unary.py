"""Unary RPCs over HTTP: build the request, make the call, answer in the envelope."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from genrpc.imagegen.v1 import generation_pb2
from server.gateway import keycheck, upload, waiting
from server.gateway.bodies import JSON_LIMIT, UPLOAD_JSON_LIMIT, read_json
from server.gateway.descriptors import of
from server.gateway.errors import GatewayError, invalid_fields
from server.gateway.requests import apply_idempotency_key, from_json, from_query
from server.gateway.responses import envelope, unary_reply
from server.gateway.routing import Binding
from server.gateway.state import Gateway
from server.gateway.upstream import (
    call_metadata,
    correlation_id,
    request_class,
)

# A bound on every unary call, so a wedged API cannot hold HTTP requests forever.
CALL_TIMEOUT_SECONDS = 60.0


async def build_request(binding: Binding, request: Request) -> Message:
    """The request message: path variables, then the body (``body: "*"``) or the query."""
    message = request_class(binding.method)()
    path = binding.path_fields(request.path_params)
    params = request.query_params.multi_items()
    if binding.body == "*":
        if params:
            raise invalid_fields(
                [
                    (name, "this route takes its fields in the body, not the query")
                    for name, _ in params
                ]
            )
        if upload.is_multipart(request):
            await upload.from_multipart(message, request, path)
        else:
            limit = UPLOAD_JSON_LIMIT if upload.bytes_field(of(message)) else JSON_LIMIT
            from_json(message, await read_json(request, limit), exclude=path)
            from_query(message, [], path=path)
    elif binding.body:
        # One field is the body; the rest come from the path and the query.
        body_field = of(message).fields_by_name[binding.body]
        from_json(message, {body_field.json_name: await read_json(request, JSON_LIMIT)})
        from_query(message, params, path=path)
    else:
        from_query(message, params, path=path)
    apply_idempotency_key(message, request.headers.get("idempotency-key"))
    return message


def _path_only(binding: Binding, descriptor: Descriptor) -> bool:
    """Whether a request without a query is its path variables alone, each a top-level
    string field (``GET /generations/{id}``): no JSON tree or parser is needed to build it."""
    if binding.body:
        return False
    fields = descriptor.fields_by_name
    for name in binding.variables:
        field = fields.get(name)
        if field is None or field.type != FieldDescriptor.TYPE_STRING or field.is_repeated:
            return False
    return True


class Unary:
    """Answers one binding's HTTP requests with one unary call each (and, when asked, a
    Prefer wait); what depends only on the binding is worked out once."""

    def __init__(self, gateway: Gateway, binding: Binding) -> None:
        self.gateway = gateway
        self.binding = binding
        self.request_class = request_class(binding.method)
        self.path_only = _path_only(binding, of(self.request_class()))
        self.waits = waiting.waits(binding)
        self.status = 201 if binding.creates else 200

    async def build(self, request: Request) -> Message:
        """The request message (``build_request``, without its parsing when the path alone
        fills it: a string set from a path variable is what json_format would set)."""
        if self.path_only and not request.scope.get("query_string"):
            binding = self.binding
            message = self.request_class(**binding.path_fields(request.path_params))
            apply_idempotency_key(message, request.headers.get("idempotency-key"))
            return message
        return await build_request(self.binding, request)

    async def __call__(self, request: Request) -> Response:
        gateway, binding = self.gateway, self.binding
        cid = correlation_id(request)
        try:
            message = await self.build(request)
        except GatewayError as error:
            return await keycheck.refuse(gateway, binding, request, error, cid)
        metadata = call_metadata(request.headers, cid)
        call = gateway.upstream.unary(binding.method)(
            message, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS
        )
        answered = await unary_reply(call, cid)
        if isinstance(answered, Response):
            return answered
        reply, headers = answered
        wait = waiting.preferred_wait(request.headers.get("prefer")) if self.waits else None
        if wait is not None and isinstance(reply, generation_pb2.Generation):
            reply = await waiting.until_done(gateway, reply, metadata, wait)
            headers["preference-applied"] = f"wait={wait}"
        body = envelope(reply, binding.response_body)
        return JSONResponse(body, status_code=self.status, headers=headers)
