"""What a hosted model sent back: decode it with Pillow for its real size and type, re-encode."""

from __future__ import annotations

import io
from typing import Final

from PIL import Image

from server.engine.generators.base import GeneratedPicture, GeneratorError
from server.engine.generators.failures import MALFORMED_RESPONSE
from server.engine.generators.local import MIME_TYPES, encode_picture

# Pillow's format names → MIME types the image store serves.
_PILLOW_MIME: Final[dict[str, str]] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
# A hosted model's picture is bounded like an upload: no decompression bombs.
MAX_PIXELS: Final = 64 * 1024 * 1024


def read_picture(content: bytes, provider: str) -> GeneratedPicture:
    """The picture's real pixel size and MIME type; MALFORMED_RESPONSE if it is no picture."""
    try:
        with Image.open(io.BytesIO(content)) as opened:
            width, height = opened.size
            image_format = opened.format or ""
            if width * height > MAX_PIXELS:
                raise ValueError(f"{width}x{height} is more than {MAX_PIXELS} pixels")
            opened.verify()
    except Exception as exc:
        # Pillow reports bad input through many exception types.
        raise GeneratorError(
            MALFORMED_RESPONSE,
            f"{provider} returned image data that is not a readable picture "
            f"({type(exc).__name__}: {exc})",
            transient=False,
        ) from None
    mime_type = _PILLOW_MIME.get(image_format)
    if mime_type is None:
        raise GeneratorError(
            MALFORMED_RESPONSE,
            f"{provider} returned a {image_format or 'unknown'} picture; expected PNG, JPEG, "
            "WebP or GIF",
            transient=False,
        )
    return GeneratedPicture(content=content, mime_type=mime_type, width=width, height=height)


def reencode(picture: GeneratedPicture, output_format: str) -> GeneratedPicture:
    """``picture`` encoded as ``output_format`` (unchanged when it already is, or when empty)."""
    if not output_format or MIME_TYPES[output_format] == picture.mime_type:
        return picture
    with Image.open(io.BytesIO(picture.content)) as opened:
        opened.load()
        converted: Image.Image = opened
        if output_format == "jpeg" and opened.mode not in ("RGB", "L"):
            # JPEG has no alpha: lay the picture over white, as a viewer would show it.
            rgba = opened.convert("RGBA")
            backdrop = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            converted = Image.alpha_composite(backdrop, rgba).convert("RGB")
        elif output_format in ("png", "webp") and opened.mode not in ("RGB", "RGBA", "L", "LA"):
            converted = opened.convert("RGBA")
        content = encode_picture(converted, output_format)
    return GeneratedPicture(
        content=content,
        mime_type=MIME_TYPES[output_format],
        width=picture.width,
        height=picture.height,
    )
