"""The Image resource as the domain sees it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


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
