"""The API's enumerations as Python enums with names (the proto enums are bare integers)."""

from __future__ import annotations

import enum


class _Named(enum.IntEnum):
    """An IntEnum that prints its name (``SUCCESS``), not its number as IntEnum does."""

    def __str__(self) -> str:
        return self.name


class GenerationStatus(_Named):
    """Where a generation is (imagegen.v1.GenerationStatus without its prefix).

    Compares equal to the proto's integers: ``GenerationStatus(g.status)`` names one.
    """

    UNSPECIFIED = 0
    PENDING = 1
    PROCESSING = 2
    SUCCESS = 3
    FAILED = 4
    CANCELLED = 5


class GenerationEventType(_Named):
    """What a watch event says happened (imagegen.v1.GenerationEventType)."""

    UNSPECIFIED = 0
    SNAPSHOT = 1
    CREATED = 2
    UPDATED = 3
    DELETED = 4


class ImageSource(_Named):
    """Where an image came from (imagegen.v1.ImageSource)."""

    UNSPECIFIED = 0
    GENERATED = 1
    UPLOADED = 2


class AliasScope(_Named):
    """Where an alias was found (imagegen.v1.AliasScope)."""

    UNSPECIFIED = 0
    TECHNICAL = 1
    FLOW = 2
    PROJECT = 3


class AspectRatio(enum.StrEnum):
    """The aspect ratios a generation may ask for (a string in the API)."""

    SQUARE = "1:1"
    LANDSCAPE = "16:9"
    PORTRAIT = "9:16"
    CLASSIC = "3:2"
    ULTRAWIDE = "21:9"


class EnhancementTemplate(enum.StrEnum):
    """The styles the prompt enhancer knows (a string in the API)."""

    GENERAL = "general"
    PHOTOREALISTIC = "photorealistic"
    ILLUSTRATION = "illustration"
    MINIMALIST = "minimalist"
    STICKER = "sticker"
    PRODUCT = "product"
    COMIC = "comic"


class OutputFormat(enum.StrEnum):
    """The encodings a generation may ask for (a string in the API; empty: the default)."""

    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"
