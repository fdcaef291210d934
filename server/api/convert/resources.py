"""Domain resources to messages: images, generations, flows, projects, keys and their pages."""

from __future__ import annotations

from typing import Any

from genrpc.imagegen.v1 import admin_pb2, flow_pb2, generation_pb2, image_pb2, project_pb2
from server.api.convert.enums import SOURCE_TO_PROTO, STATUS_TO_PROTO
from server.api.convert.values import set_timestamp, timestamp
from server.api.principal import current_principal
from server.domain.flows import Flow
from server.domain.generations import Generation
from server.domain.images import Image
from server.domain.lifecycle import GenerationStatus
from server.domain.paging import Page
from server.domain.tenancy import ApiKey, Project
from server.domain.webhooks import DeliveryState, WebhookDelivery

DELIVERY_STATE_TO_PROTO = {
    DeliveryState.PENDING: project_pb2.WEBHOOK_DELIVERY_STATUS_PENDING,
    DeliveryState.DELIVERED: project_pb2.WEBHOOK_DELIVERY_STATUS_DELIVERED,
    DeliveryState.FAILED: project_pb2.WEBHOOK_DELIVERY_STATUS_FAILED,
}


class Resources:
    """Domain resources to messages; knows the public base URL that image URLs hang from."""

    def __init__(self, public_base_url: str) -> None:
        self.base_url = public_base_url.rstrip("/")

    def image_url(self, image_id: str) -> str:
        """The stable public URL of an image's bytes: ``/cdn/{project_slug}/img/{image_id}``.

        Images are only converted for calls of a project key, whose principal
        knows the project's slug (slugs never change, so the URL is stable).
        """
        principal = current_principal.get(None)
        slug = principal.project_slug if principal is not None else None
        if slug is None:
            # Only reachable outside a project call; the key-protected route still works.
            return f"{self.base_url}/api/v1/images/{image_id}/content"
        return f"{self.base_url}/cdn/{slug}/img/{image_id}"

    def absolute(self, url: str) -> str:
        """A gateway-relative URL ("/signed/…") made absolute; absolute ones unchanged."""
        return url if "://" in url else f"{self.base_url}{url}"

    def image(self, image: Image) -> image_pb2.Image:
        """An Image message."""
        message = image_pb2.Image()
        self._fill_image(message, image)
        return message

    def _fill_image(self, message: image_pb2.Image, image: Image) -> None:
        # Fills the message in place (an output_image field, say): no copy of a
        # message built elsewhere, no intermediate Timestamps.
        message.id = image.id
        message.project_id = image.project_id
        message.source = SOURCE_TO_PROTO[image.source]
        message.alias = image.alias or ""
        message.mime_type = image.mime_type
        message.file_size = image.file_size
        message.width = image.width
        message.height = image.height
        if image.meta:
            message.meta.update(image.meta)
        else:
            message.meta.SetInParent()
        message.url = self.image_url(image.id)
        set_timestamp(message.create_time, image.create_time)
        set_timestamp(message.update_time, image.update_time)
        message.etag = image.etag
        if image.flow_id:
            message.flow_id = image.flow_id
        if image.generation_id:
            message.generation_id = image.generation_id
        if image.focal_point:
            message.focal_point.x, message.focal_point.y = image.focal_point

    def generation(self, generation: Generation) -> generation_pb2.Generation:
        """A Generation message."""
        message = generation_pb2.Generation()
        self._fill_generation(message, generation)
        return message

    def _fill_generation(self, message: generation_pb2.Generation, generation: Generation) -> None:
        message.id = generation.id
        message.project_id = generation.project_id
        message.prompt = generation.prompt
        message.auto_enhance = generation.auto_enhance
        message.enhancement_template = generation.enhancement_template
        message.aspect_ratio = generation.aspect_ratio
        message.status = STATUS_TO_PROTO[generation.status]
        for ref in generation.references:
            message.reference_images.add(
                image_id=ref.image_id, alias=ref.alias or "", url=self.image_url(ref.image_id)
            )
        if generation.meta:
            message.meta.update(generation.meta)
        else:
            message.meta.SetInParent()
        message.processing_time_ms = generation.processing_time_ms or 0
        message.attempt = generation.attempt
        message.revision = generation.revision
        set_timestamp(message.create_time, generation.create_time)
        set_timestamp(message.update_time, generation.update_time)
        if generation.start_time is not None:
            set_timestamp(message.start_time, generation.start_time)
        if generation.complete_time is not None:
            set_timestamp(message.complete_time, generation.complete_time)
        message.alias = generation.alias or ""
        message.flow_alias = generation.flow_alias or ""
        message.requested_references.extend(generation.requested_references)
        message.model = generation.model
        message.seed = generation.seed
        message.negative_prompt = generation.negative_prompt
        message.output_format = generation.output_format
        message.enhanced_by = generation.enhanced_by or ""
        message.enhancement_fallback_reason = generation.enhancement_fallback_reason or ""
        message.live_scope = generation.live_scope or ""
        if generation.cancel_time is not None:
            set_timestamp(message.cancel_time, generation.cancel_time)
        message.webhook_url = generation.webhook_url or ""
        message.webhook_events.extend(generation.webhook_events)
        if generation.timeout_ms is not None:
            message.timeout.FromMilliseconds(generation.timeout_ms)
        if generation.flow_id:
            message.flow_id = generation.flow_id
        if generation.original_prompt is not None:
            message.original_prompt = generation.original_prompt
        if generation.output_image is not None:
            self._fill_image(message.output_image, generation.output_image)
        if generation.status is GenerationStatus.FAILED:
            message.error.code = generation.error_code or "GENERATION_FAILED"
            message.error.message = generation.error_message or ""

    def generation_page(self, page: Page[Generation]) -> generation_pb2.ListGenerationsResponse:
        """A ListGenerationsResponse (also the answer of FlowService.ListFlowGenerations)."""
        message = generation_pb2.ListGenerationsResponse(**paging(page))
        for generation in page.items:
            self._fill_generation(message.generations.add(), generation)
        return message

    def image_page(self, page: Page[Image]) -> image_pb2.ListImagesResponse:
        """A ListImagesResponse (also the answer of FlowService.ListFlowImages)."""
        return image_pb2.ListImagesResponse(
            images=[self.image(image) for image in page.items], **paging(page)
        )


