"""Request bodies read under a hard size cap: no client makes the gateway buffer unbounded input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from server.gateway.errors import GatewayError

# Bodies of every route but uploads: the largest is a generation with 16 KiB of meta.
JSON_LIMIT = 1024 * 1024
# An upload as JSON carries its bytes in base64: 5 MiB of picture is 6.7 MiB of text.
UPLOAD_JSON_LIMIT = 8 * 1024 * 1024
# After refusing a body, read (and throw away) up to this much more of it so that an
# ordinary client, still sending, gets to read the 413 instead of a reset connection.
DRAIN_LIMIT = 16 * 1024 * 1024


def too_large(limit: int, what: str = "request body") -> GatewayError:
    """The 413 for a body over ``limit`` bytes."""
    return GatewayError(413, "PAYLOAD_TOO_LARGE", f"the {what} is larger than {limit:,} bytes")


def declared_length(request: Request) -> int | None:
    """The Content-Length the client declared, if any (a bad one is a 400)."""
    text = request.headers.get("content-length")
    if text is None:
        return None
    try:
        length = int(text)
    except ValueError:
        raise GatewayError(400, "BAD_REQUEST", "Content-Length is not a number") from None
    if length < 0:
        raise GatewayError(400, "BAD_REQUEST", "Content-Length is negative")
    return length


async def drain(chunks: AsyncIterator[bytes], budget: int = DRAIN_LIMIT) -> None:
    """Discard what is left of a refused body, up to ``budget`` bytes (then give up)."""
    async for chunk in chunks:
        budget -= len(chunk)
        if budget < 0:
            return


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or a 413 as soon as it passes ``limit`` bytes."""
    length = declared_length(request)
    chunks = request.stream()
    if length is not None and length > limit:
        if length - limit <= DRAIN_LIMIT:
            await drain(chunks)
        raise too_large(limit)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            await drain(chunks)
            raise too_large(limit)
    return bytes(body)


def is_json(content_type: str) -> bool:
    """application/json, any ``+json`` type, or no type at all (curl -d sends a form type)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json", "application/x-www-form-urlencoded") or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body (an empty body is ``{}``), or 400 MALFORMED_JSON / 413 / 415."""
    content_type = request.headers.get("content-type", "")
    if not is_json(content_type):
        raise GatewayError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"send the body as application/json, not {content_type.split(';')[0]!r}",
        )
    raw = await read_limited(request, limit)
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise GatewayError(400, "MALFORMED_JSON", "the request body is not UTF-8") from None
    except json.JSONDecodeError as error:
        raise GatewayError(
            400,
            "MALFORMED_JSON",
            f"the request body is not valid JSON: {error.msg} at line {error.lineno} "
            f"column {error.colno}",
        ) from None
