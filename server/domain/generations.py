"""The Generation resource, its outbox snapshots, and the validation of its commands."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from server.domain.aliases import is_alias
from server.domain.errors import ValidationErrors
from server.domain.fields import (
    FlowChoice,
    check_alias,
    check_flow_alias,
    check_meta,
    check_request_id,
    flow_choice,
)
from server.domain.ids import is_uuid
from server.domain.images import Image, ImageSource
from server.domain.lifecycle import GenerationStatus
from server.domain.models import (
    LOCAL,
    ModelRef,
    check_model,
    check_negative_prompt,
    check_output_format,
    check_seed,
    run_seed,
)
from server.domain.rules import (
    ASPECT_RATIO_SIZES,
    DEFAULT_ASPECT_RATIO,
    DEFAULT_ENHANCEMENT_TEMPLATE,
    ENHANCEMENT_TEMPLATES,
    MAX_REFERENCES,
    MAX_TIMEOUT_SECONDS,
    PROMPT_MAX_CHARS,
)
from server.domain.webhooks import WebhookTarget, check_webhook


class EventType(StrEnum):
    """What an outbox event records."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class ReferenceUse:
    """An image a generation used, and the alias it was named by (if any)."""

    image_id: str
    alias: str | None


@dataclass(frozen=True, slots=True)
class Generation:
    """One generation as stored, with its output image and references."""

    id: str
    project_id: str
    flow_id: str | None
    input_prompt: str
    enhanced_prompt: str | None
    auto_enhance: bool
    enhancement_template: str
    aspect_ratio: str
    status: GenerationStatus
    output_image: Image | None
    references: tuple[ReferenceUse, ...]
    requested_references: tuple[str, ...]
    alias: str | None
    flow_alias: str | None
    meta: dict[str, Any]
    error_code: str | None
    error_message: str | None
    processing_time_ms: int | None
    run: int
    attempt: int
    revision: int
    create_time: datetime
    update_time: datetime
    start_time: datetime | None
    complete_time: datetime | None
    # Added with hosted models; defaults keep older outbox snapshots readable.
    model: str = LOCAL
    requested_seed: int | None = None
    negative_prompt: str = ""
    output_format: str = ""
    enhanced_by: str | None = None
    enhancement_fallback_reason: str | None = None
    # The live scope whose live URL made this generation, if one did.
    live_scope: str | None = None

    @property
    def seed(self) -> int:
        """The seed of the current run: the caller's, or one derived from the ID and run."""
        if self.requested_seed is not None:
            return self.requested_seed
        return run_seed(self.id, self.run)

    # Job control (issue 15); defaults keep older outbox snapshots readable.
    timeout_ms: int | None = None
    deadline_time: datetime | None = None
    cancel_time: datetime | None = None
    webhook_url: str | None = None
    webhook_events: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        """The prompt actually used: the enhanced one when enhancement ran."""
        return self.enhanced_prompt or self.input_prompt

    @property
    def original_prompt(self) -> str | None:
        """The caller's prompt, only when enhancement replaced it."""
        return self.input_prompt if self.enhanced_prompt else None

    @property
    def size(self) -> tuple[int, int]:
        """Output pixel size for the aspect ratio."""
        return ASPECT_RATIO_SIZES[self.aspect_ratio]


# --- outbox snapshots: a Generation as JSON, so watchers replay exact past states ---


def to_snapshot(generation: Generation) -> dict[str, Any]:
    """A JSON-safe dict of ``generation``: what a JSON round trip of ``asdict`` gives.

    Built in one walk (every change writes one, on the hot path): ``asdict`` deep-copies
    every value and the round trip then encodes and parses it all again.
    """
    return _json_safe(generation)  # type: ignore[no-any-return]


def _json_safe(value: Any) -> Any:
    """``value`` as JSON would bring it back: tuples as lists, enums and times as strings."""
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool or kind is float:
        return value
    names = _DATACLASS_FIELDS.get(kind)
    if names is not None:
        return {name: _json_safe(getattr(value, name)) for name in names}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        names = _DATACLASS_FIELDS[kind] = tuple(f.name for f in fields(value))
        return {name: _json_safe(getattr(value, name)) for name in names}
    if kind is list or kind is tuple:
        return [_json_safe(item) for item in value]
    if kind is dict and all(type(key) is str for key in value):
        return {key: _json_safe(item) for key, item in value.items()}
    # Anything else (a subclass, a non-string key): exactly what the round trip gives.
    return json.loads(json.dumps(value, default=_json_default))


# The field names of each dataclass met in a snapshot (``fields`` builds a tuple per call).
_DATACLASS_FIELDS: dict[type, tuple[str, ...]] = {}


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def from_snapshot(data: dict[str, Any]) -> Generation:
    """The Generation a snapshot holds."""
    d = dict(data)
    for key in (
        "create_time",
        "update_time",
        "start_time",
        "complete_time",
        "deadline_time",
        "cancel_time",
    ):
        d[key] = datetime.fromisoformat(d[key]) if d.get(key) else None
    d["webhook_events"] = tuple(d.get("webhook_events") or ())
    d["status"] = GenerationStatus(d["status"])
    d["references"] = tuple(ReferenceUse(**r) for r in d["references"])
    d["requested_references"] = tuple(d["requested_references"])
    if d["output_image"]:
        image = dict(d["output_image"])
        image["source"] = ImageSource(image["source"])
        image["create_time"] = datetime.fromisoformat(image["create_time"])
        image["update_time"] = datetime.fromisoformat(image["update_time"])
        fp = image["focal_point"]
        image["focal_point"] = tuple(fp) if fp else None
        d["output_image"] = Image(**image)
    return Generation(**d)


