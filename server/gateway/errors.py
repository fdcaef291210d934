"""Errors the gateway answers itself, and the gRPC status code → HTTP status table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

# The standard mapping (google.rpc.Code's documented HTTP equivalents, as grpc-gateway
# uses). FAILED_PRECONDITION is 400, not 412: HTTP's 412 means "a conditional header
# (If-Match, If-Unmodified-Since) was false", and no imagegen precondition is a header;
# the ErrorInfo reason in the body ("REQUEST_ID_REUSED", "FLOW_HAS_NO_GENERATIONS") tells
# the cases apart.
HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status that matches a gRPC status code."""
    return HTTP_STATUS.get(code, 500)


class GatewayError(Exception):
    """A request the gateway refuses before (or instead of) calling the API.

    ``code`` is an UPPER_SNAKE reason like the API's own ErrorInfo reasons;
    ``violations`` are (field, description) pairs with the field as the client wrote it.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        violations: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        grpc_status: str | None = None,
    ) -> None:
        super().__init__(message)
        # The gRPC code name the API would answer with, when the gateway answers for it.
        self.grpc_status = grpc_status
        self.status = status
        self.code = code
        self.message = message
        self.violations = tuple(violations)
        self.headers = dict(headers or {})


def invalid_fields(violations: Sequence[tuple[str, str]], what: str = "request") -> GatewayError:
    """A 400 VALIDATION_ERROR naming every bad field (the API's own reason for bad fields)."""
    listed = "; ".join(f"{field}: {description}" for field, description in violations)
    return GatewayError(400, "VALIDATION_ERROR", f"invalid {what}: {listed}", violations)
