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

# Hosted models (spec §7): `provider/model-name`; `local` is the built-in placeholder.
PROVIDERS: Final[tuple[str, ...]] = ("local", "openai", "gemini")
# A provider named without a model gets this one.
PROVIDER_DEFAULT_MODELS: Final[dict[str, str]] = {
    "openai": "gpt-image-1",
    "gemini": "gemini-2.5-flash-image",
}
MODEL_MAX_CHARS: Final = 200
OUTPUT_FORMATS: Final[tuple[str, ...]] = ("png", "jpeg", "webp")
# Gemini and Imagen take 32-bit seeds; one range for every provider keeps a seed portable.
SEED_MAX: Final = 2**31 - 1
MAX_TIMEOUT_SECONDS: Final = 24 * 60 * 60
WEBHOOK_URL_MAX_CHARS: Final = 2048