# --- commands ---


@dataclass(frozen=True, slots=True)
class CreateGeneration:
    """A validated CreateGeneration request."""

    prompt: str
    aspect_ratio: str
    references: tuple[str, ...]
    flow: FlowChoice
    alias: str | None
    flow_alias: str | None
    auto_enhance: bool
    enhancement_template: str
    meta: dict[str, Any]
    request_id: str | None
    # None: the deployment's default model (resolved by the service).
    model: ModelRef | None = None
    seed: int | None = None
    negative_prompt: str = ""
    output_format: str = ""
    timeout_ms: int | None = None
    webhook: WebhookTarget | None = None


@dataclass(frozen=True, slots=True)
class UpdateGeneration:
    """A validated UpdateGeneration request: None means "leave as is"."""

    prompt: str | None = None
    aspect_ratio: str | None = None
    flow: FlowChoice | None = None
    meta: dict[str, Any] | None = None
    changed: frozenset[str] = field(default_factory=frozenset)


def check_prompt(errors: ValidationErrors, prompt: str) -> str:
    """The trimmed prompt, recording a violation if it is empty or too long."""
    text = prompt.strip()
    if not text:
        errors.add("prompt", "is required (1 to 4000 characters)")
    elif len(text) > PROMPT_MAX_CHARS:
        errors.add("prompt", f"is {len(text)} characters; at most {PROMPT_MAX_CHARS}")
    return text


def check_aspect_ratio(errors: ValidationErrors, value: str) -> str:
    """The aspect ratio (default 1:1), recording a violation if unknown."""
    ratio = value or DEFAULT_ASPECT_RATIO
    if ratio not in ASPECT_RATIO_SIZES:
        errors.add("aspect_ratio", f"must be one of {', '.join(ASPECT_RATIO_SIZES)}")
    return ratio


def check_timeout(errors: ValidationErrors, seconds: int, nanos: int) -> int | None:
    """A google.protobuf.Duration as whole milliseconds (rounded up), or a violation."""
    if not -999_999_999 <= nanos <= 999_999_999 or (seconds > 0 > nanos or seconds < 0 < nanos):
        errors.add("timeout", "is not a valid duration")
        return None
    total_ns = seconds * 1_000_000_000 + nanos
    if total_ns <= 0:
        errors.add("timeout", "must be positive")
        return None
    if total_ns > MAX_TIMEOUT_SECONDS * 1_000_000_000:
        errors.add("timeout", f"must be at most {MAX_TIMEOUT_SECONDS} seconds")
        return None
    return -(-total_ns // 1_000_000)


def validate_create(
    *,
    prompt: str,
    aspect_ratio: str,
    references: list[str],
    flow_present: bool,
    flow_id: str,
    alias: str,
    flow_alias: str,
    auto_enhance: bool | None,
    enhancement_template: str,
    meta: dict[str, Any],
    request_id: str,
    model: str = "",
    seed_present: bool = False,
    seed: int = 0,
    negative_prompt: str = "",
    output_format: str = "",
    timeout: tuple[int, int] | None = None,
    webhook: tuple[str, list[str]] | None = None,
) -> CreateGeneration:
    """Check every field of a create request and report all problems at once."""
    errors = ValidationErrors()
    text = check_prompt(errors, prompt)
    ratio = check_aspect_ratio(errors, aspect_ratio)
    refs: list[str] = []
    for i, ref in enumerate(references):
        if not (is_uuid(ref) or is_alias(ref)):
            errors.add(f"reference_images[{i}]", "must be an image ID or an @alias")
        elif ref not in refs:
            refs.append(ref.lower() if is_uuid(ref) else ref)
    if len(refs) > MAX_REFERENCES:
        errors.add("reference_images", f"at most {MAX_REFERENCES} references")
    flow = flow_choice(errors, flow_present, flow_id)
    project_alias = check_alias(errors, "alias", alias)
    f_alias = check_flow_alias(errors, flow_alias, flow)
    template = enhancement_template or DEFAULT_ENHANCEMENT_TEMPLATE
    if template not in ENHANCEMENT_TEMPLATES:
        errors.add("enhancement_template", f"must be one of {', '.join(ENHANCEMENT_TEMPLATES)}")
    checked_meta = check_meta(errors, meta)
    rid = check_request_id(errors, request_id)
    model_ref = check_model(errors, model)
    checked_seed = check_seed(errors, seed_present, seed)
    negative = check_negative_prompt(errors, negative_prompt)
    fmt = check_output_format(errors, output_format)
    timeout_ms = check_timeout(errors, *timeout) if timeout is not None else None
    target = check_webhook(errors, *webhook) if webhook is not None else None
    errors.raise_if_any()
    return CreateGeneration(
        prompt=text,
        aspect_ratio=ratio,
        references=tuple(refs),
        flow=flow,
        alias=project_alias,
        flow_alias=f_alias,
        auto_enhance=True if auto_enhance is None else auto_enhance,
        enhancement_template=template,
        meta=checked_meta,
        request_id=rid,
        model=model_ref,
        seed=checked_seed,
        negative_prompt=negative,
        output_format=fmt,
        timeout_ms=timeout_ms,
        webhook=target,
    )
