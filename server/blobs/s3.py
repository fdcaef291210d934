"""A BlobStore on an S3-compatible server (MinIO in production) through the minio SDK."""

from __future__ import annotations

import asyncio
import functools
import io
import itertools
import logging
import secrets
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.datatypes import Object
from minio.deleteobjects import DeleteObject
from minio.error import S3Error, ServerError

from .base import (
    BlobDeleteError,
    BlobInfo,
    BlobNotFoundError,
    BlobRefusedError,
    BlobUnavailableError,
    validate_key,
    validate_prefix,
)

# urllib3 warns on every retried connection; an outage is reported once by the
# dependency tracker instead of once per retry of every call.
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

_P = ParamSpec("_P")
_T = TypeVar("_T")

# The SDK blocks, so every call runs on one of these threads; the connection
# pool gets as many connections as there are threads so none is discarded.
_THREADS = 8
# The SDK's own default is five minutes for both, far too long to notice a
# dead server from a request handler.
_CONNECT_TIMEOUT_SECONDS = 10.0
_READ_TIMEOUT_SECONDS = 60.0
# How long one store call may take before the caller hears UNAVAILABLE (a hung server
# holds the SDK's thread until the read timeout; the caller does not wait for it).
DEFAULT_CALL_TIMEOUT_SECONDS = 10.0
# What the SDK raises when the server is down, refuses, resets or answers 5xx.
_OUTAGE_ERRORS = (urllib3.exceptions.HTTPError, ServerError, OSError)
# Listing pulls this many entries per thread hop (one S3 page is up to 1000).
_LIST_BATCH = 1000

# Codes meaning "the object is not there"; NoSuchBucket is deliberately absent:
# a missing bucket is a deployment error that must not read as a missing image.
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
# The region presigned URLs are signed for when none is configured (MinIO's and
# SeaweedFS's default); naming one keeps the presigner off the network.
DEFAULT_REGION = "us-east-1"
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
# Where ensure_ready writes, then deletes, an empty object at start (the credentials
# must allow both).
_WRITE_CHECK_PREFIX = "imagegen-write-check/"


def _is_not_found(error: S3Error) -> bool:
    if error.code == "NoSuchBucket":
        return False
    return error.code in _NOT_FOUND_CODES or error.response.status == 404


