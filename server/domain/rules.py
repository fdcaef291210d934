"""The product's fixed rules: aspect ratios and their pixel sizes, templates, limits."""

from __future__ import annotations

from typing import Final

# Output pixel sizes per aspect ratio (spec §2.1).
ASPECT_RATIO_SIZES: Final[dict[str, tuple[int, int]]] = {
    "1:1": (1024, 1024),
    "16:9": (1792, 1008),
    "9:16": (1008, 1792),
    "3:2": (1536, 1024),
    "21:9": (2016, 864),
}
DEFAULT_ASPECT_RATIO: Final = "1:1"

ENHANCEMENT_TEMPLATES: Final[tuple[str, ...]] = (
    "general",
    "photorealistic",
    "illustration",
    "minimalist",
    "sticker",
    "product",
    "comic",
)
DEFAULT_ENHANCEMENT_TEMPLATE: Final = "general"

PROMPT_MAX_CHARS: Final = 4000
META_MAX_BYTES: Final = 16 * 1024
REQUEST_ID_MAX_CHARS: Final = 64
MAX_REFERENCES: Final = 3
LIST_DEFAULT_LIMIT: Final = 20
LIST_MAX_LIMIT: Final = 100
UPLOAD_MAX_BYTES: Final = 5 * 1024 * 1024
CONTENT_CHUNK_BYTES: Final = 64 * 1024
