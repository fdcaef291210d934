"""Typed client errors keyed by gRPC status code, and the one seam that builds them."""

# The subclasses are named after the status codes (NotFound, Unavailable …), as
# in google-api-core, so an "Error" suffix would only repeat the base class.
# ruff: noqa: N818

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from imagegen_client._genrpc.imagegen.v1 import generation_pb2

# Trailing metadata key under which servers send the google.rpc.Status with its details.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# The correlation id of a call: the server's id for it in its logs (not the
# idempotency key, which is a request's ``request_id`` field).
CORRELATION_KEY = "x-request-id"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field named by the server (google.rpc.BadRequest)."""

    field: str
    description: str


class ImagegenError(Exception):
    """An imagegen call that did not succeed.

    ``code`` is the gRPC status code; ``reason`` the stable UPPER_SNAKE reason
    of google.rpc.ErrorInfo (empty when the server sent none, for example when
    it could not be reached); ``field_violations`` the bad fields of an
    INVALID_ARGUMENT; ``retry_delay`` the seconds the server asked the caller
    to wait (google.rpc.RetryInfo); ``correlation_id`` the server's id of the
    call, for its logs (the x-request-id header).
    """

    default_code = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        retry_delay: float | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.field_violations = field_violations
        self.retry_delay = retry_delay
        self.correlation_id = correlation_id

    def __str__(self) -> str:
        head = f"{self.code.name} {self.reason}" if self.reason else self.code.name
        return f"{head}: {self.message}" if self.message else head

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, correlation_id={self.correlation_id!r})"


class Cancelled(ImagegenError):
    """The call was cancelled (usually by the caller)."""

    default_code = grpc.StatusCode.CANCELLED


class Unknown(ImagegenError):
    """The server failed in a way it did not classify."""

    default_code = grpc.StatusCode.UNKNOWN


class InvalidArgument(ImagegenError):
    """The request is malformed; ``field_violations`` says which fields and why."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(ImagegenError, TimeoutError):
    """The call (retries included) did not finish within its deadline."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(ImagegenError):
    """The resource does not exist in the caller's project."""

    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ImagegenError):
    """The resource (for example an alias) is already taken."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ImagegenError):
    """The key is valid but may not call this method (admin vs project key)."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ImagegenError):
    """A limit was hit (for example the key's rate limit); see ``retry_delay``."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ImagegenError):
    """The system is not in a state the call needs."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ImagegenError):
    """The call conflicted with a concurrent change; retrying the whole operation may work."""

    default_code = grpc.StatusCode.ABORTED


class OutOfRange(ImagegenError):
    """A value was past the valid range."""

    default_code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(ImagegenError):
    """The server does not serve this method."""

    default_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ImagegenError):
    """The server failed unexpectedly; quote ``correlation_id`` when reporting it."""

    default_code = grpc.StatusCode.INTERNAL


class Unavailable(ImagegenError):
    """The server could not be reached or is shutting down; safe calls are retried."""

    default_code = grpc.StatusCode.UNAVAILABLE


class DataLoss(ImagegenError):
    """Data was lost or corrupted (for example a download shorter than announced)."""

    default_code = grpc.StatusCode.DATA_LOSS


class GenerationFailed(ImagegenError):
    """A generation ended FAILED or CANCELLED (raised by ``wait``, ``run`` and ``generate``).

    The calls themselves succeeded, so ``code`` is ABORTED (the work stopped
    without an image); ``reason`` is the generation's error code (for example
    ``GENERATION_FAILED``), ``message`` its error message, and ``generation``
    the failed generation as the server last sent it.
    """

    default_code = grpc.StatusCode.ABORTED

    def __init__(self, generation: generation_pb2.Generation) -> None:
        super().__init__(
            generation.error.message or _ended(generation),
            reason=generation.error.code or _reason(generation),
        )
        self.generation = generation

    def __str__(self) -> str:
        head = f"{self.code.name} {self.reason}: generation {self.generation.id!r} failed"
        return f"{head}: {self.message}" if self.message else head


class Unauthenticated(ImagegenError):
    """The API key is missing, unknown, expired or revoked."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


ERRORS_BY_CODE: dict[grpc.StatusCode, type[ImagegenError]] = {
    cls.default_code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def error_for(code: grpc.StatusCode, message: str, **details: Any) -> ImagegenError:
    """The typed error for ``code`` (used by the SDK for failures it detects itself)."""
    cls = ERRORS_BY_CODE.get(code, ImagegenError)
    error: ImagegenError = cls(message, code=code, **details)
    return error


def from_rpc_error(error: grpc.RpcError) -> ImagegenError:
    """The seam: a failed gRPC call (sync or asyncio) as a typed ImagegenError.

    Reads the status code and message, the google.rpc.Status details from the
    trailing metadata (ErrorInfo, BadRequest, RetryInfo) and the correlation id
    the server sent in the initial metadata.
    """
    if not isinstance(error, grpc.aio.AioRpcError | grpc.Call):
        # Only grpc's own failures lack a Call (for example a closed channel).
        return error_for(grpc.StatusCode.UNKNOWN, str(error))
    code = error.code()
    message = error.details() or ""
    trailing = _metadata(error.trailing_metadata())
    initial = _metadata(error.initial_metadata())
    correlation_id = initial.get(CORRELATION_KEY) or trailing.get(CORRELATION_KEY)
    details: dict[str, Any] = {}
    raw = trailing.get(STATUS_DETAILS_KEY)
    if isinstance(raw, bytes):
        details = _status_details(raw)
    return error_for(
        code,
        message,
        correlation_id=correlation_id if isinstance(correlation_id, str) else None,
        **details,
    )


def _metadata(pairs: Any) -> dict[str, str | bytes]:
    # Sync calls return tuples of (key, value); aio calls a Metadata object;
    # either may be None when the call failed before any metadata arrived.
    result: dict[str, str | bytes] = {}
    for key, value in pairs or ():
        result.setdefault(str(key), value)
    return result


def _status_details(raw: bytes) -> dict[str, Any]:
    """ErrorInfo, BadRequest and RetryInfo out of a serialized google.rpc.Status."""
    found: dict[str, Any] = {}
    try:
        status = status_pb2.Status.FromString(raw)
    except Exception:  # a malformed status must not hide the error it came with
        return found
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            found["reason"] = str(info.reason)
            found["metadata"] = {str(k): str(v) for k, v in info.metadata.items()}
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found["field_violations"] = tuple(
                FieldViolation(str(v.field), str(v.description)) for v in bad.field_violations
            )
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            found["retry_delay"] = float(retry.retry_delay.ToNanoseconds()) / 1e9
    return found


def _ended(generation: generation_pb2.Generation) -> str:
    """What to say when the server gave no error message."""
    if generation.status == generation_pb2.GENERATION_STATUS_CANCELLED:
        return f"generation {generation.id} was cancelled"
    return f"generation {generation.id} failed"


def _reason(generation: generation_pb2.Generation) -> str:
    """The reason when the server gave no error code: a cancel is told apart from a failure."""
    if generation.status == generation_pb2.GENERATION_STATUS_CANCELLED:
        return "GENERATION_CANCELLED"
    return "GENERATION_FAILED"