class S3BlobStore:
    """Objects live in one bucket; keys are object names, validated like every store's."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        region: str | None = None,
        secure: bool = False,
        public_endpoint: str = "",
        call_timeout_seconds: float = DEFAULT_CALL_TIMEOUT_SECONDS,
    ) -> None:
        self._bucket = bucket
        self._call_timeout = call_timeout_seconds
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=_CONNECT_TIMEOUT_SECONDS, read=_READ_TIMEOUT_SECONDS),
            maxsize=_THREADS,
            # A couple of quick retries ride out a blip; an outage is the caller's
            # UNAVAILABLE within seconds, not after a long series of backoffs.
            retries=urllib3.Retry(
                total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region or None,
            http_client=self._http,
        )
        self._executor = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="s3-blobs")
        # A SigV4 signature covers the Host header, so a URL for clients must be
        # signed for the host they will send, not rewritten afterwards. This client
        # only signs (the region is given, so it never calls the public host).
        self._presigner = self._client
        if public_endpoint:
            host, public_secure = public_host(public_endpoint, secure)
            self._presigner = Minio(
                host,
                access_key=access_key,
                secret_key=secret_key,
                secure=public_secure,
                region=region or DEFAULT_REGION,
                http_client=self._http,
            )

    @property
    def bucket(self) -> str:
        return self._bucket

    async def _run(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))
        try:
            return await asyncio.wait_for(call, self._call_timeout)
        except TimeoutError:
            raise BlobUnavailableError(
                f"the object store did not answer within {self._call_timeout:g} s"
            ) from None
        except _OUTAGE_ERRORS as error:
            raise BlobUnavailableError(f"the object store is unreachable: {error}") from error

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        validate_key(key)
        await self._run(
            self._client.put_object,
            self._bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
        )

    async def get(self, key: str) -> bytes:
        validate_key(key)
        return await self._run(self._get_sync, key)

    def _get_sync(self, key: str) -> bytes:
        response = self._open(key)
        try:
            data: bytes = response.read()
            return data
        finally:
            response.close()
            response.release_conn()

    def _open(self, key: str) -> urllib3.BaseHTTPResponse:
        try:
            return self._client.get_object(self._bucket, key)
        except S3Error as error:
            if _is_not_found(error):
                raise BlobNotFoundError(key) from None
            raise

    def iter_chunks(self, key: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        # A plain method returning the generator, so that a bad key or chunk
        # size fails at the call rather than at the first iteration.
        validate_key(key)
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        return self._chunks(key, chunk_size)

    async def _chunks(self, key: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        # One GET streamed to the end rather than one ranged GET per chunk: a
        # concurrent overwrite can then never splice two versions together.
        response = await self._run(self._open, key)
        try:
            while chunk := await self._run(_read_exactly, response, chunk_size):
                yield chunk
        finally:
            # Closing before releasing drops a half-read connection instead of
            # returning it to the pool with unread body bytes.
            response.close()
            response.release_conn()

    async def stat(self, key: str) -> BlobInfo:
        validate_key(key)
        try:
            result = await self._run(self._client.stat_object, self._bucket, key)
        except S3Error as error:
            if _is_not_found(error):
                raise BlobNotFoundError(key) from None
            raise
        return BlobInfo(key=key, size=_size(result.size), last_modified=_utc(result.last_modified))

    async def delete(self, key: str) -> None:
        validate_key(key)
        try:
            await self._run(self._client.remove_object, self._bucket, key)
        except S3Error as error:
            # S3 answers 204 for a missing key; some servers answer 404.
            if not _is_not_found(error):
                raise

    async def delete_many(self, keys: Iterable[str]) -> None:
        names = [validate_key(key) for key in keys]
        if not names:
            return
        failures = await self._run(self._delete_many_sync, names)
        if failures:
            raise BlobDeleteError(failures)

    def _delete_many_sync(self, names: Iterable[str]) -> dict[str, str]:
        # remove_objects is lazy: nothing is deleted until its error iterator
        # is consumed, so the consuming happens here, on the worker thread.
        errors = self._client.remove_objects(self._bucket, (DeleteObject(name) for name in names))
        return {
            str(error.name): f"{error.code}: {error.message}"
            for error in errors
            if error.code not in _NOT_FOUND_CODES
        }

    def list(self, prefix: str) -> AsyncGenerator[BlobInfo, None]:
        validate_prefix(prefix)
        return self._list(prefix)

    async def _list(self, prefix: str) -> AsyncGenerator[BlobInfo, None]:
        # The SDK's listing is a lazy generator that fetches a page whenever it
        # runs dry, so only advancing it needs a worker thread.
        objects: Iterator[Object] = self._client.list_objects(
            self._bucket, prefix=prefix, recursive=True
        )
        while batch := await self._run(_take, objects, _LIST_BATCH):
            for item in batch:
                if item.is_dir or item.object_name is None:
                    continue
                yield BlobInfo(
                    key=item.object_name,
                    size=_size(item.size),
                    last_modified=_utc(item.last_modified),
                )

    async def presigned_url(self, key: str, ttl: timedelta) -> str | None:
        validate_key(key)
        # Without a configured region the SDK asks the server for it first,
        # so this may do network I/O and belongs on a worker thread.
        url: str = await self._run(
            self._presigner.presigned_get_object, self._bucket, key, expires=ttl
        )
        return url

    async def ensure_ready(self) -> None:
        steps = (
            ("to find or create the bucket", self._ensure_bucket_sync),
            ("to write and delete an object", self._check_writable_sync),
        )
        for what, step in steps:
            try:
                await self._run(step)
            except S3Error as error:
                raise BlobRefusedError(
                    f"the object store refused {what} in bucket {self._bucket!r} "
                    f"({error.code}: {error.message}); check the S3 credentials and their "
                    "permissions (imagegen writes, reads, lists and deletes objects)"
                ) from error

    def _ensure_bucket_sync(self) -> None:
        if self._client.bucket_exists(self._bucket):
            return
        try:
            self._client.make_bucket(self._bucket)
        except S3Error as error:
            # Another process created it between our check and our create.
            if error.code not in _BUCKET_EXISTS_CODES or not self._client.bucket_exists(
                self._bucket
            ):
                raise

    def _check_writable_sync(self) -> None:
        # Credentials that may read but not write or delete would otherwise fail every
        # generation's store, long after a start that looked fine. A key of its own per
        # call: replicas starting together do not touch each other's.
        key = f"{_WRITE_CHECK_PREFIX}{secrets.token_hex(8)}"
        self._client.put_object(self._bucket, key, io.BytesIO(b""), 0)
        self._client.remove_object(self._bucket, key)

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        self._http.clear()


def public_host(endpoint: str, secure: bool) -> tuple[str, bool]:
    """``host[:port]`` and TLS of a public endpoint given as a URL or as ``host:port``."""
    parsed = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    if not parsed.netloc or parsed.path.strip("/"):
        raise ValueError(f"S3 public endpoint {endpoint!r} must be a scheme://host[:port]")
    return parsed.netloc, parsed.scheme == "https" if parsed.scheme else secure


def _read_exactly(response: urllib3.BaseHTTPResponse, size: int) -> bytes:
    """Read ``size`` bytes, or fewer only at the end of the body."""
    parts: list[bytes] = []
    missing = size
    while missing > 0:
        part: bytes = response.read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


def _take(iterator: Iterator[_T], count: int) -> list[_T]:
    return list(itertools.islice(iterator, count))


def _size(size: int | None) -> int:
    if size is None:
        raise ValueError("the S3 server sent an object without a size")
    return size


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        # Inventing a date would make the object look new or ancient to anyone
        # deciding by age what to keep; S3 always sends one.
        raise ValueError("the S3 server sent an object without a modification time")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
