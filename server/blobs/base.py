"""The blob store interface: keys, metadata, errors and the async BlobStore protocol."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from server.domain.outages import OBJECT_STORE, DependencyUnavailableError

# S3 caps keys at 1024 bytes and most filesystems cap a name at 255 bytes; the
# stricter of the two per part keeps a key valid in every store.
MAX_KEY_LENGTH = 1024
MAX_SEGMENT_LENGTH = 255

# The local store writes each object to a sibling temp file first; reserving the
# prefix for every store keeps keys portable and lets listings skip temp files.
TEMP_PREFIX = ".tmp-"
# A key never written: stat-ing it answers "not found" when the store is up.
PROBE_KEY = "readiness-probe"


@dataclass(frozen=True)
class BlobInfo:
    """What a store knows about one object: its key, size in bytes and mtime (aware, UTC)."""

    key: str
    size: int
    last_modified: datetime


class BlobNotFoundError(Exception):
    """No object is stored under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no blob stored under {key!r}")
        self.key = key


class BlobUnavailableError(DependencyUnavailableError):
    """The object store cannot be reached, or did not answer in time (try again later)."""

    dependency = OBJECT_STORE


class BlobRefusedError(Exception):
    """The object store answered and refused what the service needs of it (credentials,
    permissions, the bucket): a deployment error, not an outage; it will not pass."""


@dataclass(eq=False)
class BlobDeleteError(Exception):
    """Some objects of a ``delete_many`` could not be deleted (missing ones never count)."""

    failures: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        shown = ", ".join(f"{key!r}: {why}" for key, why in sorted(self.failures.items())[:5])
        more = len(self.failures) - 5
        return f"could not delete {len(self.failures)} blob(s): {shown}" + (
            f" and {more} more" if more > 0 else ""
        )


def _check_path(text: str, what: str, *, allow_empty_last: bool) -> None:
    if len(text.encode()) > MAX_KEY_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_KEY_LENGTH} bytes")
    for char in text:
        if not (char.isascii() and char.isprintable()):
            raise ValueError(f"{what} {text!r} contains a non-printable or non-ASCII character")
    if "\\" in text:
        raise ValueError(f"{what} {text!r} contains a backslash")
    if text.startswith("/"):
        raise ValueError(f"{what} {text!r} starts with '/'")
    segments = text.split("/")
    for index, segment in enumerate(segments):
        is_last = index == len(segments) - 1
        if segment == "" and not (is_last and allow_empty_last):
            raise ValueError(f"{what} {text!r} has an empty path segment")
        if segment in (".", ".."):
            raise ValueError(f"{what} {text!r} has a '.' or '..' segment")
        if segment.startswith(TEMP_PREFIX):
            raise ValueError(f"{what} {text!r} uses the reserved prefix {TEMP_PREFIX!r}")
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise ValueError(f"{what} {text!r} has a segment over {MAX_SEGMENT_LENGTH} chars")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe '/'-separated relative path, else raise ValueError.

    This is the path-traversal guard of the local store, applied by every store so
    that a key accepted by one is accepted by all.
    """
    if not key:
        raise ValueError("blob key is empty")
    _check_path(key, "blob key", allow_empty_last=False)
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start a valid key (``""`` lists everything), else ValueError.

    A prefix is matched as a string, like S3 does: ``"projects/a"`` matches
    ``"projects/a/x.png"`` and ``"projects/ab/y.png"``.
    """
    if prefix:
        # Checked like a key so that the local store can walk the directory the
        # prefix names without escaping its root; only a trailing '/' is extra.
        _check_path(prefix, "blob prefix", allow_empty_last=True)
    return prefix


class BlobStore(Protocol):
    """Async object storage for image bytes, addressed by validated '/'-separated keys.

    Every method validates its keys and raises ValueError for a bad one.
    ``iter_chunks`` and ``list`` return async generators: call them without
    ``await`` (a bad key fails right there) and iterate with ``async for``;
    BlobNotFoundError surfaces on the first iteration. A consumer that stops
    early should ``aclose()`` the generator (or use ``contextlib.aclosing``)
    so that an S3 connection is released at once rather than at garbage
    collection.
    """

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key``, replacing any object there; atomic for readers."""
        ...

    async def get(self, key: str) -> bytes:
        """Return the whole object; BlobNotFoundError if missing."""
        ...

    def iter_chunks(self, key: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        """Stream the object in chunks of exactly ``chunk_size`` bytes, the last one shorter.

        An empty object yields no chunks. BlobNotFoundError if missing.
        """
        ...

    async def stat(self, key: str) -> BlobInfo:
        """Return the object's metadata; BlobNotFoundError if missing."""
        ...

    async def delete(self, key: str) -> None:
        """Delete the object; deleting a missing key is not an error."""
        ...

    async def delete_many(self, keys: Iterable[str]) -> None:
        """Delete all ``keys`` (all validated first); BlobDeleteError lists real failures."""
        ...

    def list(self, prefix: str) -> AsyncGenerator[BlobInfo, None]:
        """Yield every object whose key starts with ``prefix`` (a string prefix), at any depth.

        The order is unspecified: S3 and MinIO list in key order, SeaweedFS in
        directory-walk order (``a/b`` before ``a-b``).
        """
        ...

    async def presigned_url(self, key: str, ttl: timedelta) -> str | None:
        """Return a URL that downloads the object for ``ttl``, or None if the store cannot."""
        ...

    async def ensure_ready(self) -> None:
        """Create the bucket or directory if missing and check that objects can be written
        and deleted there (BlobRefusedError if the store refuses); safe to call
        repeatedly and concurrently."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""
        ...


async def probe(store: BlobStore) -> None:
    """Raise if ``store`` does not answer: stat a key never written ("not found" is fine)."""
    with contextlib.suppress(BlobNotFoundError):
        await store.stat(PROBE_KEY)
