"""Checks of the headers the gateway forwards, made before anything else about a request."""

from __future__ import annotations

from starlette.requests import Request

from server.gateway.errors import GatewayError

UNAUTHENTICATED = {"www-authenticate": 'ApiKey header="X-API-Key"'}
# Same bounds as the API's: an id is logged and echoed, so printable ASCII only.
CORRELATION_ID_MAX_CHARS = 128
# Real keys are well under 100 characters; anything much longer is not a key, and
# forwarding it could pass gRPC's metadata size limit (answered RESOURCE_EXHAUSTED).
API_KEY_MAX_CHARS = 512


def printable_ascii(value: str) -> bool:
    """Visible ASCII and spaces only: no control characters, nothing outside ASCII."""
    return value.isascii() and value.isprintable()


def valid_correlation_id(value: str) -> bool:
    """Whether a caller's X-Request-Id may be used as the correlation id."""
    return 0 < len(value) <= CORRELATION_ID_MAX_CHARS and printable_ascii(value)


def refusal(request: Request) -> GatewayError | None:
    """Why the headers alone make the request fail, or None.

    The API key is checked for presence and shape here, before the body is read, so a
    call without a key is 401 whatever its body (a well-formed key is checked by the API).
    """
    given_id = request.headers.get("x-request-id")
    if given_id is not None and not valid_correlation_id(given_id.strip()):
        return GatewayError(
            400,
            "INVALID_CORRELATION_ID",
            f"X-Request-Id must be 1 to {CORRELATION_ID_MAX_CHARS} printable ASCII characters; "
            "this request's id is in the X-Request-Id response header",
            grpc_status="INVALID_ARGUMENT",
        )
    key = request.headers.get("x-api-key", "").strip()
    if not key:
        return GatewayError(
            401,
            "API_KEY_MISSING",
            "an API key is required in the X-API-Key header",
            headers=UNAUTHENTICATED,
            grpc_status="UNAUTHENTICATED",
        )
    if len(key) > API_KEY_MAX_CHARS or not printable_ascii(key):
        return GatewayError(
            401,
            "API_KEY_INVALID",
            "the API key is malformed",
            headers=UNAUTHENTICATED,
            grpc_status="UNAUTHENTICATED",
        )
    return None
