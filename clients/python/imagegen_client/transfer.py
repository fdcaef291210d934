"""Image bytes to and from files: uploads read whole, downloads written atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc

from imagegen_client._genrpc.imagegen.v1 import image_pb2
from imagegen_client.errors import error_for

# The server's upload limit; checked here too so a too-big file fails before it is sent.
MAX_UPLOAD_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DownloadedImage:
    """Where a download was written, and what it was."""

    path: Path
    mime_type: str
    size: int


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
        if self.expected_size is not None and self.size != self.expected_size:
            raise error_for(
                grpc.StatusCode.DATA_LOSS,
                f"download ended after {self.size} of {self.expected_size} bytes",
                reason="DOWNLOAD_INCOMPLETE",
            )
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
