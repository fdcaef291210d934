"""multipart/form-data uploads: a ``file`` part plus form fields, read under hard size caps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from server.gateway.bodies import DRAIN_LIMIT, declared_length, drain, parse_json, too_large
from server.gateway.descriptors import field_map, of
from server.gateway.errors import GatewayError, invalid_fields
from server.gateway.requests import from_json, from_query

FILE_PART = "file"
# The contract's limit on an uploaded picture (UploadImageRequest.content).
FILE_LIMIT = 5 * 1024 * 1024
# Each other part: alias, flow ids, and meta (the API allows 16 KiB of it).
FIELD_LIMIT = 64 * 1024
MAX_PARTS = 16
# The whole body: the picture, the other parts and their headers and boundaries.
BODY_LIMIT = FILE_LIMIT + 256 * 1024


def is_multipart(request: Request) -> bool:
    """Whether the request body is multipart/form-data."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == "multipart/form-data"


def bytes_field(descriptor: Descriptor) -> FieldDescriptor | None:
    """The one ``bytes`` field a multipart ``file`` part fills (UploadImageRequest.content)."""
    found = [
        f for f in descriptor.fields if f.type == FieldDescriptor.TYPE_BYTES and not f.is_repeated
    ]
    return found[0] if len(found) == 1 else None


@dataclass
class Part:
    """One part of the form as it is read."""

    name: str = ""
    filename: str | None = None
    content_type: str = ""
    data: bytearray = field(default_factory=bytearray)


class _Form:
    """python-multipart callbacks collecting parts, refusing any part over its cap."""

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self._part = Part()
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}

    def on_part_begin(self) -> None:
        self._part = Part()
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise GatewayError(400, "MALFORMED_MULTIPART", "a form part has no name")
        self._part.name = name.decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._part.filename = None if filename is None else filename.decode("utf-8", "replace")
        self._part.content_type = self._headers.get(b"content-type", b"").decode("latin-1")
        if len(self.parts) >= MAX_PARTS:
            raise GatewayError(400, "MALFORMED_MULTIPART", f"more than {MAX_PARTS} form parts")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        limit = FILE_LIMIT if part.name == FILE_PART else FIELD_LIMIT
        if len(part.data) + (end - start) > limit:
            raise too_large(limit, f"form part {part.name!r}")
        part.data += data[start:end]

    def on_part_end(self) -> None:
        self.parts.append(self._part)


async def read_form(request: Request) -> list[Part]:
    """The form's parts, or 413 as soon as the body or one part passes its cap."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise GatewayError(400, "MALFORMED_MULTIPART", "multipart/form-data needs a boundary")
    chunks = request.stream()
    length = declared_length(request)
    if length is not None and length > BODY_LIMIT:
        if length - BODY_LIMIT <= DRAIN_LIMIT:
            await drain(chunks)
        raise too_large(BODY_LIMIT)
    form = _Form()
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": form.on_part_begin,
            "on_part_data": form.on_part_data,
            "on_part_end": form.on_part_end,
            "on_header_field": form.on_header_field,
            "on_header_value": form.on_header_value,
            "on_header_end": form.on_header_end,
            "on_headers_finished": form.on_headers_finished,
        },
    )
    seen = 0
    try:
        async for chunk in chunks:
            seen += len(chunk)
            if seen > BODY_LIMIT:
                raise too_large(BODY_LIMIT)
            parser.write(chunk)
        parser.finalize()
    except GatewayError as error:
        if error.status == 413:
            await drain(chunks)
        raise
    except FormParserError as error:
        raise GatewayError(
            400, "MALFORMED_MULTIPART", f"the multipart body is malformed: {error}"
        ) from None
    return form.parts


async def from_multipart(message: Message, request: Request, path: Mapping[str, str]) -> None:
    """Fill an upload request from a form: the ``file`` part is the picture; the other parts
    are fields by JSON or proto name (``alias``, ``flowId``, ``flowAlias``, ``requestId``,
    ``meta`` as a JSON object string). The file part's Content-Type, when it is an image
    type, is the claimed ``mime_type`` (the API checks it against the bytes)."""
    target = bytes_field(of(message))
    if target is None:
        raise GatewayError(415, "UNSUPPORTED_MEDIA_TYPE", "this route takes a JSON body")
    parts = await read_form(request)
    fields = field_map(of(message))
    violations: list[tuple[str, str]] = []
    files = [p for p in parts if p.name in (FILE_PART, target.name, target.json_name)]
    if len(files) != 1:
        problem = "is required" if not files else "must be given once"
        raise invalid_fields([(FILE_PART, f"a {FILE_PART!r} part {problem}")], "form")
    scalars: list[tuple[str, str]] = []
    objects: dict[str, Any] = {}
    for part in parts:
        if part in files:
            continue
        found = fields.get(part.name)
        try:
            text = part.data.decode("utf-8")
        except UnicodeDecodeError:
            violations.append((part.name, "is not UTF-8 text"))
            continue
        if found is None:
            violations.append((part.name, "unknown field"))
        elif found.type == FieldDescriptor.TYPE_MESSAGE:
            try:
                objects[part.name] = parse_json(text) if text.strip() else {}
            except GatewayError as error:
                violations.append((part.name, error.message))
        else:
            scalars.append((part.name, text))
    if violations:
        raise invalid_fields(violations, "form")
    if objects:
        from_json(message, objects)
    from_query(message, scalars, path=path, what="form")
    picture = files[0]
    setattr(message, target.name, bytes(picture.data))
    claimed = picture.content_type.split(";", 1)[0].strip().lower()
    mime = of(message).fields_by_name.get("mime_type")
    if mime is not None and claimed.startswith("image/") and not getattr(message, mime.name):
        setattr(message, mime.name, claimed)
