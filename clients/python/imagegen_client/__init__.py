"""imagegen clients: the Python SDK and CLI (the Node client lives in clients/node).

``Client`` (blocking) and ``AsyncClient`` (asyncio) call every RPC of
imagegen.v1 and raise :class:`ImagegenError` subclasses; the CLI is
``clients.cli`` (the ``imagegen`` command's client side).
"""

from imagegen_client.aio import AsyncClient
from imagegen_client.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    ImagegenError,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from imagegen_client.live import live_url
from imagegen_client.retries import NO_RETRY, RetryPolicy
from imagegen_client.sync import Client
from imagegen_client.transfer import DownloadedImage

__all__ = [
    "NO_RETRY",
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "Cancelled",
    "Client",
    "DataLoss",
    "DeadlineExceeded",
    "DownloadedImage",
    "FailedPrecondition",
    "FieldViolation",
    "ImagegenError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "live_url",
]
