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
# JSON nested deeper than this is refused: no request field nests anywhere near it, and
# the protobuf JSON parser stops at 100 levels.
MAX_JSON_DEPTH = 64
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
    return parse_json(raw)


def parse_json(raw: bytes | str) -> Any:
    """Parsed JSON, or 400 MALFORMED_JSON (not JSON, not UTF-8, NaN or Infinity, too deep)."""
    try:
        parsed = json.loads(raw, parse_constant=_refuse_constant)
    except _NonFiniteNumberError as error:
        raise GatewayError(
            400, "MALFORMED_JSON", f"the request body has {error}: JSON numbers are finite"
        ) from None
    except RecursionError:
        raise too_deep() from None
    except UnicodeDecodeError:
        raise GatewayError(400, "MALFORMED_JSON", "the request body is not UTF-8") from None
    except json.JSONDecodeError as error:
        raise GatewayError(
            400,
            "MALFORMED_JSON",
            f"the request body is not valid JSON: {error.msg} at line {error.lineno} "
            f"column {error.colno}",
        ) from None
    if depth(parsed) > MAX_JSON_DEPTH:
        raise too_deep()
    return parsed


class _NonFiniteNumberError(ValueError):
    """NaN, Infinity or -Infinity in a body (Python's json reads them; JSON has none)."""


def _refuse_constant(name: str) -> Any:
    raise _NonFiniteNumberError(name)


def too_deep() -> GatewayError:
    """The 400 for a body nested past MAX_JSON_DEPTH."""
    return GatewayError(
        400, "MALFORMED_JSON", f"the request body is nested deeper than {MAX_JSON_DEPTH} levels"
    )


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (iteratively: no recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest
