"""Uploads are bounded in decode memory before decoding, and only the picture is stored:
bytes after its end (an HTML page after a PNG's IEND) are not served as an image."""

from __future__ import annotations

import io
import struct
import zlib

import grpc
import pytest
from expect import expect_error
from PIL import Image as PILImage

from genrpc.imagegen.v1 import image_pb2, image_pb2_grpc
from server.domain.pictures import picture_end

TAIL = b"<html><script>alert(1)</script></html>"


@pytest.fixture
def backend() -> str:
    """Byte checks do not depend on the storage: SQLite and a local directory."""
    return "sqlite"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def tall_png(height: int = 40_000_000) -> bytes:
    """A 1×height grey PNG: tens of kilobytes compressed, hundreds of MB once decoded."""
    packer = zlib.compressobj(9)
    rows = b"\x00\x00" * 1_000_000  # filter byte + one pixel per row
    compressed = b"".join(packer.compress(rows) for _ in range(height // 1_000_000))
    compressed += packer.flush()
    header = struct.pack(">IIBBBBB", 1, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", compressed)
        + _chunk(b"IEND", b"")
    )


def picture(fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    PILImage.effect_noise((64, 48), 40).convert("RGB").save(buffer, fmt, **options)
    return buffer.getvalue()


async def test_tall_png_is_refused_before_decoding(
    images: image_pb2_grpc.ImageServiceStub, auth
) -> None:
    content = tall_png()
    assert len(content) < 1024 * 1024
    error = await expect_error(
        images.UploadImage(image_pb2.UploadImageRequest(content=content), metadata=auth),
        grpc.StatusCode.INVALID_ARGUMENT,
        "IMAGE_TOO_LARGE",
    )
    assert "to decode" in (error.details() or "")


@pytest.mark.parametrize(
    ("fmt", "mime", "options"),
    [
        ("PNG", "image/png", {}),
        ("JPEG", "image/jpeg", {}),
        ("JPEG", "image/jpeg", {"progressive": True}),
        ("WEBP", "image/webp", {}),
    ],
    ids=["png", "jpeg", "progressive-jpeg", "webp"],
)
async def test_trailing_bytes_are_not_stored(
    images: image_pb2_grpc.ImageServiceStub, auth, fmt: str, mime: str, options: dict
) -> None:
    clean = picture(fmt, **options)
    assert picture_end(clean, mime) == len(clean)
    uploaded = await images.UploadImage(
        image_pb2.UploadImageRequest(content=clean + TAIL), metadata=auth
    )
    assert uploaded.mime_type == mime
    assert uploaded.file_size == len(clean)
    chunks = images.ReadImageContent(
        image_pb2.ReadImageContentRequest(id_or_alias=uploaded.id), metadata=auth
    )
    assert b"".join([chunk.data async for chunk in chunks]) == clean


def test_picture_end_needs_a_complete_picture() -> None:
    png = picture("PNG")
    assert picture_end(png[:-6], "image/png") is None  # IEND cut short
    assert picture_end(b"not a png", "image/png") is None
    assert picture_end(b"RIFF\xff\xff\xff\x7fWEBP", "image/webp") is None
    jpeg = picture("JPEG")
    assert picture_end(jpeg[:-2], "image/jpeg") is None  # no EOI
