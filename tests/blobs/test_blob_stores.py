"""The BlobStore contract, run against a local directory and a real SeaweedFS S3 server."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from seaweed import remove_bucket

from server.blobs.base import (
    BlobDeleteError,
    BlobInfo,
    BlobNotFoundError,
    BlobRefusedError,
    BlobStore,
)
from server.blobs.local import LocalBlobStore
from server.blobs.s3 import S3BlobStore

if TYPE_CHECKING:
    from seaweed import SeaweedFS

KIB = 1024


def image_key(name: str = "v1.png") -> str:
    return f"projects/{uuid.uuid4()}/images/{uuid.uuid4()}/{name}"


def names_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


async def collect(blobs: AsyncIterator[BlobInfo]) -> list[BlobInfo]:
    return [info async for info in blobs]


async def listed_keys(store: BlobStore, prefix: str) -> list[str]:
    """The keys under ``prefix``, sorted: listing order is not part of the contract."""
    return sorted([info.key async for info in store.list(prefix)])


async def read_chunks(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """A fresh, ready store: a new directory, or a new bucket on the session's SeaweedFS."""
    blob_store: BlobStore
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    if request.param == "local":
        blob_store = LocalBlobStore(tmp_path / "blobs")
    else:
        # Looked up lazily so that the local half never starts SeaweedFS.
        server = request.getfixturevalue("s3_server")
        blob_store = S3BlobStore(
            server.endpoint,
            server.access_key,
            server.secret_key,
            bucket=bucket,
        )
    await blob_store.ensure_ready()
    try:
        yield blob_store
    finally:
        await blob_store.close()
        if request.param == "s3":
            remove_bucket(request.getfixturevalue("s3_server"), bucket)


@pytest.fixture
async def local_store(tmp_path: Path) -> AsyncIterator[LocalBlobStore]:
    blob_store = LocalBlobStore(tmp_path / "blobs")
    await blob_store.ensure_ready()
    yield blob_store
    await blob_store.close()


async def test_put_then_get_round_trips(store: BlobStore) -> None:
    key = image_key()
    data = os.urandom(10 * KIB)

    await store.put(key, data, "image/png")

    assert await store.get(key) == data


async def test_put_overwrites(store: BlobStore) -> None:
    key = image_key()
    await store.put(key, b"first version, longer", "image/png")

    await store.put(key, b"second", "image/png")

    assert await store.get(key) == b"second"
    assert (await store.stat(key)).size == len(b"second")


async def test_empty_object_round_trips(store: BlobStore) -> None:
    key = image_key()

    await store.put(key, b"", "application/octet-stream")

    assert await store.get(key) == b""
    assert (await store.stat(key)).size == 0
    assert await read_chunks(store.iter_chunks(key, 1024)) == []


async def test_missing_key_raises_not_found(store: BlobStore) -> None:
    key = image_key()

    with pytest.raises(BlobNotFoundError) as caught:
        await store.get(key)
    assert caught.value.key == key
    with pytest.raises(BlobNotFoundError):
        await store.stat(key)
    with pytest.raises(BlobNotFoundError):
        await read_chunks(store.iter_chunks(key, 1024))


async def test_a_key_prefix_is_not_an_object(store: BlobStore) -> None:
    key = image_key()
    await store.put(key, b"data", "image/png")
    directory = key.rpartition("/")[0]

    with pytest.raises(BlobNotFoundError):
        await store.get(directory)
    with pytest.raises(BlobNotFoundError):
        await store.stat(directory)


