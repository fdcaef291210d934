"""gRPC replies and errors shaped into the REST envelope: camelCase, short enums, pagination."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from starlette.responses import JSONResponse

from server.gateway.descriptors import (
    is_map,
    is_message,
    of,
)
from server.gateway.errors import GatewayError, http_status

# Re-exported: server/app.py renders its webhook payloads with it.
from server.gateway.rendering import render as render
from server.gateway.upstream import reply_headers

# The fields of a list response that describe the page rather than hold its items.
PAGING_FIELDS = ("total", "limit", "offset", "has_more", "next_page_token")


def list_field(descriptor: Descriptor) -> FieldDescriptor | None:
    """The items field of a list response: its one repeated message field besides paging."""
    others = [f for f in descriptor.fields if f.name not in PAGING_FIELDS]
    if (
        len(others) == 1
        and others[0].is_repeated
        and is_message(others[0])
        and not is_map(others[0])
    ):
        return others[0]
    return None


def envelope(message: Message, response_body: str = "") -> dict[str, Any]:
    """``{"success": true, "data": …}`` for a reply.

    A list response (ListGenerationsResponse and the like) puts its items in ``data`` as
    an array and its paging fields in ``pagination``: ``total``, ``limit``, ``offset``,
    ``hasMore`` and, where the API has keyset paging, ``nextPageToken`` (empty on the last
    page) to pass back as ``pageToken``.
    """
    data = render(message)
    if response_body:
        field = of(message).fields_by_name[response_body]
        return {"success": True, "data": data.get(field.json_name)}
    shape = _shapes.get(of(message).full_name)
    if shape is None:
        shape = _shapes[of(message).full_name] = _shape(of(message))
    items, paging = shape
    if items is None:
        return {"success": True, "data": data}
    body: dict[str, Any] = {"success": True, "data": data.get(items, [])}
    if paging:
        body["pagination"] = {name: data.get(name) for name in paging}
    return body


# Per reply type: the JSON name of its items field (a list response) and of its paging fields.
_shapes: dict[str, tuple[str | None, tuple[str, ...]]] = {}


def _shape(descriptor: Descriptor) -> tuple[str | None, tuple[str, ...]]:
    items = list_field(descriptor)
    if items is None:
        return None, ()
    return items.json_name, tuple(f.json_name for f in descriptor.fields if f.name in PAGING_FIELDS)


# --- errors --------------------------------------------------------------------------------


def camel_path(path: str) -> str:
    """A field path as the client spelled it: ``reference_images[1]`` → ``referenceImages[1]``."""
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), path)


def error_body(
    code: str,
    message: str,
    *,
    status: str | None = None,
    violations: Sequence[tuple[str, str]] = (),
    metadata: Mapping[str, str] | None = None,
    retry_after: float | None = None,
) -> dict[str, Any]:
    """``{"success": false, "error": {"code", "message", "status"?, "details"?}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if status:
        error["status"] = status
    details: dict[str, Any] = {}
    if violations:
        details["fieldViolations"] = [
            {"field": field, "description": description} for field, description in violations
        ]
    if metadata:
        details["metadata"] = dict(metadata)
    if retry_after is not None:
        details["retryAfterSeconds"] = retry_after
    if details:
        error["details"] = details
    return {"success": False, "error": error}


def gateway_error(error: GatewayError, headers: Mapping[str, str]) -> JSONResponse:
    """The response for an error the gateway found itself."""
    body = error_body(
        error.code, error.message, status=error.grpc_status, violations=error.violations
    )
    return JSONResponse(body, status_code=error.status, headers={**headers, **error.headers})


class RpcFailure:
    """What a failed call said: status code, message, ErrorInfo, BadRequest and RetryInfo."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        self.code = error.code()
        self.message = error.details() or self.code.name
        self.reason = ""
        self.metadata: dict[str, str] = {}
        self.violations: list[tuple[str, str]] = []
        self.retry_after: float | None = None
        try:
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
        except ValueError:  # details that contradict the code: trust the code alone
            status = None
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                self.reason = info.reason
                self.metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                self.violations = [
                    (camel_path(v.field), v.description) for v in bad.field_violations
                ]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                self.retry_after = retry.retry_delay.ToNanoseconds() / 1e9

    @property
    def http_status(self) -> int:
        """The HTTP status matching the gRPC code."""
        return http_status(self.code)

    def body(self) -> dict[str, Any]:
        """The error envelope: ``code`` is the ErrorInfo reason, or else the gRPC code name."""
        return error_body(
            self.reason or self.code.name,
            self.message,
            status=self.code.name,
            violations=self.violations,
            metadata=self.metadata,
            retry_after=self.retry_after,
        )

    def headers(self) -> dict[str, str]:
        """Retry-After (whole seconds, rounded up) when the API sent a RetryInfo."""
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        if self.code == grpc.StatusCode.UNAUTHENTICATED:
            headers["WWW-Authenticate"] = 'ApiKey header="X-API-Key"'
        return headers


async def unary_reply(
    call: grpc.aio.UnaryUnaryCall[Any, Any], cid: str
) -> tuple[Any, dict[str, str]] | JSONResponse:
    """A unary call's reply and the HTTP headers its metadata makes or, when the call
    failed, the HTTP response for its status."""
    try:
        reply = await call
        # A unary call's headers come with its status (server/api/interceptors.py).
        trailing = await call.trailing_metadata()
    except grpc.aio.AioRpcError as error:
        return rpc_error(
            error, reply_headers(cid, error.initial_metadata(), error.trailing_metadata())
        )
    return reply, reply_headers(cid, trailing)


def rpc_error(error: grpc.aio.AioRpcError, headers: Mapping[str, str]) -> JSONResponse:
    """The response for a failed call, with the HTTP status that matches its code."""
    failure = RpcFailure(error)
    return JSONResponse(
        failure.body(), status_code=failure.http_status, headers={**headers, **failure.headers()}
    )
