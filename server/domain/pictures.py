"""Where the picture in an upload ends, and what decoding it would cost, from its bytes alone.

Anything after the end (an HTML page appended to a PNG, say) is not part of the picture
and must not be stored and served under an image media type.
"""

from __future__ import annotations

from typing import Final

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# Pillow keeps one pointer per row, and each pixel in 1, 2 or 4 bytes by mode.
ROW_POINTER_BYTES: Final = 8
ONE_BYTE_MODES: Final = frozenset({"1", "L", "P"})
TWO_BYTE_MODES: Final = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """About how much memory Pillow needs to hold a decoded picture of this size and mode."""
    if mode in ONE_BYTE_MODES:
        per_pixel = 1
    elif mode in TWO_BYTE_MODES:
        per_pixel = 2
    else:
        per_pixel = 4  # RGB is stored as RGBX; LA, RGBA, CMYK, I, F are 4 bytes too
    return width * height * per_pixel + height * ROW_POINTER_BYTES


def picture_end(data: bytes, mime_type: str) -> int | None:
    """The length of the picture proper at the start of ``data`` (None: could not tell)."""
    if mime_type == "image/png":
        return _png_end(data)
    if mime_type == "image/webp":
        return _webp_end(data)
    if mime_type == "image/jpeg":
        return _jpeg_end(data)
    return None


def _png_end(data: bytes) -> int | None:
    # Chunks: 4-byte length, 4-byte type, data, 4-byte CRC; IEND is the last.
    if not data.startswith(PNG_SIGNATURE):
        return None
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        offset += 12 + length
        if kind == b"IEND":
            return offset if offset <= len(data) else None
    return None


def _webp_end(data: bytes) -> int | None:
    # RIFF header: "RIFF", little-endian size of what follows the first 8 bytes, "WEBP".
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    size = int.from_bytes(data[4:8], "little")
    end = 8 + size + (size & 1)
    return end if end <= len(data) else None


def _jpeg_end(data: bytes) -> int | None:
    # Segments carry their length; after each start-of-scan, entropy-coded data runs to
    # the next marker that is neither a stuffed 0xFF00 nor a restart marker. End: EOI.
    if not data.startswith(b"\xff\xd8"):
        return None
    offset, size = 2, len(data)
    while offset < size:
        if data[offset] != 0xFF:
            return None
        while offset < size and data[offset] == 0xFF:  # fill bytes
            offset += 1
        if offset >= size:
            return None
        marker = data[offset]
        offset += 1
        if marker == 0xD9:
            return offset
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue  # markers without a length
        if offset + 2 > size:
            return None
        length = int.from_bytes(data[offset : offset + 2], "big")
        if length < 2:
            return None
        offset += length
        if marker == 0xDA:
            offset = _entropy_end(data, offset)
            if offset < 0:
                return None
    return None


def _entropy_end(data: bytes, offset: int) -> int:
    """Where the entropy-coded data starting at ``offset`` ends (-1: it does not)."""
    while True:
        found = data.find(b"\xff", offset)
        if found < 0 or found + 1 >= len(data):
            return -1
        following = data[found + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            offset = found + 2  # stuffed byte or restart marker: still scan data
        elif following == 0xFF:
            offset = found + 1  # fill byte before a marker
        else:
            return found
