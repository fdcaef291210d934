"""The asyncio imagegen client (grpc.aio): every RPC as a coroutine, plus generate, wait, files."""

# `timeout` is a gRPC deadline in seconds, as in grpc.aio's own call signature,
# not an asyncio timeout that the caller could wrap around the call instead.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import Message

from imagegen_client import messages
from imagegen_client._genrpc.imagegen.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    flow_pb2,
    flow_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
    image_pb2,
    image_pb2_grpc,
    live_pb2,
    live_pb2_grpc,
)
from imagegen_client.connection import (
    CHANNEL_OPTIONS,
    DEFAULT_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    Target,
)
from imagegen_client.errors import (
    DeadlineExceeded,
    GenerationFailed,
    ImagegenError,
    error_for,
    from_rpc_error,
)
from imagegen_client.messages import GenerationOptions, SourceLike, StatusLike, rpc_name
from imagegen_client.retries import NO_RETRY, Attempts, Deadline, Reconnects, RetryPolicy
from imagegen_client.transfer import (
    AtomicFile,
    ChunkSink,
    DownloadedImage,
    GeneratedImage,
    ImageBuffer,
    read_upload,
)
from imagegen_client.watching import DELETED, GenerationWatch, ProjectWatch

if TYPE_CHECKING:  # typing_extensions only for the type checker: no runtime dependency
    from typing_extensions import Unpack

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Result = TypeVar("Result")


