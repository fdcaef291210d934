"""Image use cases: upload, get, list, resolve, update, alias, delete, read bytes, presign."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import structlog
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.blobs.base import BlobNotFoundError, BlobStore
from server.blobs.keys import upload_key
from server.domain.aliases import alias_problem, is_alias
from server.domain.clock import utcnow
from server.domain.errors import DomainError, Status, invalid, not_found
from server.domain.generations import Generation
from server.domain.ids import is_uuid, new_id, require_uuid
from server.domain.images import (
    CLAIMED_MIME_TYPES,
    UPLOAD_MAX_PIXELS,
    AliasScope,
    Image,
    ImageChunk,
    ImageRef,
    ImageSource,
    ResolvedAlias,
    SignedUrl,
    StoredContent,
    UpdateImage,
    UploadImage,
    check_ttl,
    image_ref,
)
from server.domain.paging import Page, keyset_page, page_request
from server.domain.pictures import decoded_bytes, picture_end
from server.domain.rules import CONTENT_CHUNK_BYTES, UPLOAD_MAX_BYTES
from server.domain.signing import UrlSigner
from server.events.hub import EventHub
from server.store import aliases
from server.store import generations as generation_owner
from server.store.db import Database
from server.store.flows import ensure_flow, get_flow_row
from server.store.idempotency import claim_request_id, fingerprint
from server.store.images import (
    NewImage,
    add_image,
    apply_update,
    get_image_row,
    image_from_row,
    list_image_rows,
    resolve_alias_row,
)
from server.store.models import ImageRow

log = structlog.get_logger("imagegen.images")

UPLOAD_SCOPE = "upload_image"
# Pillow's format names of the accepted pictures; MPO is the JPEG variant many
# cameras write (a JPEG with extra frames), so it is a JPEG to everyone else.
ACCEPTED_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "WEBP": "image/webp",
}
# Decoding a large upload takes memory and CPU; a few at a time keep one burst
# of uploads from starving the rest of the process (at most DECODE_SLOTS times
# DECODE_MAX_BYTES of decoded pixels at once).
DECODE_SLOTS = 2
# What one decoded upload may take in memory, estimated from its header before decoding
# (a 1×40,000,000 PNG is 80 KB compressed, but its 40 M row pointers alone are 320 MB).
DECODE_MAX_BYTES = 192 * 1024 * 1024
# A read that races a regeneration may find the old version already swept;
# re-reading the row finds the new one.
READ_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Picture:
    """What decoding an upload found out about it."""

    mime_type: str
    width: int
    height: int
    # Length of the picture proper: bytes after it (a page appended to a PNG) are not stored.
    end: int


def unsupported(description: str) -> DomainError:
    """An upload whose bytes are not an accepted, intact picture."""
    return invalid("content", description, reason="UNSUPPORTED_IMAGE")


def inspect_picture(content: bytes) -> Picture:
    """Decode ``content`` completely (blocking: run it in a thread) and say what it is.

    The format comes from the bytes alone. Only the header is parsed before the
    format and the pixel count are checked, so a file of another format or a
    decompression bomb is refused without being decoded.
    """
    try:
        with PILImage.open(io.BytesIO(content)) as picture:
            kind = picture.format or "unknown"
            if kind not in ACCEPTED_FORMATS:
                raise unsupported(f"{kind} pictures are not accepted; upload PNG, JPEG or WebP")
            width, height = picture.size
            if width * height > UPLOAD_MAX_PIXELS:
                raise _too_many_pixels(width, height)
            cost = decoded_bytes(width, height, picture.mode)
            if cost > DECODE_MAX_BYTES:
                raise invalid(
                    "content",
                    f"is {width}×{height} pixels ({picture.mode}), which would take about "
                    f"{cost // 2**20:,} MiB to decode; at most {DECODE_MAX_BYTES // 2**20} MiB",
                    reason="IMAGE_TOO_LARGE",
                )
            picture.load()
    except DomainError:
        raise
    except PILImage.DecompressionBombError as error:
        raise invalid(
            "content", f"decodes to too many pixels ({error})", reason="IMAGE_TOO_LARGE"
        ) from None
    except UnidentifiedImageError:
        raise unsupported("is not a recognisable picture; upload PNG, JPEG or WebP") from None
    except Exception as error:
        # Whatever a decoder trips over in caller-supplied bytes is bad input
        # (truncated data, bad checksums, broken headers), not a server fault.
        raise unsupported(f"is corrupt or truncated ({type(error).__name__}: {error})") from None
    if width <= 0 or height <= 0:
        raise unsupported("has no pixels")
    mime_type = ACCEPTED_FORMATS[kind]
    return Picture(mime_type, width, height, picture_end(content, mime_type) or len(content))


def _too_many_pixels(width: int, height: int) -> DomainError:
    return invalid(
        "content",
        f"is {width}×{height} pixels; at most {UPLOAD_MAX_PIXELS:,} pixels in all",
        reason="IMAGE_TOO_LARGE",
    )


def _concurrent_change() -> DomainError:
    # Only reachable where writers run side by side (PostgreSQL): another request
    # took the alias or removed the flow between our reads and our insert.
    return DomainError(
        Status.ABORTED,
        "CONCURRENT_CHANGE",
        "another request changed the same aliases or flow at the same time; retry",
    )


def _alias_not_found(alias: str, flow_id: str | None) -> DomainError:
    where = f" in flow {flow_id}" if flow_id else ""
    metadata = {"alias": alias, **({"flow_id": flow_id} if flow_id else {})}
    return DomainError(
        Status.NOT_FOUND, "ALIAS_NOT_FOUND", f"alias {alias!r} not found{where}", metadata=metadata
    )


async def locate_image(
    session: AsyncSession, project_id: str, ref: ImageRef
) -> tuple[ImageRow, AliasScope | None]:
    """The image a reference names (and the alias scope, for an alias); NOT_FOUND otherwise."""
    if ref.id is not None:
        row = await get_image_row(session, project_id, ref.id)
        if row is None:
            raise not_found("image", ref.id)
        return row, None
    assert ref.alias is not None
    if ref.flow_id is not None and await get_flow_row(session, project_id, ref.flow_id) is None:
        raise not_found("flow", ref.flow_id)
    found = await resolve_alias_row(session, project_id, ref.alias, ref.flow_id)
    if found is None:
        raise _alias_not_found(ref.alias, ref.flow_id)
    row, scope = found
    return row, AliasScope(scope)


class Images:
    """The ImageService use cases over the database, the image store and the hub."""

    def __init__(
        self, db: Database, blobs: BlobStore, hub: EventHub, signer: UrlSigner | None = None
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._hub = hub
        self._signer = signer
        self._decoding = asyncio.Semaphore(DECODE_SLOTS)

    # --- upload ---

    async def upload(self, project_id: str, command: UploadImage) -> Image:
        """Store a PNG, JPEG or WebP picture (or replay an earlier upload with the same request_id).

        The object is written before the row is committed and removed if the
        commit fails, so no row ever points at a missing object.
        """
        picture = await self._inspect(command.content)
        if command.mime_type:
            claimed = CLAIMED_MIME_TYPES.get(command.mime_type, command.mime_type)
            if claimed != picture.mime_type:
                raise invalid(
                    "mime_type",
                    f"claims {command.mime_type} but the bytes are {picture.mime_type}",
                    reason="MIME_TYPE_MISMATCH",
                )
        if picture.end < len(command.content):
            # Store the picture alone: trailing bytes must not be served as an image.
            command = dataclasses.replace(command, content=command.content[: picture.end])
        image_id = new_id()
        key = upload_key(project_id, image_id, picture.mime_type)
        # Its own task: if the caller goes away mid-commit, the object still ends
        # up either committed or removed, never removed under a committed row.
        return await asyncio.shield(self._store_upload(project_id, command, picture, image_id, key))

    async def _inspect(self, content: bytes) -> Picture:
        if not content:
            raise invalid("content", "is required (a PNG, JPEG or WebP picture)")
        if len(content) > UPLOAD_MAX_BYTES:
            raise invalid(
                "content",
                f"is {len(content):,} bytes; at most {UPLOAD_MAX_BYTES:,} (5 MiB)",
                reason="IMAGE_TOO_LARGE",
            )
        async with self._decoding:
            return await asyncio.to_thread(inspect_picture, content)

    async def _store_upload(
        self, project_id: str, command: UploadImage, picture: Picture, image_id: str, key: str
    ) -> Image:
        await self._blobs.put(key, command.content, picture.mime_type)
        try:
            image, replayed = await self._commit_upload(project_id, command, picture, image_id, key)
        except BaseException:
            await self._discard([key])
            raise
        if replayed:
            await self._discard([key])
        return image

    async def _commit_upload(
        self, project_id: str, command: UploadImage, picture: Picture, image_id: str, key: str
    ) -> tuple[Image, bool]:
        now = utcnow()
        content = StoredContent.describe(
            key, command.content, picture.mime_type, picture.width, picture.height
        )
        try:
            async with self._db.write.begin() as session:
                if command.request_id:
                    earlier = await claim_request_id(
                        session,
                        project_id,
                        UPLOAD_SCOPE,
                        command.request_id,
                        image_id,
                        fingerprint({"scope": UPLOAD_SCOPE, "command": command}),
                        now,
                    )
                    if earlier is not None:
                        row = await get_image_row(session, project_id, earlier)
                        if row is None:
                            raise not_found("image", earlier)  # uploaded, then deleted
                        return image_from_row(row), True
                flow_id = await ensure_flow(session, project_id, command.flow, now)
                row = await add_image(
                    session,
                    NewImage.of(
                        image_id=image_id,
                        project_id=project_id,
                        flow_id=flow_id,
                        generation_id=None,
                        source=ImageSource.UPLOADED,
                        content=content,
                        meta=command.meta,
                        now=now,
                    ),
                )
                if command.alias:
                    await aliases.move_project_alias(session, row, command.alias, now)
                if command.flow_alias and flow_id:
                    await aliases.set_flow_alias(session, flow_id, command.flow_alias, image_id)
                return image_from_row(row), False
        except IntegrityError as error:
            raise _concurrent_change() from error

    # --- reads ---

    async def get(self, project_id: str, id_or_alias: str, flow_id: str = "") -> Image:
        """One image of the project, by ID or by alias (flow_id gives the flow in context)."""
        ref = image_ref("id_or_alias", id_or_alias, flow_id)
        async with self._db.read() as session:
            row, _ = await locate_image(session, project_id, ref)
            return image_from_row(row)

    async def list(
        self,
        project_id: str,
        *,
        flow_id: str = "",
        source: ImageSource | None = None,
        alias: str = "",
        limit: int = 0,
        offset: int = 0,
        page_token: str = "",
    ) -> Page[Image]:
        """A page of the project's images, newest first."""
        flow = require_uuid("flow_id", flow_id) if flow_id else None
        if alias and not is_alias(alias):
            raise invalid("alias", "must be an @alias ('@' then letters, digits, '_' or '-')")
        filters = ("images", project_id, flow, source, alias or None)
        page = page_request(limit, offset, page_token, filters)
        async with self._db.read() as session:
            rows, total, has_more = await list_image_rows(
                session, project_id, page, flow_id=flow, source=source, alias=alias or None
            )
            images = [image_from_row(row) for row in rows]
        return keyset_page(images, total, page, has_more, filters)

    async def resolve_alias(self, project_id: str, alias: str, flow_id: str = "") -> ResolvedAlias:
        """The image an alias names and the scope it was found in (technical → flow → project)."""
        if is_uuid(alias):
            raise invalid("alias", "must be an @alias, not an image ID (use GetImage for IDs)")
        ref = image_ref("alias", alias, flow_id)
        async with self._db.read() as session:
            row, scope = await locate_image(session, project_id, ref)
            assert scope is not None
            return ResolvedAlias(image_from_row(row), scope)

    # --- changes ---

    async def update(self, project_id: str, id_or_alias: str, command: UpdateImage) -> Image:
        """Change the focal point and/or the metadata (the fields in ``command.changed``)."""
        ref = image_ref("id_or_alias", id_or_alias)
        if not command.changed:
            return await self.get(project_id, id_or_alias)
        now = utcnow()
        async with self._db.write.begin() as session:
            row, _ = await locate_image(session, project_id, ref)
            apply_update(row, command, now)
            await session.flush()
            return image_from_row(row)

    async def set_alias(
        self, project_id: str, image_id: str, alias: str, *, reassign: bool = False
    ) -> Image:
        """Give an image a project alias (empty clears it).

        An alias another image holds answers ALREADY_EXISTS unless ``reassign``
        asks to move it.
        """
        image_id = require_uuid("id", image_id)
        if alias:
            problem = alias_problem(alias)
            if problem:
                raise invalid("alias", problem)
        now = utcnow()
        try:
            async with self._db.write.begin() as session:
                row = await get_image_row(session, project_id, image_id)
                if row is None:
                    raise not_found("image", image_id)
                if (row.alias or "") == alias:
                    return image_from_row(row)
                if alias and not reassign:
                    holder = await aliases.project_alias_holder(session, project_id, alias)
                    if holder is not None:
                        raise DomainError(
                            Status.ALREADY_EXISTS,
                            "ALIAS_CONFLICT",
                            f"alias {alias!r} is held by image {holder.id}; "
                            "set reassign to move it",
                            metadata={"alias": alias, "image_id": holder.id},
                        )
                await aliases.move_project_alias(session, row, alias or None, now)
                return image_from_row(row)
        except IntegrityError as error:
            raise _concurrent_change() from error

    async def delete(self, project_id: str, image_id: str) -> str:
        """Delete an image row and its object; nothing that pointed at it is left dangling."""
        image_id = require_uuid("id", image_id)
        now = utcnow()
        async with self._db.write.begin() as session:
            row = await get_image_row(session, project_id, image_id)
            if row is None:
                raise not_found("image", image_id)
            key = row.object_key
            changed = await generation_owner.remove_images(session, [row], now)
        await self._discard([key])
        self.published(changed)
        return image_id

    def published(self, generations: Sequence[Generation]) -> None:
        """Wake the watchers of generations changed by a committed transaction."""
        for generation in generations:
            self._hub.notify(generation.project_id, generation.id)

    async def discard_objects(self, keys: Sequence[str]) -> None:
        """Delete objects whose rows are gone (after the commit)."""
        await self._discard(keys)

    async def _discard(self, keys: Sequence[str]) -> None:
        # A failure leaves an unreferenced object for the sweeper, never a row
        # without its object, so it is logged rather than failing the call.
        if not keys:
            return
        try:
            await self._blobs.delete_many(keys)
        except Exception:
            log.exception("object_delete_failed", keys=list(keys))

    # --- bytes ---

    async def read_content(
        self, project_id: str, id_or_alias: str, flow_id: str = ""
    ) -> AsyncIterator[ImageChunk]:
        """The image's bytes in chunks of at most 64 KiB; the first names type and total size."""
        ref = image_ref("id_or_alias", id_or_alias, flow_id)
        for attempt in range(READ_ATTEMPTS):
            async with self._db.read() as session:
                row, _ = await locate_image(session, project_id, ref)
                key, mime_type, size = row.object_key, row.mime_type, row.file_size
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
                yield ImageChunk(first, mime_type, size)
                async for data in chunks:
                    yield ImageChunk(data)
            return

    async def presigned_url(
        self, project_id: str, id_or_alias: str, ttl: timedelta | None
    ) -> SignedUrl:
        """An expiring URL of the image's bytes (default 1 h, max 7 days).

        The S3 store presigns the object (on S3_PUBLIC_ENDPOINT when set); the
        local store has no URLs of its own, so the gateway's /signed/img route
        serves an HMAC-signed URL instead (its ``url`` is then gateway-relative:
        the caller prefixes the public base URL).
        """
        lifetime = check_ttl(ttl)
        ref = image_ref("id_or_alias", id_or_alias)
        async with self._db.read() as session:
            row, _ = await locate_image(session, project_id, ref)
            key, image_id = row.object_key, row.id
        signed_at = utcnow()
        expire_time = signed_at + lifetime
        url = await self._blobs.presigned_url(key, lifetime)
        if url is None:
            if self._signer is None:
                raise DomainError(
                    Status.FAILED_PRECONDITION,
                    "PRESIGN_UNSUPPORTED",
                    "this image store has no presigned URLs and no URL signing secret is set",
                )
            url = self._signer.url(image_id, expire_time)
        return SignedUrl(url, expire_time)
