"""One classification of hosted-model failures: the codes, Retry-After, transport errors."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Final

from server.engine.generators.base import GeneratorError

# Codes a generation's error carries (spec §7).
CONTENT_BLOCKED: Final = "CONTENT_BLOCKED"
MODEL_UNAVAILABLE: Final = "MODEL_UNAVAILABLE"
NO_IMAGE_RETURNED: Final = "NO_IMAGE_RETURNED"
MALFORMED_RESPONSE: Final = "MALFORMED_RESPONSE"
RATE_LIMITED: Final = "RATE_LIMITED"
PROVIDER_UNAVAILABLE: Final = "PROVIDER_UNAVAILABLE"
PROVIDER_TIMEOUT: Final = "PROVIDER_TIMEOUT"
PROVIDER_REJECTED: Final = "PROVIDER_REJECTED"
REFERENCES_UNSUPPORTED: Final = "REFERENCES_UNSUPPORTED"
GENERATOR_ERROR: Final = "GENERATOR_ERROR"

# A provider's message is quoted, not pasted whole: it can be a long HTML page.
MESSAGE_MAX_CHARS: Final = 500


def short(text: object) -> str:
    """A provider's message on one line, cut to MESSAGE_MAX_CHARS."""
    line = " ".join(str(text).split())
    return line if len(line) <= MESSAGE_MAX_CHARS else line[: MESSAGE_MAX_CHARS - 1] + "…"


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _type_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def transient_or_none(exc: BaseException, provider: str) -> GeneratorError | None:
    """A timeout or connection failure of the HTTP layer (httpx and its successor alike)."""
    names = _type_names(exc)
    if isinstance(exc, TimeoutError) or names & {"TimeoutException", "APITimeoutError"}:
        return GeneratorError(
            PROVIDER_TIMEOUT, f"{provider} did not answer in time", transient=True
        )
    if isinstance(exc, ConnectionError) or names & {"TransportError", "APIConnectionError"}:
        return GeneratorError(
            PROVIDER_UNAVAILABLE,
            f"{provider} could not be reached ({type(exc).__name__})",
            transient=True,
        )
    return None


def by_http_status(
    status: int, message: str, provider: str, retry_after: float | None
) -> GeneratorError:
    """The classification of an HTTP error status with the provider's message."""
    if status == 429:
        return GeneratorError(
            RATE_LIMITED,
            f"{provider} is rate limiting requests: {message}",
            transient=True,
            retry_after=retry_after,
        )
    if status >= 500 or status in (408, 409):
        return GeneratorError(
            PROVIDER_UNAVAILABLE,
            f"{provider} failed ({status}): {message}",
            transient=True,
            retry_after=retry_after,
        )
    if status in (401, 403, 404):
        return GeneratorError(
            MODEL_UNAVAILABLE,
            f"{provider} refused the model ({status}): {message}",
            transient=False,
        )
    return GeneratorError(
        PROVIDER_REJECTED, f"{provider} rejected the request ({status}): {message}", transient=False
    )


def malformed(provider: str, exc: BaseException) -> GeneratorError:
    """An answer the SDK could not read (bad JSON, unexpected shape)."""
    return GeneratorError(
        MALFORMED_RESPONSE,
        f"{provider} sent an answer that could not be read ({type(exc).__name__}: {short(exc)})",
        transient=False,
    )
