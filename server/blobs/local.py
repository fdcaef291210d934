"""A BlobStore on a local directory, for the embedded defaults and for tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import stat
import tempfile
from collections.abc import AsyncGenerator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, NamedTuple

from .base import (
    TEMP_PREFIX,
    BlobDeleteError,
    BlobInfo,
    BlobNotFoundError,
    BlobRefusedError,
    validate_key,
    validate_prefix,
)

# A key that names a directory, or that passes through a file, is simply not a
# stored blob, exactly as S3 would answer.
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)

# A concurrent delete may prune a directory between our mkdir and our temp
# file; each retry recreates it, and losing this race many times in a row
# would take a pathological workload.
_PUT_ATTEMPTS = 8


class _Entry(NamedTuple):
    name: str
    is_dir: bool
    size: int
    mtime: float


class LocalBlobStore:
    """Objects are files under ``root``; a key's '/'-separated segments are its path.

    Writes go to a ``.tmp-*`` file in the target directory and are renamed over
    the target, so readers see the old object or the new one, never a mix.
    Unlike S3, a key cannot be both an object and a "directory" of other
    objects: putting ``a/b`` when ``a`` is an object fails with an OSError.
    ``content_type`` is not stored.
    """

    def __init__(self, root: Path) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*validate_key(key).split("/"))

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._put_sync, self._path(key), data)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except _MISSING:
            raise BlobNotFoundError(key) from None

    def iter_chunks(self, key: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        # A plain method returning the generator, so that a bad key or chunk
        # size fails at the call rather than at the first iteration.
        path = self._path(key)
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        return self._chunks(key, path, chunk_size)

    async def _chunks(self, key: str, path: Path, chunk_size: int) -> AsyncGenerator[bytes, None]:
        try:
            file: BinaryIO = await asyncio.to_thread(path.open, "rb")
        except _MISSING:
            raise BlobNotFoundError(key) from None
        # The open handle pins the file's contents: a concurrent put replaces
        # the name, not the data this reader is streaming.
        try:
            while chunk := await asyncio.to_thread(file.read, chunk_size):
                yield chunk
        finally:
            file.close()

    async def stat(self, key: str) -> BlobInfo:
        path = self._path(key)
        try:
            result = await asyncio.to_thread(os.stat, path)
        except _MISSING:
            raise BlobNotFoundError(key) from None
        if not stat.S_ISREG(result.st_mode):
            raise BlobNotFoundError(key)
        return BlobInfo(key=key, size=result.st_size, last_modified=_utc(result.st_mtime))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete_sync, self._path(key))

    async def delete_many(self, keys: Iterable[str]) -> None:
        paths = {key: self._path(key) for key in keys}
        failures = await asyncio.to_thread(self._delete_many_sync, paths)
        if failures:
            raise BlobDeleteError(failures)

    def list(self, prefix: str) -> AsyncGenerator[BlobInfo, None]:
        validate_prefix(prefix)
        # Start in the deepest directory the prefix names, not at the root, so
        # listing one project never scans the directory of all projects.
        directory_key = prefix.rpartition("/")[0]
        if directory_key:
            return self._walk(
                self._root.joinpath(*directory_key.split("/")), directory_key + "/", prefix
            )
        return self._walk(self._root, "", prefix)

    async def _walk(
        self, directory: Path, key_prefix: str, prefix: str
    ) -> AsyncGenerator[BlobInfo, None]:
        for entry in await asyncio.to_thread(_scan, directory):
            key = key_prefix + entry.name
            if entry.is_dir:
                below = key + "/"
                if below.startswith(prefix) or prefix.startswith(below):
                    async for info in self._walk(directory / entry.name, below, prefix):
                        yield info
            elif key.startswith(prefix):
                yield BlobInfo(key=key, size=entry.size, last_modified=_utc(entry.mtime))

    async def presigned_url(self, key: str, ttl: timedelta) -> str | None:
        validate_key(key)
        return None

    async def ensure_ready(self) -> None:
        await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            # Written and removed: a directory this process cannot write fails the
            # start, not every generation after it.
            check = self._root / f"{TEMP_PREFIX}write-check-{secrets.token_hex(8)}"
            check.write_bytes(b"")
            # Gone already if a concurrent call's sweep below took it for a leftover.
            check.unlink(missing_ok=True)
        except OSError as error:
            raise BlobRefusedError(
                f"the image directory {self._root} cannot be written: {error}"
            ) from error
        # One process owns a local store, so at start every temp file is the
        # remnant of a write that a crash interrupted.
        for leftover in self._root.rglob(TEMP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    async def close(self) -> None:
        return None

    def _put_sync(self, path: Path, data: bytes) -> None:
        fd, temp_name = self._create_temp(path.parent)
        try:
            with os.fdopen(fd, "wb") as temp:
                temp.write(data)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        # Without this the rename itself may not survive a crash.
        _fsync_directory(path.parent)

    def _create_temp(self, directory: Path) -> tuple[int, str]:
        for attempt in range(_PUT_ATTEMPTS):
            try:
                directory.mkdir(parents=True, exist_ok=True)
                return tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
            except FileNotFoundError:
                # A concurrent delete pruned a directory we had just made.
                if attempt == _PUT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _delete_sync(self, path: Path) -> None:
        try:
            path.unlink()
        except _MISSING:
            return
        self._prune_empty_parents(path.parent)

    def _delete_many_sync(self, paths: dict[str, Path]) -> dict[str, str]:
        failures: dict[str, str] = {}
        for key, path in paths.items():
            try:
                self._delete_sync(path)
            except OSError as error:
                failures[key] = str(error)
        return failures

    def _prune_empty_parents(self, directory: Path) -> None:
        # rmdir only ever removes an empty directory, so a concurrent put that
        # already created its temp file inside keeps the directory alive; one
        # that has not yet done so retries its mkdir (see _create_temp).
        while directory != self._root and self._root in directory.parents:
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass  # another delete pruned it first; its parents may still be empty
            except OSError:
                return  # not empty, so no parent is empty either
            directory = directory.parent


def _scan(directory: Path) -> list[_Entry]:
    """The directory's blobs and subdirectories, minus temp files and symlinks."""
    entries: list[_Entry] = []
    try:
        with os.scandir(directory) as iterator:
            for item in iterator:
                if item.name.startswith(TEMP_PREFIX):
                    continue
                try:
                    if item.is_dir(follow_symlinks=False):
                        entries.append(_Entry(item.name, True, 0, 0.0))
                    elif item.is_file(follow_symlinks=False):
                        info = item.stat(follow_symlinks=False)
                        entries.append(_Entry(item.name, False, info.st_size, info.st_mtime))
                except FileNotFoundError:
                    continue  # deleted while we looked
    except (FileNotFoundError, NotADirectoryError):
        return []
    # Not promised by the interface, but deterministic and S3's order: sorting
    # a directory as "name/" places it where its keys fall among its siblings.
    entries.sort(key=lambda entry: entry.name + "/" if entry.is_dir else entry.name)
    return entries


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)