def paging(page: Page[Any], *, with_token: bool = True) -> dict[str, Any]:
    """The paging fields every list response shares."""
    fields: dict[str, Any] = {
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
        "has_more": page.has_more,
    }
    if with_token:
        fields["next_page_token"] = page.next_page_token
    return fields


def flow(value: Flow) -> flow_pb2.Flow:
    """A Flow message."""
    return flow_pb2.Flow(
        id=value.id,
        project_id=value.project_id,
        aliases=value.aliases,
        generation_count=value.generation_count,
        image_count=value.image_count,
        create_time=timestamp(value.create_time),
        update_time=timestamp(value.update_time),
    )


def flow_page(page: Page[Flow]) -> flow_pb2.ListFlowsResponse:
    """A ListFlowsResponse."""
    return flow_pb2.ListFlowsResponse(flows=[flow(f) for f in page.items], **paging(page))


def project(value: Project) -> admin_pb2.Project:
    """The wire form of a project."""
    return admin_pb2.Project(
        id=value.id,
        slug=value.slug,
        name=value.name,
        create_time=timestamp(value.create_time),
    )


def project_page(page: Page[Project]) -> admin_pb2.ListProjectsResponse:
    """A ListProjectsResponse (offset paging: it has no page token)."""
    return admin_pb2.ListProjectsResponse(
        projects=[project(p) for p in page.items], **paging(page, with_token=False)
    )


def api_key(key: ApiKey) -> admin_pb2.ApiKey:
    """The wire form of a key's description (it has no field for the secret)."""
    return admin_pb2.ApiKey(
        id=key.id,
        project_id=key.project_id or "",
        name=key.name,
        prefix=key.prefix,
        admin=key.admin,
        create_time=timestamp(key.create_time),
        expire_time=timestamp(key.expire_time),
        revoke_time=timestamp(key.revoke_time),
        last_used_time=timestamp(key.last_used_time),
    )


def webhook_delivery(value: WebhookDelivery) -> project_pb2.WebhookDelivery:
    """The wire form of a webhook delivery and its attempts."""
    return project_pb2.WebhookDelivery(
        id=value.id,
        generation_id=value.generation_id,
        event_type=value.event_type,
        url=value.url,
        status=DELIVERY_STATE_TO_PROTO[value.state],
        attempts=[
            project_pb2.WebhookAttempt(
                number=attempt.number,
                status_code=attempt.status_code or 0,
                latency_ms=attempt.latency_ms,
                error=attempt.error or "",
                create_time=timestamp(attempt.create_time),
            )
            for attempt in value.attempts
        ],
        create_time=timestamp(value.create_time),
        next_attempt_time=timestamp(value.next_attempt_time),
    )