@pytest.mark.parametrize(
    ("size", "chunk_size"),
    [
        (300 * KIB + 123, 64 * KIB),  # ragged last chunk
        (300 * KIB, 100 * KIB),  # exact multiple: no empty trailing chunk
        (300 * KIB, 1 * KIB),  # many small chunks
        (10 * KIB, 64 * KIB),  # one chunk smaller than chunk_size
    ],
)
async def test_iter_chunks_yields_exact_chunks(
    store: BlobStore, size: int, chunk_size: int
) -> None:
    key = image_key()
    data = os.urandom(size)
    await store.put(key, data, "image/png")

    chunks = await read_chunks(store.iter_chunks(key, chunk_size))

    assert b"".join(chunks) == data
    assert all(len(chunk) == chunk_size for chunk in chunks[:-1])
    assert 0 < len(chunks[-1]) <= chunk_size
    assert len(chunks) == -(-size // chunk_size)


async def test_iter_chunks_can_stop_early(store: BlobStore) -> None:
    key = image_key()
    data = os.urandom(300 * KIB)
    await store.put(key, data, "image/png")

    for _ in range(20):  # more than the S3 store's pooled connections
        chunks = store.iter_chunks(key, 16 * KIB)
        assert await anext(chunks) == data[: 16 * KIB]
        await chunks.aclose()

    assert await store.get(key) == data


async def test_iter_chunks_rejects_a_bad_chunk_size(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        store.iter_chunks(image_key(), 0)


async def test_stat_reports_size_and_utc_mtime(store: BlobStore) -> None:
    key = image_key()
    before = datetime.now(UTC)
    await store.put(key, os.urandom(1234), "image/png")

    info = await store.stat(key)

    assert info == BlobInfo(key=key, size=1234, last_modified=info.last_modified)
    assert info.last_modified.utcoffset() == timedelta(0)
    # S3 dates have whole seconds; allow that and some clock slack.
    assert before - timedelta(seconds=5) <= info.last_modified <= datetime.now(UTC)


async def test_delete_is_idempotent(store: BlobStore) -> None:
    key = image_key()
    await store.put(key, b"data", "image/png")

    await store.delete(key)
    await store.delete(key)
    await store.delete(image_key())

    with pytest.raises(BlobNotFoundError):
        await store.get(key)


async def test_delete_many(store: BlobStore) -> None:
    keys = [f"batch/{index}.png" for index in range(5)]
    for key in keys:
        await store.put(key, key.encode(), "image/png")

    await store.delete_many([*keys[:3], "batch/never-stored.png"])
    await store.delete_many([])

    assert await listed_keys(store, "batch/") == keys[3:]


async def test_delete_many_validates_every_key_before_deleting(store: BlobStore) -> None:
    await store.put("batch/kept.png", b"data", "image/png")

    with pytest.raises(ValueError, match="key"):
        await store.delete_many(["batch/kept.png", "../escape"])

    assert await store.get("batch/kept.png") == b"data"


async def test_delete_many_error_lists_failures() -> None:
    error = BlobDeleteError({"a": "denied", "b": "denied"})

    assert "2 blob(s)" in str(error)
    assert error.failures == {"a": "denied", "b": "denied"}


async def test_list_is_recursive_and_limited_to_the_prefix(store: BlobStore) -> None:
    sizes = {
        "p/a/1.png": 1,
        "p/a/x/y/2.png": 2,
        "p/ab/3.png": 3,
        "p/b/4.png": 4,
        "q/5.png": 5,
    }
    for key, size in sizes.items():
        await store.put(key, b"x" * size, "image/png")

    assert sorted((info.key, info.size) for info in await collect(store.list("p/a/"))) == [
        ("p/a/1.png", 1),
        ("p/a/x/y/2.png", 2),
    ]
    # Like S3, a prefix is a string prefix, not a directory name.
    assert await listed_keys(store, "p/a") == ["p/a/1.png", "p/a/x/y/2.png", "p/ab/3.png"]
    assert await listed_keys(store, "") == sorted(sizes)
    assert await collect(store.list("nothing/here/")) == []
    assert await collect(store.list("p/a/1.png/")) == []


async def test_list_handles_names_that_sort_around_a_directory(store: BlobStore) -> None:
    # '-' < '.' < '/' in ASCII, so these interleave with "p/a/" in key order;
    # the order itself is not part of the contract (SeaweedFS lists in
    # directory-walk order, S3 and MinIO in key order).
    keys = ["p/a/b.png", "p/a.png", "p/a-b.png", "p/a0.png"]
    for key in keys:
        await store.put(key, b"data", "image/png")

    assert await listed_keys(store, "p/") == sorted(keys)
    assert await listed_keys(store, "p/a/") == ["p/a/b.png"]
    assert await listed_keys(store, "p/a.") == ["p/a.png"]


async def test_unusual_but_valid_key_characters(store: BlobStore) -> None:
    # Printable ASCII is allowed, so URL-special characters must survive the
    # S3 store's encoding and the server's decoding.
    key = "projects/odd name+plus%20&amp=;#hash?q~x:y'z(1)!*@,$.png"
    await store.put(key, b"odd", "image/png")

    assert await store.get(key) == b"odd"
    assert (await store.stat(key)).size == 3
    assert await listed_keys(store, "projects/odd name+") == [key]
    await store.delete(key)
    assert await listed_keys(store, "projects/") == []


BAD_KEYS = [
    "",
    "/absolute.png",
    "../escape.png",
    "projects/../../escape.png",
    "..",
    "projects/./x.png",
    "projects//x.png",
    "projects/",
    "projects\\x.png",
    "projects/caf\u00e9.png",
    "projects/tab\there.png",
    "projects/new\nline.png",
    "projects/.tmp-x.png",
    "x" * 1025,
    "projects/" + "y" * 256,
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_rejected(store: BlobStore, key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key"):
        await store.put(key, b"data", "image/png")
    with pytest.raises(ValueError, match="key"):
        await store.get(key)
    with pytest.raises(ValueError, match="key"):
        await store.stat(key)
    with pytest.raises(ValueError, match="key"):
        await store.delete(key)
    with pytest.raises(ValueError, match="key"):
        await store.delete_many([key])
    with pytest.raises(ValueError, match="key"):
        await store.presigned_url(key, timedelta(minutes=5))
    with pytest.raises(ValueError, match="key"):
        store.iter_chunks(key, 1024)

    # Nothing escaped the store's directory (for S3, nothing was written here).
    assert names_in(tmp_path) in ([], ["blobs"])


@pytest.mark.parametrize("prefix", ["/", "/p", "../", "p/../", "p//", "p\\", "p/\u00e9"])
async def test_bad_prefixes_are_rejected(store: BlobStore, prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        store.list(prefix)


async def test_presigned_url(store: BlobStore) -> None:
    key = image_key()
    data = os.urandom(2 * KIB)
    await store.put(key, data, "image/png")

    url = await store.presigned_url(key, timedelta(minutes=5))

    if isinstance(store, LocalBlobStore):
        assert url is None
        return
    assert url is not None
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["300"]
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        unsigned = await client.get(url.split("?", 1)[0])
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    # The signature is what grants access: the server requires credentials.
    assert unsigned.status_code == 403


async def test_ensure_ready_is_idempotent(store: BlobStore) -> None:
    await store.ensure_ready()
    await asyncio.gather(*(store.ensure_ready() for _ in range(5)))

    await store.put("after/ready.png", b"data", "image/png")
    assert await store.get("after/ready.png") == b"data"


async def test_s3_ensure_ready_tolerates_concurrent_creation(s3_server: SeaweedFS) -> None:
    bucket = f"race-{uuid.uuid4().hex[:20]}"
    siblings = [
        S3BlobStore(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket=bucket)
        for _ in range(4)
    ]
    try:
        await asyncio.gather(*(sibling.ensure_ready() for sibling in siblings))
        await siblings[0].put("k.png", b"data", "image/png")
        assert await siblings[1].get("k.png") == b"data"
    finally:
        for sibling in siblings:
            await sibling.close()
        remove_bucket(s3_server, bucket)


async def test_s3_rejects_wrong_credentials(s3_server: SeaweedFS) -> None:
    intruder = S3BlobStore(s3_server.endpoint, s3_server.access_key, "wrong-secret", bucket="any")
    try:
        with pytest.raises(
            BlobRefusedError, match=r"find or create the bucket.*SignatureDoesNotMatch"
        ):
            await intruder.ensure_ready()
    finally:
        await intruder.close()


async def test_s3_credentials_that_cannot_write_are_refused_at_ensure_ready(
    s3_server: SeaweedFS,
) -> None:
    bucket = f"readonly-{uuid.uuid4().hex[:20]}"
    owner = S3BlobStore(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket)
    reader = S3BlobStore(
        s3_server.endpoint, s3_server.reader_access_key, s3_server.reader_secret_key, bucket
    )
    try:
        await owner.ensure_ready()
        await owner.put("kept.png", b"data", "image/png")
        # The bucket is there and readable with these keys; writing is what they lack.
        assert await reader.get("kept.png") == b"data"
        with pytest.raises(BlobRefusedError, match=r"write and delete an object.*AccessDenied"):
            await reader.ensure_ready()
    finally:
        await reader.close()
        await owner.close()
        remove_bucket(s3_server, bucket)


async def test_s3_ensure_ready_leaves_no_object_behind(s3_server: SeaweedFS) -> None:
    bucket = f"clean-{uuid.uuid4().hex[:20]}"
    store = S3BlobStore(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket)
    try:
        await asyncio.gather(*(store.ensure_ready() for _ in range(3)))
        client = s3_server.client()
        assert [o.object_name for o in client.list_objects(bucket, recursive=True)] == []
    finally:
        await store.close()
        remove_bucket(s3_server, bucket)


async def test_concurrent_puts_of_different_keys(store: BlobStore) -> None:
    payloads = {f"concurrent/{index:02d}/image.png": os.urandom(8 * KIB) for index in range(40)}

    await asyncio.gather(*(store.put(key, data, "image/png") for key, data in payloads.items()))

    stored = await asyncio.gather(*(store.get(key) for key in payloads))
    assert stored == list(payloads.values())
    assert await listed_keys(store, "concurrent/") == sorted(payloads)


async def test_concurrent_puts_and_deletes_in_one_directory(store: BlobStore) -> None:
    # Deletes prune emptied directories in the local store while puts create
    # them; every put must still land.
    keys = [f"churn/shared/{index}.png" for index in range(30)]

    async def put_then_delete(key: str) -> None:
        await store.put(key, b"data", "image/png")
        await store.delete(key)
        await store.put(key, b"final", "image/png")

    await asyncio.gather(*(put_then_delete(key) for key in keys))

    assert await listed_keys(store, "churn/") == sorted(keys)
    assert set(await asyncio.gather(*(store.get(key) for key in keys))) == {b"final"}


async def test_local_readers_never_see_a_partial_object(local_store: LocalBlobStore) -> None:
    key = "projects/p/images/i/v1.png"
    versions = [bytes([letter]) * (2 * KIB * KIB) for letter in b"abc"]
    await local_store.put(key, versions[0], "image/png")
    writing = True

    async def writer() -> None:
        nonlocal writing
        for round_ in range(30):
            await local_store.put(key, versions[round_ % len(versions)], "image/png")
        writing = False

    async def reader() -> None:
        while writing:
            assert await local_store.get(key) in versions
            chunks = await read_chunks(local_store.iter_chunks(key, 256 * KIB))
            assert b"".join(chunks) in versions
            assert await listed_keys(local_store, "projects/") == [key]

    await asyncio.gather(writer(), reader(), reader())

    assert not [path for path in local_store.root.rglob("*") if ".tmp-" in path.name]


async def test_local_list_skips_leftover_temp_files(local_store: LocalBlobStore) -> None:
    await local_store.put("p/real.png", b"data", "image/png")
    # What a writer that crashed before its rename leaves behind.
    (local_store.root / "p" / ".tmp-abandoned").write_bytes(b"half")
    (local_store.root / ".tmp-at-root").write_bytes(b"half")

    assert await listed_keys(local_store, "") == ["p/real.png"]


async def test_local_delete_prunes_empty_directories(local_store: LocalBlobStore) -> None:
    await local_store.put("p/a/b/deep.png", b"data", "image/png")
    await local_store.put("p/shallow.png", b"data", "image/png")

    await local_store.delete("p/a/b/deep.png")
    assert not (local_store.root / "p" / "a").exists()
    assert (local_store.root / "p" / "shallow.png").exists()

    await local_store.delete("p/shallow.png")
    assert list(local_store.root.iterdir()) == []


async def test_local_ensure_ready_creates_the_directory(tmp_path: Path) -> None:
    blob_store = LocalBlobStore(tmp_path / "not" / "yet")

    await blob_store.ensure_ready()
    await blob_store.ensure_ready()

    assert (tmp_path / "not" / "yet").is_dir()
    # Its write check left nothing behind.
    assert list((tmp_path / "not" / "yet").iterdir()) == []


async def test_local_directory_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(BlobRefusedError, match="cannot be written"):
        await LocalBlobStore(tmp_path / "a-file" / "images").ensure_ready()


async def test_local_store_discards_interrupted_writes_at_start(tmp_path: Path) -> None:
    from server.blobs.local import LocalBlobStore

    store = LocalBlobStore(tmp_path / "images")
    await store.ensure_ready()
    await store.put("projects/p/a.png", b"kept", "image/png")
    leftover = tmp_path / "images" / "projects" / "p" / ".tmp-crashed"
    leftover.write_bytes(b"half")
    await LocalBlobStore(tmp_path / "images").ensure_ready()
    assert not leftover.exists()
    assert await store.get("projects/p/a.png") == b"kept"
