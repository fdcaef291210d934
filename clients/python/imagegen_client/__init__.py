"""imagegen_client: the Python SDK of the imagegen service (distribution imagegen-client).

``Client`` (blocking) and ``AsyncClient`` (asyncio) call every RPC of
imagegen.v1, plus ``generate`` (prompt → :class:`GeneratedImage`), ``run``
and ``wait`` (which raise :class:`GenerationFailed`), and raise
:class:`ImagegenError` subclasses; the enums name the API's values. The
``imagegen`` command is :mod:`imagegen_client.launcher` (the ``[cli]`` extra).
"""

from imagegen_client.aio import AsyncClient
from imagegen_client.enums import (
    AliasScope,
    AspectRatio,
    EnhancementTemplate,
    GenerationEventType,
    GenerationStatus,
    ImageSource,
    OutputFormat,
)
from imagegen_client.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    GenerationFailed,
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
from imagegen_client.transfer import DownloadedImage, GeneratedImage
from imagegen_client.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "NO_RETRY",
    "Aborted",
    "AliasScope",
    "AlreadyExists",
    "AspectRatio",
    "AsyncClient",
    "Cancelled",
    "Client",
    "DataLoss",
    "DeadlineExceeded",
    "DownloadedImage",
    "EnhancementTemplate",
    "FailedPrecondition",
    "FieldViolation",
    "GeneratedImage",
    "GenerationEventType",
    "GenerationFailed",
    "GenerationStatus",
    "ImageSource",
    "ImagegenError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "OutputFormat",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "WebhookVerificationError",
    "live_url",
    "verify_webhook",
]
