"""Public image delivery: an image by project slug (no key) or by signed URL, streamed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.blobs.base import BlobNotFoundError, BlobStore
from server.domain.aliases import is_alias
from server.domain.clock import utcnow
from server.domain.delivery import DeliveryHead, DeliveryOptions, etag_matches, nothing_here
from server.domain.errors import DomainError, Status
from server.domain.ids import is_uuid
from server.domain.rules import CONTENT_CHUNK_BYTES
from server.domain.signing import UrlSigner
from server.store import aliases
from server.store.db import Database
from server.store.images import get_image_row
from server.store.models import ImageRow, ProjectRow

# What a delivery stream yields: the head first, then the bytes.
Part = DeliveryHead | bytes
Locate = Callable[[AsyncSession], Awaitable[ImageRow | None]]
# A read that races a regeneration may find the old version already swept;
# re-reading the row finds the new one.
READ_ATTEMPTS = 3


async def project_id_by_slug(session: AsyncSession, slug: str) -> str | None:
    """The ID of the project with this slug, if any."""
    found: str | None = await session.scalar(select(ProjectRow.id).where(ProjectRow.slug == slug))
    return found


class Delivery:
    """Reads for the public routes: no principal, only what a URL names."""

    def __init__(self, db: Database, blobs: BlobStore, signer: UrlSigner) -> None:
        self._db = db
        self._blobs = blobs
        self._signer = signer

    def public_image(
        self, project_slug: str, image: str, options: DeliveryOptions
    ) -> AsyncIterator[Part]:
        """The image ``image`` (an ID or a project @alias) of the project ``project_slug``."""
        if not (is_uuid(image) or is_alias(image)):
            raise nothing_here()

        async def locate(session: AsyncSession) -> ImageRow | None:
            project_id = await project_id_by_slug(session, project_slug)
            if project_id is None:
                return None
            if is_uuid(image):
                return await get_image_row(session, project_id, image)
            return await aliases.project_alias_holder(session, project_id, image)

        return self.stream(locate, options)

    def signed_image(
        self, image_id: str, expires: int, signature: str, options: DeliveryOptions
    ) -> AsyncIterator[Part]:
        """The image a signed URL names, while the signature is good and unexpired."""
        if not self._signer.verify(image_id, expires, signature, utcnow()):
            raise DomainError(
                Status.PERMISSION_DENIED,
                "SIGNATURE_INVALID",
                "the signed URL is expired or its signature does not match",
            )

        async def locate(session: AsyncSession) -> ImageRow | None:
            row: ImageRow | None = await session.get(ImageRow, image_id)
            return row

        return self.stream(locate, options)

    async def stream(
        self, locate: Locate, options: DeliveryOptions, cache_status: str = ""
    ) -> AsyncIterator[Part]:
        """The head of the image ``locate`` finds, then its bytes in chunks of at most 64 KiB.

        The blob is opened before the head is sent, so the head always describes
        the version whose bytes follow (a regeneration in between is retried).
        """
        for attempt in range(READ_ATTEMPTS):
            async with self._db.read() as session:
                row = await locate(session)
                if row is None:
                    raise nothing_here()
                head = DeliveryHead(
                    image_id=row.id,
                    mime_type=row.mime_type,
                    size=row.file_size,
                    etag=row.etag,
                    not_modified=etag_matches(options.if_none_match, row.etag),
                    cache_status=cache_status,
                )
                key = row.object_key
            if head.not_modified or options.head_only:
                yield head
                return
            chunks = self._blobs.iter_chunks(key, CONTENT_CHUNK_BYTES)
            async with contextlib.aclosing(chunks):
                try:
                    first = await anext(chunks)
                except BlobNotFoundError:
                    if attempt + 1 == READ_ATTEMPTS:
                        raise
                    continue  # replaced by a newer version since we read the row
                except StopAsyncIteration:
                    first = b""
                yield head
                yield first
                async for data in chunks:
                    yield data
            return
