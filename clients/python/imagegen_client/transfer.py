"""Image bytes to and from files: uploads read whole, downloads written atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, TypeVar

import grpc

from imagegen_client._genrpc.imagegen.v1 import generation_pb2, image_pb2
from imagegen_client.errors import error_for

# The server's upload limit; checked here too so a too-big file fails before it is sent.
MAX_UPLOAD_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DownloadedImage:
    """Where a download was written, and what it was."""

    path: Path
    mime_type: str
    size: int


Result_co = TypeVar("Result_co", covariant=True)


class ChunkSink(Protocol[Result_co]):
    """Where a streamed image's chunks go: a file (AtomicFile) or memory (ImageBuffer)."""

    def write(self, chunk: image_pb2.ImageChunk) -> None: ...

    def restart(self) -> None: ...

    def commit(self) -> Result_co: ...


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """What ``generate`` returns: the picture's bytes and what it is, with its generation."""

    data: bytes
    mime_type: str
    width: int
    height: int
    generation: generation_pb2.Generation

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bytes to ``path`` (whole, or not at all) and return it."""
        with AtomicFile(path) as file:
            file.write(image_pb2.ImageChunk(data=self.data, total_size=len(self.data)))
            return file.commit().path


def read_upload(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a file to upload (the server detects the format from them)."""
    content = Path(path).read_bytes()
    if len(content) > MAX_UPLOAD_BYTES:
        raise error_for(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{path}: {len(content)} bytes is more than the 5 MiB an upload may have",
            reason="IMAGE_TOO_LARGE",
        )
    return content


class ImageBuffer:
    """An image's chunks gathered in memory (``read_image``), checked like a download."""

    def __init__(self) -> None:
        self.mime_type = ""
        self.expected_size: int | None = None
        self._parts: list[bytes] = []

    def restart(self) -> None:
        """Drop what was gathered so far (a retried read starts from its first chunk)."""
        self.mime_type = ""
        self.expected_size = None
        self._parts.clear()

    def write(self, chunk: image_pb2.ImageChunk) -> None:
        """Append one chunk; the first one names the media type and the total size."""
        if chunk.mime_type:
            self.mime_type = chunk.mime_type
        if chunk.total_size:
            self.expected_size = chunk.total_size
        self._parts.append(chunk.data)

    def commit(self) -> bytes:
        """The whole image, once its size is the one the server announced."""
        data = b"".join(self._parts)
        check_size(len(data), self.expected_size)
        return data


def check_size(size: int, expected: int | None) -> None:
    """Fail a transfer that ended before the size the server announced."""
    if expected is not None and size != expected:
        raise error_for(
            grpc.StatusCode.DATA_LOSS,
            f"download ended after {size} of {expected} bytes",
            reason="DOWNLOAD_INCOMPLETE",
        )


class AtomicFile:
    """A file that appears at ``path`` complete or not at all.

    Chunks go to a temporary file beside ``path``; ``commit`` flushes it to
    disk and renames it into place. Leaving the ``with`` block without a
    commit (an error, a dropped stream) removes the temporary file, so a
    half-written image never sits at ``path``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.mime_type = ""
        self.expected_size: int | None = None
        self.size = 0
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None

    def __enter__(self) -> AtomicFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.NamedTemporaryFile(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".part", delete=False
        )
        return self

    def restart(self) -> None:
        """Drop what was written so far (a retried download starts from its first chunk)."""
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()
        self.mime_type = ""
        self.expected_size = None
        self.size = 0

    def write(self, chunk: image_pb2.ImageChunk) -> None:
        """Append one chunk; the first one names the media type and the total size."""
        assert self._file is not None
        if chunk.mime_type:
            self.mime_type = chunk.mime_type
        if chunk.total_size:
            self.expected_size = chunk.total_size
        self._file.write(chunk.data)
        self.size += len(chunk.data)

    def commit(self) -> DownloadedImage:
        """Check the size, make the bytes durable and move them to ``path``."""
        assert self._file is not None
        check_size(self.size, self.expected_size)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        # Temporary files are private (0600); a downloaded picture is an ordinary file.
        os.chmod(self._file.name, 0o644)
        os.replace(self._file.name, self.path)
        self._file = None
        return DownloadedImage(self.path, self.mime_type, self.size)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._file.name)
            self._file = None
