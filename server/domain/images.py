"""The Image resource as the domain sees it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from server.domain.aliases import TECHNICAL_ALIASES, is_alias
from server.domain.errors import DomainError, FieldViolation, Status, ValidationErrors, invalid
from server.domain.fields import FlowChoice
from server.domain.ids import is_uuid, require_uuid


class ImageSource(StrEnum):
    """Where an image came from."""

    GENERATED = "generated"
    UPLOADED = "uploaded"


@dataclass(frozen=True, slots=True)
class Image:
    """A stored picture (its bytes live in the blob store under ``object_key``)."""

    id: str
    project_id: str
    flow_id: str | None
    generation_id: str | None
    source: ImageSource
    alias: str | None
    mime_type: str
    file_size: int
    width: int
    height: int
    focal_point: tuple[float, float] | None
    meta: dict[str, Any]
    object_key: str
    etag: str
    create_time: datetime
    update_time: datetime


MIME_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True, slots=True)
class StoredContent:
    """One stored version of an image's bytes, as its row describes it."""

    object_key: str
    mime_type: str
    file_size: int
    width: int
    height: int
    etag: str

    @classmethod
    def describe(
        cls, object_key: str, data: bytes, mime_type: str, width: int, height: int
    ) -> StoredContent:
        """The description of ``data`` stored under ``object_key`` (its etag is a content hash)."""
        etag = hashlib.sha256(data).hexdigest()[:32]
        return cls(object_key, mime_type, len(data), width, height, etag)


# --- rules and commands of the ImageService ---

# Uploads are decoded to check them; this caps the pixels a small compressed
# file may expand to (a "decompression bomb"), well below Pillow's own limit.
UPLOAD_MAX_PIXELS: Final = 40_000_000
PRESIGN_DEFAULT_TTL: Final = timedelta(hours=1)
PRESIGN_MAX_TTL: Final = timedelta(days=7)
# Claimed media types that name an accepted format (a common misspelling included).
CLAIMED_MIME_TYPES: Final = {
    "image/png": "image/png",
    "image/jpeg": "image/jpeg",
    "image/jpg": "image/jpeg",
    "image/webp": "image/webp",
}


class AliasScope(StrEnum):
    """Where an alias was found: resolution tries technical, then flow, then project."""

    TECHNICAL = "technical"
    FLOW = "flow"
    PROJECT = "project"


@dataclass(frozen=True, slots=True)
class ResolvedAlias:
    """The image an alias names, and the scope it was found in."""

    image: Image
    scope: AliasScope


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A validated way to name one image: its ID, or an alias with an optional flow context."""

    id: str | None
    alias: str | None
    flow_id: str | None


def image_ref(field_name: str, value: str, flow_id: str = "") -> ImageRef:
    """Parse an "ID or @alias" field; INVALID_ARGUMENT if it is neither.

    A technical alias (@last, @first, @upload) means something only inside a
    flow, so it needs ``flow_id``.
    """
    if not value:
        raise invalid(field_name, "is required (an image ID or an @alias)")
    flow = require_uuid("flow_id", flow_id) if flow_id else None
    if is_uuid(value):
        return ImageRef(value.lower(), None, flow)
    if not is_alias(value):
        raise invalid(field_name, f"must be an image ID (UUID) or an @alias, got {value[:60]!r}")
    if value in TECHNICAL_ALIASES and flow is None:
        raise DomainError(
            Status.INVALID_ARGUMENT,
            "FLOW_CONTEXT_REQUIRED",
            f"{value} is a technical alias of a flow: set flow_id to resolve it",
            (FieldViolation("flow_id", f"is required to resolve {value}"),),
        )
    return ImageRef(None, value, flow)


@dataclass(frozen=True, slots=True)
class UploadImage:
    """A validated UploadImage request; the service checks the bytes by decoding them."""

    content: bytes = field(repr=False)
    mime_type: str | None
    alias: str | None
    flow: FlowChoice
    flow_alias: str | None
    meta: dict[str, Any]
    request_id: str | None


@dataclass(frozen=True, slots=True)
class UpdateImage:
    """A validated UpdateImage request: the fields in ``changed`` take these values."""

    focal_point: tuple[float, float] | None
    meta: dict[str, Any] | None
    changed: frozenset[str]


UPDATABLE_FIELDS: Final = frozenset({"focal_point", "meta"})


def check_focal_point(errors: ValidationErrors, x: float, y: float) -> tuple[float, float]:
    """The focal point, recording a violation for a coordinate outside 0..1 (or NaN)."""
    for name, value in (("x", x), ("y", y)):
        if not 0.0 <= value <= 1.0:  # also false for NaN
            errors.add(f"focal_point.{name}", f"must be between 0 and 1, got {value}")
    return (x, y)


def check_ttl(ttl: timedelta | None) -> timedelta:
    """A presigned URL lifetime: default one hour, more than zero and at most seven days."""
    if ttl is None:
        return PRESIGN_DEFAULT_TTL
    if ttl <= timedelta(0) or ttl > PRESIGN_MAX_TTL:
        raise invalid(
            "ttl", f"must be more than 0 and at most 7 days, got {ttl.total_seconds():g} s"
        )
    return ttl


@dataclass(frozen=True, slots=True)
class ImageChunk:
    """A piece of an image's bytes; the first one also carries the media type and total size."""

    data: bytes
    mime_type: str | None = None
    total_size: int | None = None


@dataclass(frozen=True, slots=True)
class SignedUrl:
    """A presigned object-store URL and when it stops working."""

    url: str
    expire_time: datetime