class AsyncClient:
    """An asyncio imagegen client over one grpc.aio channel (use it from one event loop).

    ``address`` and ``api_key`` default to ``IMAGEGEN_ADDRESS`` (else
    127.0.0.1:50051) and ``IMAGEGEN_API_KEY``. Every unary call has a
    deadline: ``timeout`` seconds for the whole call, retries included (a
    method's own ``timeout`` argument overrides it; None on the client means
    none). Reads, and creates/regenerates/uploads (which carry a generated
    ``request_id`` unless one is given), are retried after UNAVAILABLE and
    RESOURCE_EXHAUSTED as ``retry`` says; other calls are sent once. Failures
    raise :class:`clients.errors.ImagegenError` subclasses.
    """

    def __init__(
        self,
        address: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.target = Target.resolve(address, api_key)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(self.target.address, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.secure_channel(
                self.target.address, credentials, options=CHANNEL_OPTIONS
            )
        self.generations = generation_pb2_grpc.GenerationServiceStub(self._channel)
        self.images = image_pb2_grpc.ImageServiceStub(self._channel)
        self.flows = flow_pb2_grpc.FlowServiceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self.live = live_pb2_grpc.LiveServiceStub(self._channel)

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the seam: every call goes through one of these ---

    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self.timeout if timeout is None else timeout)

    async def _unary(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        *,
        safe: bool,
        timeout: float | None,
    ) -> Resp:
        """Call ``rpc``; retry transient failures if ``safe`` (a read, or has a request_id)."""
        attempts = Attempts(
            self.retry if safe else NO_RETRY, self._deadline(timeout), rpc_name(request)
        )
        while True:
            try:
                return await rpc(
                    request,
                    timeout=attempts.deadline.remaining(),
                    metadata=self.target.metadata,
                )
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                delay = attempts.next_delay(error)
                if delay is None:
                    raise error from rpc_error
            await asyncio.sleep(delay)

    async def _stream(
        self,
        rpc: grpc.aio.UnaryStreamMultiCallable[Req, Resp],
        request: Req,
        deadline: Deadline,
    ) -> AsyncGenerator[Resp, None]:
        """The responses of one server stream, its failure as an ImagegenError."""
        call = rpc(request, timeout=deadline.remaining(), metadata=self.target.metadata)
        try:
            async for response in call:
                yield response
        except grpc.RpcError as rpc_error:
            raise from_rpc_error(rpc_error) from rpc_error
        finally:
            call.cancel()

    # --- GenerationService ---

    async def create_generation(
        self,
        prompt: str,
        *,
        aspect_ratio: str = "",
        reference_images: Iterable[str] = (),
        flow_id: str | None = None,
        alias: str = "",
        flow_alias: str = "",
        auto_enhance: bool | None = None,
        enhancement_template: str = "",
        meta: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        run_timeout: float | None = None,
        webhook_url: str = "",
        webhook_events: Iterable[str] = (),
        timeout: float | None = None,
        model: str = "",
        seed: int | None = None,
        negative_prompt: str = "",
        output_format: str = "",
    ) -> generation_pb2.Generation:
        """Start a generation; returns it at once (PENDING).

        ``flow_id`` None mints a new flow, "" means no flow. ``request_id``
        None sends a fresh idempotency key (so the call is retried safely);
        "" sends none, and the call is then never retried. ``model`` is
        ``provider/model`` (empty: the server's default), ``seed`` None lets the
        server pick one, ``output_format`` is png, jpeg or webp (empty: default).
        """
        request = messages.create_generation(
            prompt,
            aspect_ratio=aspect_ratio,
            reference_images=reference_images,
            flow_id=flow_id,
            alias=alias,
            flow_alias=flow_alias,
            auto_enhance=auto_enhance,
            enhancement_template=enhancement_template,
            meta=meta,
            request_id=request_id,
            model=model,
            seed=seed,
            negative_prompt=negative_prompt,
            output_format=output_format,
            run_timeout=run_timeout,
            webhook_url=webhook_url,
            webhook_events=webhook_events,
        )
        return await self._unary(
            self.generations.CreateGeneration,
            request,
            safe=bool(request.request_id),
            timeout=timeout,
        )

    async def get_generation(
        self, generation_id: str, *, timeout: float | None = None
    ) -> generation_pb2.Generation:
        """One generation."""
        request = generation_pb2.GetGenerationRequest(id=generation_id)
        return await self._unary(
            self.generations.GetGeneration, request, safe=True, timeout=timeout
        )

    async def list_generations(
        self,
        *,
        flow_id: str = "",
        status: StatusLike | None = None,
        limit: int = 0,
        offset: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> generation_pb2.ListGenerationsResponse:
        """A page of the project's generations, newest first (``status`` like "success")."""
        request = messages.list_generations(
            flow_id=flow_id, status=status, limit=limit, offset=offset, page_token=page_token
        )
        return await self._unary(
            self.generations.ListGenerations, request, safe=True, timeout=timeout
        )

    async def update_generation(
        self,
        generation_id: str,
        *,
        prompt: str | None = None,
        aspect_ratio: str | None = None,
        flow_id: str | None = None,
        meta: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> generation_pb2.Generation:
        """Change the given fields (new prompt or aspect ratio: runs again; flow "" detaches)."""
        request = messages.update_generation(
            generation_id, prompt=prompt, aspect_ratio=aspect_ratio, flow_id=flow_id, meta=meta
        )
        return await self._unary(
            self.generations.UpdateGeneration, request, safe=False, timeout=timeout
        )

    async def regenerate_generation(
        self, generation_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> generation_pb2.Generation:
        """Run a generation again with the same parameters (same image ID, new content)."""
        request = messages.regenerate_generation(generation_id, request_id=request_id)
        return await self._unary(
            self.generations.RegenerateGeneration,
            request,
            safe=bool(request.request_id),
            timeout=timeout,
        )

    async def cancel_generation(
        self, generation_id: str, *, timeout: float | None = None
    ) -> generation_pb2.Generation:
        """Cancel a pending or processing generation (sent once: a repeat would find it finished).

        A finished one raises the SDK's FAILED_PRECONDITION error (GENERATION_ALREADY_FINISHED).
        """
        request = generation_pb2.CancelGenerationRequest(id=generation_id)
        return await self._unary(
            self.generations.CancelGeneration, request, safe=False, timeout=timeout
        )

    cancel = cancel_generation

    async def delete_generation(
        self, generation_id: str, *, timeout: float | None = None
    ) -> generation_pb2.DeleteGenerationResponse:
        """Delete a generation and its image (unless the image holds a project alias)."""
        request = generation_pb2.DeleteGenerationRequest(id=generation_id)
        return await self._unary(
            self.generations.DeleteGeneration, request, safe=False, timeout=timeout
        )

    def watch_generation(
        self,
        generation_id: str,
        *,
        since_revision: int = 0,
        follow: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[generation_pb2.GenerationEvent]:
        """One WatchGeneration stream as sent, without reconnecting (see :meth:`watch`)."""
        request = generation_pb2.WatchGenerationRequest(
            id=generation_id, since_revision=since_revision, follow=follow
        )
        return self._stream(self.generations.WatchGeneration, request, Deadline(timeout))

    async def watch(
        self,
        generation_id: str,
        *,
        since_revision: int = 0,
        follow: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[generation_pb2.GenerationEvent]:
        """Every state of a generation, in order, each once, across dropped streams.

        Starts with the current state (unless its revision is at most
        ``since_revision``), then every change; ends after SUCCESS, FAILED or CANCELLED
        (or deletion) unless ``follow``. When the stream drops (the server
        restarts, the connection resets) it reconnects from the last revision
        it passed on. ``timeout`` bounds the whole watch (default: none).
        """
        state = GenerationWatch(generation_id, since_revision, follow)
        deadline = Deadline(timeout)
        reconnects = Reconnects(self.retry, deadline, "WatchGeneration")
        while not state.finished():
            news = False
            try:
                async with contextlib.aclosing(
                    self._stream(self.generations.WatchGeneration, state.request(), deadline)
                ) as stream:
                    async for event in stream:
                        if state.accept(event):
                            news = True
                            reconnects.progressed()
                            yield event
                            if state.finished():
                                return
            except ImagegenError as error:
                delay = reconnects.next_delay(error)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            if not news:
                # The server closed a fresh stream without news: nothing more will come.
                return

    async def watch_generations(
        self,
        *,
        flow_id: str = "",
        status: StatusLike | None = None,
        since_cursor: str = "",
        timeout: float | None = None,
    ) -> AsyncIterator[generation_pb2.GenerationEvent]:
        """The changes of all the project's generations, resuming from the last cursor on drops.

        Without ``since_cursor`` it starts with the changes from now on.
        """
        state = ProjectWatch(flow_id, status, since_cursor)
        deadline = Deadline(timeout)
        reconnects = Reconnects(self.retry, deadline, "WatchGenerations")
        while True:
            try:
                async with contextlib.aclosing(
                    self._stream(self.generations.WatchGenerations, state.request(), deadline)
                ) as stream:
                    async for event in stream:
                        if state.accept(event):
                            reconnects.progressed()
                            yield event
                return
            except ImagegenError as error:
                delay = reconnects.next_delay(error)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def wait(
        self,
        generation_id: str,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        *,
        check: bool = True,
    ) -> generation_pb2.Generation:
        """Wait until the generation ends (SUCCESS, FAILED, CANCELLED) and return it.

        A FAILED or CANCELLED one raises :class:`GenerationFailed` (``check=False``
        returns it instead); running out of ``timeout`` seconds raises
        DeadlineExceeded.
        """
        generation = await self._finished(generation_id, timeout)
        if check and generation.status in (
            generation_pb2.GENERATION_STATUS_FAILED,
            generation_pb2.GENERATION_STATUS_CANCELLED,
        ):
            raise GenerationFailed(generation)
        return generation

    async def _finished(
        self, generation_id: str, timeout: float | None
    ) -> generation_pb2.Generation:
        """The generation once it is SUCCESS, FAILED or CANCELLED."""
        try:
            async for event in self.watch(generation_id, timeout=timeout):
                if event.type == DELETED:
                    raise error_for(
                        grpc.StatusCode.NOT_FOUND,
                        f"generation {generation_id!r} was deleted while waiting for it",
                        reason="GENERATION_DELETED",
                    )
                if messages.is_terminal(event.generation):
                    return event.generation
        except DeadlineExceeded as error:
            if timeout is None:  # not our deadline: the server's own
                raise
            raise DeadlineExceeded(
                f"generation {generation_id!r} did not finish within {timeout:g} s",
                correlation_id=error.correlation_id,
            ) from error
        # The stream ended without a terminal state (it cannot, by the contract):
        # report the state as it is now.
        generation = await self.get_generation(generation_id)
        if messages.is_terminal(generation):
            return generation
        raise error_for(
            grpc.StatusCode.UNKNOWN, f"watch of generation {generation_id!r} ended early"
        )

    async def run(
        self,
        prompt: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        **options: Unpack[GenerationOptions],
    ) -> generation_pb2.Generation:
        """Create a generation and wait for it: returns it SUCCESS, raises GenerationFailed.

        ``options`` are those of :meth:`create_generation`; ``timeout`` bounds the wait.
        """
        created = await self.create_generation(prompt, **options)
        return await self.wait(created.id, timeout)

    async def generate(
        self,
        prompt: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        **options: Unpack[GenerationOptions],
    ) -> GeneratedImage:
        """From a prompt to the picture's bytes in one call (``run``, then ``read_image``)."""
        generation = await self.run(prompt, timeout=timeout, **options)
        image = generation.output_image
        return GeneratedImage(
            data=await self.read_image(image.id),
            mime_type=image.mime_type,
            width=image.width,
            height=image.height,
            generation=generation,
        )

    # --- ImageService ---

    async def upload_image(
        self,
        content: bytes,
        *,
        mime_type: str = "",
        alias: str = "",
        flow_id: str | None = None,
        flow_alias: str = "",
        meta: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> image_pb2.Image:
        """Store a PNG, JPEG or WebP picture (at most 5 MiB) to use as a reference."""
        request = messages.upload_image(
            content,
            mime_type=mime_type,
            alias=alias,
            flow_id=flow_id,
            flow_alias=flow_alias,
            meta=meta,
            request_id=request_id,
        )
        return await self._unary(
            self.images.UploadImage, request, safe=bool(request.request_id), timeout=timeout
        )

    async def upload_file(
        self,
        path: str | os.PathLike[str],
        *,
        alias: str = "",
        flow_id: str | None = None,
        flow_alias: str = "",
        meta: Mapping[str, Any] | None = None,
        mime_type: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> image_pb2.Image:
        """Upload the picture in ``path`` (the server reads the format from the bytes)."""
        return await self.upload_image(
            read_upload(path),
            mime_type=mime_type,
            alias=alias,
            flow_id=flow_id,
            flow_alias=flow_alias,
            meta=meta,
            request_id=request_id,
            timeout=timeout,
        )

    async def get_image(
        self, id_or_alias: str, *, flow_id: str = "", timeout: float | None = None
    ) -> image_pb2.Image:
        """One image by ID or alias (``flow_id`` gives flow and technical aliases a context)."""
        request = image_pb2.GetImageRequest(id_or_alias=id_or_alias, flow_id=flow_id)
        return await self._unary(self.images.GetImage, request, safe=True, timeout=timeout)

    async def list_images(
        self,
        *,
        flow_id: str = "",
        source: SourceLike | None = None,
        alias: str = "",
        limit: int = 0,
        offset: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> image_pb2.ListImagesResponse:
        """A page of the project's images, newest first (``source`` like "uploaded")."""
        request = messages.list_images(
            flow_id=flow_id,
            source=source,
            alias=alias,
            limit=limit,
            offset=offset,
            page_token=page_token,
        )
        return await self._unary(self.images.ListImages, request, safe=True, timeout=timeout)

    async def resolve_alias(
        self, alias: str, *, flow_id: str = "", timeout: float | None = None
    ) -> image_pb2.ResolveAliasResponse:
        """The image an alias names and the scope it was found in."""
        request = image_pb2.ResolveAliasRequest(alias=alias, flow_id=flow_id)
        return await self._unary(self.images.ResolveAlias, request, safe=True, timeout=timeout)

    async def update_image(
        self,
        id_or_alias: str,
        *,
        focal_point: tuple[float, float] | None = None,
        meta: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> image_pb2.Image:
        """Change an image's focal point (x, y in 0..1) and/or metadata."""
        request = messages.update_image(id_or_alias, focal_point=focal_point, meta=meta)
        return await self._unary(self.images.UpdateImage, request, safe=False, timeout=timeout)

    async def set_image_alias(
        self,
        image_id: str,
        alias: str,
        *,
        reassign: bool = False,
        timeout: float | None = None,
    ) -> image_pb2.Image:
        """Give an image a project alias ("" clears it; ``reassign`` moves a taken one)."""
        request = image_pb2.SetImageAliasRequest(id=image_id, alias=alias, reassign=reassign)
        return await self._unary(self.images.SetImageAlias, request, safe=False, timeout=timeout)

    async def delete_image(
        self, image_id: str, *, timeout: float | None = None
    ) -> image_pb2.DeleteImageResponse:
        """Delete an image, its bytes and every reference to it."""
        request = image_pb2.DeleteImageRequest(id=image_id)
        return await self._unary(self.images.DeleteImage, request, safe=False, timeout=timeout)

    def read_image_content(
        self, id_or_alias: str, *, flow_id: str = "", timeout: float | None = None
    ) -> AsyncIterator[image_pb2.ImageChunk]:
        """An image's bytes as the server streams them (see :meth:`download`)."""
        request = image_pb2.ReadImageContentRequest(id_or_alias=id_or_alias, flow_id=flow_id)
        return self._stream(self.images.ReadImageContent, request, self._deadline(timeout))

    async def download(
        self,
        id_or_alias: str,
        path: str | os.PathLike[str],
        *,
        flow_id: str = "",
        timeout: float | None = None,
    ) -> DownloadedImage:
        """Stream an image's bytes into ``path``, which appears complete or not at all."""
        request = image_pb2.ReadImageContentRequest(id_or_alias=id_or_alias, flow_id=flow_id)
        with AtomicFile(path) as file:
            return await self._fetch(request, file, timeout)

    async def read_image(
        self, id_or_alias: str, *, flow_id: str = "", timeout: float | None = None
    ) -> bytes:
        """An image's bytes, whole, in memory (at most the 5 MiB an image may have)."""
        request = image_pb2.ReadImageContentRequest(id_or_alias=id_or_alias, flow_id=flow_id)
        return await self._fetch(request, ImageBuffer(), timeout)

    async def _fetch(
        self,
        request: image_pb2.ReadImageContentRequest,
        sink: ChunkSink[Result],
        timeout: float | None,
    ) -> Result:
        """Stream an image into ``sink``, starting over after a transient failure."""
        deadline = self._deadline(timeout)
        attempts = Attempts(self.retry, deadline, "ReadImageContent")
        while True:
            try:
                async with contextlib.aclosing(
                    self._stream(self.images.ReadImageContent, request, deadline)
                ) as chunks:
                    async for chunk in chunks:
                        sink.write(chunk)
                return sink.commit()
            except ImagegenError as error:
                delay = attempts.next_delay(error)
                if delay is None:
                    raise
            sink.restart()
            await asyncio.sleep(delay)

    async def get_image_url(
        self,
        id_or_alias: str,
        *,
        ttl: float | timedelta | None = None,
        timeout: float | None = None,
    ) -> image_pb2.GetImageUrlResponse:
        """A presigned, expiring URL of an image's bytes (``ttl`` in seconds)."""
        request = messages.get_image_url(id_or_alias, ttl=ttl)
        return await self._unary(self.images.GetImageUrl, request, safe=True, timeout=timeout)

    # --- LiveService ---

    async def list_live_scopes(
        self, *, slug: str = "", limit: int = 0, offset: int = 0, timeout: float | None = None
    ) -> live_pb2.ListLiveScopesResponse:
        """A page of the project's live scopes, newest first."""
        request = live_pb2.ListLiveScopesRequest(slug=slug, limit=limit, offset=offset)
        return await self._unary(self.live.ListLiveScopes, request, safe=True, timeout=timeout)

    async def get_live_scope(
        self, slug: str, *, timeout: float | None = None
    ) -> live_pb2.LiveScope:
        """One live scope by slug."""
        request = live_pb2.GetLiveScopeRequest(slug=slug)
        return await self._unary(self.live.GetLiveScope, request, safe=True, timeout=timeout)

    async def create_live_scope(
        self,
        slug: str,
        *,
        allow_new_generations: bool | None = None,
        new_generations_limit: int | None = None,
        timeout: float | None = None,
    ) -> live_pb2.LiveScope:
        """Create a live scope (defaults: new generations allowed, at most 30)."""
        request = live_pb2.CreateLiveScopeRequest(slug=slug)
        messages.set_scope_limits(request, allow_new_generations, new_generations_limit)
        return await self._unary(self.live.CreateLiveScope, request, safe=False, timeout=timeout)

    async def update_live_scope(
        self,
        slug: str,
        *,
        allow_new_generations: bool | None = None,
        new_generations_limit: int | None = None,
        timeout: float | None = None,
    ) -> live_pb2.LiveScope:
        """Change the fields given (the others stay as they are)."""
        request = live_pb2.UpdateLiveScopeRequest(slug=slug)
        messages.set_scope_limits(request, allow_new_generations, new_generations_limit)
        return await self._unary(self.live.UpdateLiveScope, request, safe=True, timeout=timeout)

    async def regenerate_live_scope(
        self, slug: str, *, image_id: str = "", timeout: float | None = None
    ) -> live_pb2.RegenerateLiveScopeResponse:
        """Regenerate one image of the scope, or all of them."""
        request = live_pb2.RegenerateLiveScopeRequest(slug=slug, image_id=image_id)
        return await self._unary(
            self.live.RegenerateLiveScope, request, safe=False, timeout=timeout
        )

    async def delete_live_scope(
        self, slug: str, *, timeout: float | None = None
    ) -> live_pb2.DeleteLiveScopeResponse:
        """Delete a scope and its generations (aliased images are kept)."""
        request = live_pb2.DeleteLiveScopeRequest(slug=slug)
        return await self._unary(self.live.DeleteLiveScope, request, safe=True, timeout=timeout)

    # --- FlowService ---

    async def list_flows(
        self,
        *,
        limit: int = 0,
        offset: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> flow_pb2.ListFlowsResponse:
        """A page of the project's flows, newest first."""
        request = flow_pb2.ListFlowsRequest(limit=limit, offset=offset, page_token=page_token)
        return await self._unary(self.flows.ListFlows, request, safe=True, timeout=timeout)

    async def get_flow(self, flow_id: str, *, timeout: float | None = None) -> flow_pb2.Flow:
        """One flow with its aliases and counts."""
        request = flow_pb2.GetFlowRequest(id=flow_id)
        return await self._unary(self.flows.GetFlow, request, safe=True, timeout=timeout)

    async def list_flow_generations(
        self, flow_id: str, *, limit: int = 0, offset: int = 0, timeout: float | None = None
    ) -> generation_pb2.ListGenerationsResponse:
        """A page of a flow's generations, newest first."""
        request = flow_pb2.ListFlowGenerationsRequest(id=flow_id, limit=limit, offset=offset)
        return await self._unary(
            self.flows.ListFlowGenerations, request, safe=True, timeout=timeout
        )

    async def list_flow_images(
        self, flow_id: str, *, limit: int = 0, offset: int = 0, timeout: float | None = None
    ) -> image_pb2.ListImagesResponse:
        """A page of a flow's images, newest first."""
        request = flow_pb2.ListFlowImagesRequest(id=flow_id, limit=limit, offset=offset)
        return await self._unary(self.flows.ListFlowImages, request, safe=True, timeout=timeout)

    async def update_flow_aliases(
        self, flow_id: str, aliases: Mapping[str, str], *, timeout: float | None = None
    ) -> flow_pb2.Flow:
        """Merge ``aliases`` (alias → image ID) into a flow's alias map."""
        request = messages.update_flow_aliases(flow_id, aliases)
        return await self._unary(self.flows.UpdateFlowAliases, request, safe=False, timeout=timeout)

    async def delete_flow_alias(
        self, flow_id: str, alias: str, *, timeout: float | None = None
    ) -> flow_pb2.Flow:
        """Remove one alias from a flow's alias map."""
        request = flow_pb2.DeleteFlowAliasRequest(id=flow_id, alias=alias)
        return await self._unary(self.flows.DeleteFlowAlias, request, safe=False, timeout=timeout)

    async def regenerate_flow(
        self, flow_id: str, *, timeout: float | None = None
    ) -> generation_pb2.Generation:
        """Run the flow's most recent generation again (sent once: it has no request_id)."""
        request = flow_pb2.RegenerateFlowRequest(id=flow_id)
        return await self._unary(self.flows.RegenerateFlow, request, safe=False, timeout=timeout)

    async def delete_flow(
        self, flow_id: str, *, timeout: float | None = None
    ) -> flow_pb2.DeleteFlowResponse:
        """Delete a flow, its generations and its images that hold no project alias."""
        request = flow_pb2.DeleteFlowRequest(id=flow_id)
        return await self._unary(self.flows.DeleteFlow, request, safe=False, timeout=timeout)

    # --- AdminService (admin key) ---

    async def create_project(
        self, slug: str, *, name: str = "", timeout: float | None = None
    ) -> admin_pb2.Project:
        """Create a project (a tenant)."""
        request = admin_pb2.CreateProjectRequest(slug=slug, name=name)
        return await self._unary(self.admin.CreateProject, request, safe=False, timeout=timeout)

    async def list_projects(
        self, *, limit: int = 0, offset: int = 0, timeout: float | None = None
    ) -> admin_pb2.ListProjectsResponse:
        """A page of projects, oldest first."""
        request = admin_pb2.ListProjectsRequest(limit=limit, offset=offset)
        return await self._unary(self.admin.ListProjects, request, safe=True, timeout=timeout)

    async def create_api_key(
        self,
        *,
        project_id: str = "",
        name: str = "",
        expire_days: int = 0,
        timeout: float | None = None,
    ) -> admin_pb2.CreateApiKeyResponse:
        """Create a key for a project ("" for an admin key); its secret is only in the reply."""
        request = messages.create_api_key(project_id=project_id, name=name, expire_days=expire_days)
        return await self._unary(self.admin.CreateApiKey, request, safe=False, timeout=timeout)

    async def list_api_keys(
        self, *, project_id: str = "", timeout: float | None = None
    ) -> admin_pb2.ListApiKeysResponse:
        """The API keys (of one project, or all), never their secrets."""
        request = admin_pb2.ListApiKeysRequest(project_id=project_id)
        return await self._unary(self.admin.ListApiKeys, request, safe=True, timeout=timeout)

    async def revoke_api_key(
        self, key_id: str, *, timeout: float | None = None
    ) -> admin_pb2.ApiKey:
        """Revoke an API key; it stops working at once."""
        request = admin_pb2.RevokeApiKeyRequest(id=key_id)
        return await self._unary(self.admin.RevokeApiKey, request, safe=False, timeout=timeout)
