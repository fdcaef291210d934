"""The OpenAPI 3.1 document of the gateway, generated from the same bindings and descriptors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.api import field_behavior_pb2  # type: ignore[import-untyped]
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from server.gateway import enums, waiting
from server.gateway.cdn import EXPIRES_MAX, FALSE_WORDS, TRUE_WORDS
from server.gateway.comments import comment, first_sentence
from server.gateway.content import serves_content
from server.gateway.descriptors import enum_type, is_map, map_value, message_type
from server.gateway.events import resume_field
from server.gateway.headers import CORRELATION_ID_MAX_CHARS
from server.gateway.requests import INT_RANGES, STRING_WKT, WRAPPERS
from server.gateway.responses import PAGING_FIELDS, list_field
from server.gateway.routing import Binding, by_pattern
from server.gateway.upload import FILE_LIMIT, FILE_PART, bytes_field

F = FieldDescriptor
Schema = dict[str, Any]
INT64 = (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64, F.TYPE_UINT64, F.TYPE_FIXED64)
UNSIGNED = (F.TYPE_UINT32, F.TYPE_FIXED32, F.TYPE_UINT64, F.TYPE_FIXED64)
PACKAGE = "imagegen.v1."
# Values and limits the API enforces that the protos spell only in comments (the
# server's rules live in server/domain/rules.py, which the gateway must not import;
# tests/gateway/test_gateway_openapi.py holds these equal to them).
STRING_CHOICES: dict[str, tuple[str, ...]] = {
    "aspect_ratio": ("1:1", "16:9", "9:16", "3:2", "21:9"),
    "enhancement_template": (
        "general",
        "photorealistic",
        "illustration",
        "minimalist",
        "sticker",
        "product",
        "comic",
    ),
    "output_format": ("png", "jpeg", "webp"),
}
# Of those, the ones an answer may carry empty (the deployment's default format).
EMPTY_IN_ANSWERS = frozenset({"output_format"})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _mask_pattern(paths: Sequence[str]) -> str:
    """A FieldMask's JSON form naming only ``paths`` (camelCase, comma-separated)."""
    one = "(?:" + "|".join(_camel(path) for path in paths) + ")"
    return f"^({one}(,{one})*)?$"


_UUID = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_ALIAS = "@[A-Za-z0-9_-]{1,49}"
ALIAS_PATTERN = f"^({_ALIAS})?$"
UUID_PATTERN = f"^{_UUID}$"
# An image named by its ID or a project alias ("@hero").
IMAGE_REF_PATTERN = f"^({_UUID}|{_ALIAS})$"
# A project's slug; a live scope's slug (server/domain/tenancy.py, server/domain/live.py).
PROJECT_SLUG_PATTERN = "^[a-z0-9][a-z0-9-]{1,62}$"
SCOPE_SLUG_PATTERN = "^[A-Za-z0-9_-]{1,63}$"
# Base64 in either alphabet, padded or not, in whole bytes (what json_format decodes).
_B64 = "[A-Za-z0-9+/_-]"
BASE64_PATTERN = f"^(?:{_B64}{{4}})*(?:{_B64}{{2}}(?:==)?|{_B64}{{3}}=?)?$"


def _up_to(limit: int) -> str:
    """A regex of the decimal integers 1..``limit`` (no leading zeros)."""
    digits = str(limit)
    parts = [f"[1-9]\\d{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    for index, digit in enumerate(digits):
        low = 1 if index == 0 else 0
        if int(digit) > low:
            rest = len(digits) - index - 1
            parts.append(
                f"{digits[:index]}[{low}-{int(digit) - 1}]" + (f"\\d{{{rest}}}" if rest else "")
            )
    parts.append(digits)
    return "(?:" + "|".join(parts) + ")"


def duration_pattern(most_seconds: int) -> str:
    """The JSON form of a Duration ("3600s", "1.5s") more than 0 s and at most
    ``most_seconds``."""
    fraction = "(?:\\.\\d{1,9})?"
    return (
        f"^(?:{_up_to(most_seconds - 1)}{fraction}|0\\.\\d{{0,8}}[1-9]"
        f"|{most_seconds}(?:\\.0{{1,9}})?)s$"
    )


# A presigned URL's lifetime: at most 7 days; a run's timeout: at most a day.
TTL_PATTERN = duration_pattern(7 * 24 * 3600)
TIMEOUT_PATTERN = duration_pattern(24 * 3600)
# A webhook URL: http(s), a host, a valid port, no credentials, no fragment.
_PORT = "(?:6553[0-5]|655[0-2]\\d|65[0-4]\\d{2}|6[0-4]\\d{3}|[1-5]\\d{4}|\\d{1,4})"
WEBHOOK_URL_PATTERN = f"^https?://[A-Za-z0-9.-]+(?::{_PORT})?(?:[/?][^\\s#]*)?$"
WEBHOOK_URL_MAX_CHARS = 2048
# A model: the deployment default (empty), ``local``, or a hosted provider alone or with a
# model name (server/domain/models.py). Whether it is configured here is the server's call.
MODEL_NAME = "[A-Za-z0-9][A-Za-z0-9._:@-]*(/[A-Za-z0-9._:@-]+)*"
MODEL_PATTERN = f"^(local|openai|gemini|(openai|gemini)/{MODEL_NAME})?$"
# A watch cursor the server can have issued (it is below 2**63).
CURSOR_PATTERN = "^[0-9]{1,18}$"
# An idempotency key: printable, at most 64 characters (ASCII, so it fits a header too).
REQUEST_ID_SCHEMA: Schema = {"pattern": "^[ -~]*$", "maxLength": 64}
# The media types an upload may claim (server/domain/images.py CLAIMED_MIME_TYPES).
CLAIMED_MIME_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/webp")
# The paths an update_mask may name, per request (server/api: UPDATABLE sets).
UPDATE_MASKS: dict[str, tuple[str, ...]] = {
    "imagegen.v1.UpdateGenerationRequest": ("prompt", "aspect_ratio", "flow_id", "meta"),
    "imagegen.v1.UpdateImageRequest": ("focal_point", "meta"),
    "imagegen.v1.UpdateLiveScopeRequest": (
        "allow_new_generations",
        "new_generations_limit",
        "meta",
    ),
}
# Bounds of request fields, by field name.
REQUEST_BOUNDS: dict[str, Schema] = {
    # Not blank: the server trims white space before it counts.
    "prompt": {"minLength": 1, "maxLength": 4000, "pattern": r"\S"},
    "limit": {"minimum": 0, "maximum": 100},
    "offset": {"minimum": 0},
    "request_id": REQUEST_ID_SCHEMA,
    "reference_images": {"maxItems": 3, "items": {"type": "string", "pattern": IMAGE_REF_PATTERN}},
    "alias": {"pattern": ALIAS_PATTERN},
    "flow_alias": {"pattern": ALIAS_PATTERN},
    "id_or_alias": {"pattern": IMAGE_REF_PATTERN},
    "expire_days": {"minimum": 0, "maximum": 3650},
    "seed": {"minimum": 0, "maximum": 2**31 - 1},
    "negative_prompt": {"maxLength": 4000},
    "model": {"maxLength": 200, "pattern": MODEL_PATTERN},
    "name": {"maxLength": 200},
    "new_generations_limit": {"minimum": 0, "maximum": 100_000},
    "since_revision": {"minimum": 0},
    "since_cursor": {"pattern": f"^({CURSOR_PATTERN[1:-1]})?$"},
    "ttl": {"pattern": TTL_PATTERN},
    "timeout": {"pattern": TIMEOUT_PATTERN},
    "content": {
        "pattern": BASE64_PATTERN,
        "minLength": 2,
        "maxLength": 4 * -(-FILE_LIMIT // 3),  # the base64 of the largest upload
    },
    "mime_type": {"enum": ["", *CLAIMED_MIME_TYPES]},
    "slug": {"pattern": SCOPE_SLUG_PATTERN},
}
# Bounds of a field wherever its message appears, by full name.
FIELD_BOUNDS: dict[str, Schema] = {
    "imagegen.v1.FocalPoint.x": {"minimum": 0, "maximum": 1},
    "imagegen.v1.FocalPoint.y": {"minimum": 0, "maximum": 1},
    "imagegen.v1.CreateProjectRequest.slug": {"pattern": PROJECT_SLUG_PATTERN},
    "imagegen.v1.Webhook.url": {
        "format": "uri",
        "pattern": WEBHOOK_URL_PATTERN,
        "maxLength": WEBHOOK_URL_MAX_CHARS,
    },
    "imagegen.v1.Webhook.events": {
        "items": {"type": "string", "enum": ["processing", "completed"]},
    },
    "imagegen.v1.ListLiveScopesRequest.slug": {"pattern": f"^({SCOPE_SLUG_PATTERN[1:-1]})?$"},
    "imagegen.v1.UpdateFlowAliasesRequest.aliases": {
        "propertyNames": {"pattern": f"^{_ALIAS}$"},
        "additionalProperties": {"type": "string", "pattern": UUID_PATTERN},
    },
    **{
        f"{name}.update_mask": {"pattern": _mask_pattern(paths)}
        for name, paths in UPDATE_MASKS.items()
    },
}
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
# What the live route's autoEnhance takes.
LIVE_BOOLEAN_WORDS = TRUE_WORDS | FALSE_WORDS
CORRELATION_HEADER = "X-Request-Id"
# What the gateway accepts in the headers it checks itself (headers.py, events.py).
CORRELATION_ID_SCHEMA: Schema = {
    "type": "string",
    "pattern": f"^[!-~]([ -~]{{0,{CORRELATION_ID_MAX_CHARS - 2}}}[!-~])?$",
}
EVENT_ID_SCHEMA: Schema = {"type": "string", "pattern": "^[0-9]{1,18}$"}
RATE_HEADERS = {
    "X-Request-Id": "The correlation id: the caller's X-Request-Id, or a new one; also logged.",
    "X-RateLimit-Limit": "Calls the API key may make in a burst (when rate limits are on).",
    "X-RateLimit-Remaining": "Calls left in the key's bucket (when rate limits are on).",
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


class _Builder:
    """Collects the component schemas the operations refer to."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def message(self, descriptor: Descriptor) -> Schema:
        """A $ref to the component schema of a message (built on first use)."""
        name = descriptor.full_name.removeprefix(PACKAGE).replace(".", "_")
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: recursive messages refer to themselves
            self.schemas[name] = self.object(descriptor)
        return _ref(name)

    def object(self, descriptor: Descriptor, skip: Sequence[str] = ()) -> Schema:
        """An object schema with a property per field (JSON names), ``skip`` left out.

        ``required`` lists what the API guarantees: in a request the fields marked
        REQUIRED; in anything the gateway answers, every field without presence
        (the gateway always prints those: 0, "", false, [], {}).
        """
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for field in descriptor.fields:
            if field.name in skip:
                continue
            schema = self.field(field)
            behaviors = list(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                schema = {**schema, "readOnly": True}
            if _is_request(descriptor):
                if field_behavior_pb2.REQUIRED in behaviors:
                    required.append(field.json_name)
            elif not field.has_presence:
                required.append(field.json_name)
            properties[field.json_name] = schema
        # The gateway refuses fields a message does not have, and never prints any.
        out: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
        if comment(descriptor.full_name):
            out["description"] = comment(descriptor.full_name)
        if required:
            out["required"] = required
        return out

    def field(self, field: FieldDescriptor) -> Schema:
        """The schema of one field's JSON value, with its comment, bounds and choices."""
        if is_map(field):
            schema: Schema = {
                "type": "object",
                "additionalProperties": self.single(map_value(field)),
            }
        elif field.is_repeated:
            schema = {"type": "array", "items": self.single(field)}
        else:
            schema = self.single(field)
        request = _is_request(field.containing_type)
        if request:
            schema = {**schema, **_request_id_bounds(field), **REQUEST_BOUNDS.get(field.name, {})}
        schema = {**schema, **FIELD_BOUNDS.get(field.full_name, {})}
        if not request and _is_uuid(field):
            schema = {**schema, "format": "uuid"}
        described = [comment(field.full_name), schema.get("description", "")]
        if any(described):  # the field's comment, then its enum's values
            schema = {**schema, "description": "\n\n".join(text for text in described if text)}
        return schema

    def single(self, field: FieldDescriptor) -> Schema:
        """The schema of one (non-repeated) value of ``field``'s type."""
        kind = field.type
        if kind == F.TYPE_ENUM:
            enum = enum_type(field)
            values = sorted(enum.values, key=lambda v: v.number)
            described = [
                f"`{enums.short_name(v)}`: {comment(_value_name(enum.full_name, v.name))}"
                for v in values
                if comment(_value_name(enum.full_name, v.name))
            ]
            schema: Schema = {"type": "string", "enum": enums.short_names(enum)}
            if described:
                schema["description"] = "\n".join(described)
            return schema
        if kind == F.TYPE_MESSAGE:
            return self.well_known(field) or self.message(message_type(field))
        if kind == F.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == F.TYPE_STRING:
            choices = STRING_CHOICES.get(field.name)
            if not choices:
                return {"type": "string"}
            if field.name in EMPTY_IN_ANSWERS and not _is_request(field.containing_type):
                choices = ("", *choices)
            return {"type": "string", "enum": list(choices)}
        if kind == F.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        if kind in INT_RANGES:
            number: Schema = {"type": "integer", "format": "int64" if kind in INT64 else "int32"}
            if kind in UNSIGNED:
                number["minimum"] = 0
            return number
        return {"type": "number", "format": "float" if kind == F.TYPE_FLOAT else "double"}

    def sse_event(self, event: Descriptor, ident: str) -> str:
        """The component name of one Server-Sent Event carrying ``event`` messages."""
        data = self.message(event)
        name = str(data["$ref"]).rsplit("/", 1)[1] + "Sse"
        kinds = [enums.short_name(v) for v in enum_type(event.fields_by_name["type"]).values]
        self.schemas[name] = {
            "type": "object",
            "description": f"One Server-Sent Event of a {event.name} stream.",
            "required": ["event", "data"],
            "properties": {
                "id": {"type": "string", "description": f"The {ident}: resume after it."},
                "event": {
                    "type": "string",
                    "enum": [*kinds, "error"],
                    "description": "The event's type; `error` ends a stream that failed.",
                },
                "data": {
                    "oneOf": [data, _ref("ErrorEnvelope")],
                    "description": "The event as JSON (the error envelope for `error`).",
                },
            },
        }
        return name

    def well_known(self, field: FieldDescriptor) -> Schema | None:
        """google.protobuf types in their JSON form, or None for an ordinary message."""
        name = message_type(field).full_name
        if name == "google.protobuf.Timestamp":
            return {"type": "string", "format": "date-time"}
        if name == "google.protobuf.Duration":
            return {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$", "examples": ["3600s"]}
        if name in STRING_WKT:
            return {"type": "string"}
        if name == "google.protobuf.Struct":
            return {"type": "object", "additionalProperties": True}
        if name == "google.protobuf.ListValue":
            return {"type": "array"}
        if name == "google.protobuf.Value":
            return {}
        if name in WRAPPERS:
            return self.single(map_value(field))
        if name.startswith("google.protobuf."):
            return {"type": "object"}
        return None


def _success(data: Schema, pagination: bool = False) -> Schema:
    properties: dict[str, Schema] = {"success": {"const": True}, "data": data}
    required = ["success", "data"]
    if pagination:
        properties["pagination"] = _ref("Pagination")
        required.append("pagination")
    return {"type": "object", "required": required, "properties": properties}


def _reply_headers(extra: dict[str, str] | None = None) -> dict[str, Any]:
    described = {**RATE_HEADERS, **(extra or {})}
    return {
        name: {"description": text, "schema": {"type": "string"}}
        for name, text in described.items()
    }


class _Operations:
    """One OpenAPI operation per binding."""

    def __init__(self, builder: _Builder) -> None:
        self.builder = builder

    def operation(self, binding: Binding, names: Sequence[str]) -> Schema:
        """The operation of ``binding``; ``names`` are its path's variable names."""
        method = binding.method
        text = comment(method.full_name)
        operation: Schema = {
            "operationId": f"{binding.service.name}_{method.name}",
            "tags": [binding.service.name],
            "summary": first_sentence(text) or f"{binding.service.name}.{method.name}",
            "description": f"{text}\n\n(gRPC: `{method.full_name}`)".strip(),
            "parameters": self.parameters(binding, names),
            "responses": {
                **self.success(binding),
                "default": {"$ref": "#/components/responses/Error"},
            },
        }
        if binding.body:
            operation["requestBody"] = self.body(binding)
        return operation

    def parameters(self, binding: Binding, names: Sequence[str]) -> list[Schema]:
        request = binding.method.input_type
        params: list[Schema] = []
        for name, variable in zip(names, binding.variables, strict=True):
            field = _field_at(request, variable)
            param: Schema = {
                "name": name,
                "in": "path",
                "required": True,
                "schema": self.builder.field(field),
            }
            if name != variable:
                param["description"] = f"Fills the request field `{variable}`."
            params.append(param)
        if not binding.body:
            top = {variable.split(".")[0] for variable in binding.variables}
            for field in request.fields:
                if field.name in top or not _fits_query(field):
                    continue
                params.append(
                    {"name": field.json_name, "in": "query", "schema": self.builder.field(field)}
                )
        params.append({"$ref": "#/components/parameters/RequestId"})
        if "request_id" in request.fields_by_name:
            params.append({"$ref": "#/components/parameters/IdempotencyKey"})
        if waiting.waits(binding):
            params.append({"$ref": "#/components/parameters/Prefer"})
        if binding.streaming and resume_field(binding) is not None:
            params.append({"$ref": "#/components/parameters/LastEventId"})
        if serves_content(binding):
            params.append({"$ref": "#/components/parameters/IfNoneMatch"})
        return params

    def body(self, binding: Binding) -> Schema:
        request = binding.method.input_type
        if binding.body != "*":
            field = request.fields_by_name[binding.body]
            return {
                "required": True,
                "content": {"application/json": {"schema": self.builder.field(field)}},
            }
        path_fields = [variable.split(".")[0] for variable in binding.variables]
        schema = (
            self.builder.object(request, skip=path_fields)
            if path_fields
            else self.builder.message(request)
        )
        content: Schema = {"application/json": {"schema": schema}}
        picture = bytes_field(request)
        if picture is not None:
            form: dict[str, Schema] = {
                FILE_PART: {"type": "string", "format": "binary", "minLength": 1}
            }
            for field in request.fields:
                if field is picture or field.name in path_fields:
                    continue
                # Text parts take what the JSON field takes; an object part (meta) is sent
                # as JSON, OpenAPI's default encoding for an object in a form.
                form[field.json_name] = self.builder.field(field)
            content["multipart/form-data"] = {
                "schema": {
                    "type": "object",
                    "required": [FILE_PART],
                    "properties": form,
                    "additionalProperties": False,
                }
            }
        return {"required": not path_fields, "content": content}

    def success(self, binding: Binding) -> dict[str, Schema]:
        output = binding.method.output_type
        if serves_content(binding):
            return {
                "200": {
                    "description": "The image's bytes.",
                    "headers": _reply_headers(
                        {
                            "ETag": "A strong validator of the content.",
                            "Cache-Control": "private, no-cache",
                        }
                    ),
                    # The Content-Type is the image's own; application/octet-stream is
                    # listed for generic clients (openapi-python-client reads it as bytes).
                    "content": {
                        media: {"schema": {"type": "string", "format": "binary"}}
                        for media in (*IMAGE_TYPES, "application/octet-stream")
                    },
                },
                "304": {"description": "Not modified: If-None-Match names the current ETag."},
            }
        if binding.streaming:
            resume = resume_field(binding)
            ident = resume.name.removeprefix("since_") if resume is not None else "position"
            event_schema = str(self.builder.message(output)["$ref"]).rsplit("/", 1)[1]
            return {
                "200": {
                    "description": (
                        f"Server-Sent Events: one event per {output.name} (`id:` the {ident}, "
                        f"`event:` its type, `data:` its JSON, as the `{event_schema}` schema), "
                        "`: keep-alive` comments while idle, and a final `event: error` "
                        "(data: the error envelope) if the stream fails. Reconnect with "
                        "Last-Event-ID to resume after the last event seen."
                    ),
                    "headers": _reply_headers(),
                    "content": {
                        "text/event-stream": {
                            "schema": {
                                "type": "string",
                                "description": "A stream of events; each is the "
                                f"`{event_schema}Sse` schema in the text/event-stream format.",
                            },
                            # OpenAPI 3.1 cannot type the items of a stream (3.2's
                            # itemSchema can): this extension names their schema.
                            "x-item-schema": _ref(self.builder.sse_event(output, ident)),
                        }
                    },
                }
            }
        items = list_field(output)
        if binding.response_body:
            data = self.builder.field(output.fields_by_name[binding.response_body])
            schema = _success(data)
        elif items is not None:
            paged = any(f.name in PAGING_FIELDS for f in output.fields)
            schema = _success({"type": "array", "items": self.builder.single(items)}, paged)
        else:
            schema = _success(self.builder.message(output))
        extra = (
            {"Preference-Applied": "wait=N when Prefer: wait=N was applied."}
            if waiting.waits(binding)
            else None
        )
        status = "201" if binding.creates else "200"
        return {
            status: {
                "description": "Created." if binding.creates else "OK.",
                "headers": _reply_headers(extra),
                "content": {"application/json": {"schema": schema}},
            }
        }


def _is_request(descriptor: Descriptor | None) -> bool:
    """Whether a message is an RPC's request (what callers send), not something answered."""
    return descriptor is not None and descriptor.name.endswith("Request")


def _request_id_bounds(field: FieldDescriptor) -> Schema:
    """What a request's ID fields take: ``id`` a UUID; ``…_id`` a UUID or empty (no flow,
    no filter, an admin key, every image of a scope); the idempotency key is apart."""
    if field.type != F.TYPE_STRING or field.is_repeated or field.name == "request_id":
        return {}
    if field.name == "id":
        return {"format": "uuid", "pattern": UUID_PATTERN}
    if field.name.endswith("_id"):
        return {"pattern": f"^({_UUID})?$"}
    return {}


def _is_uuid(field: FieldDescriptor) -> bool:
    """An ID the server assigns (a UUID): ``id``/``…_id`` set by it, never empty when present."""
    if field.type != F.TYPE_STRING or field.is_repeated or field.name == "request_id":
        return False
    if field.name != "id" and not field.name.endswith("_id"):
        return False
    behaviors = list(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])
    return field_behavior_pb2.OUTPUT_ONLY in behaviors or field.has_presence


def _value_name(enum_full_name: str, value: str) -> str:
    """An enum value's full name: values are scoped beside their enum."""
    return enum_full_name.rsplit(".", 1)[0] + "." + value


def _field_at(descriptor: Descriptor, dotted: str) -> FieldDescriptor:
    field: FieldDescriptor | None = None
    for part in dotted.split("."):
        field = descriptor.fields_by_name[part]
        if field.message_type is not None:
            descriptor = message_type(field)
    assert field is not None
    return field


def _fits_query(field: FieldDescriptor) -> bool:
    if is_map(field):
        return False
    if field.type != F.TYPE_MESSAGE:
        return True
    name = message_type(field).full_name
    return name in STRING_WKT or name in WRAPPERS


def _components(builder: _Builder) -> Schema:
    error = {
        "type": "object",
        "required": ["success", "error"],
        "properties": {
            "success": {"const": False},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "string",
                        "description": "The API's ErrorInfo reason (VALIDATION_ERROR, "
                        "GENERATION_NOT_FOUND, …), else the gRPC code name.",
                    },
                    "message": {"type": "string"},
                    "status": {"type": "string", "description": "The gRPC status code name."},
                    "details": {
                        "type": "object",
                        "properties": {
                            "fieldViolations": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "field": {"type": "string"},
                                        "description": {"type": "string"},
                                    },
                                },
                            },
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                            "retryAfterSeconds": {"type": "number"},
                        },
                    },
                },
            },
        },
    }
    pagination = {
        "type": "object",
        # nextPageToken only where the API pages by key (not ListProjects).
        "required": ["total", "limit", "offset", "hasMore"],
        "properties": {
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
            "hasMore": {"type": "boolean"},
            "nextPageToken": {
                "type": "string",
                "description": "Pass as pageToken; empty on the last page.",
            },
        },
    }
    builder.schemas["ErrorEnvelope"] = error
    builder.schemas["Pagination"] = pagination

    def header(name: str, text: str, schema: Schema | None = None) -> Schema:
        return {
            "name": name,
            "in": "header",
            "required": False,
            "description": text,
            "schema": schema or {"type": "string"},
        }

    return {
        "schemas": dict(sorted(builder.schemas.items())),
        "responses": {
            "Error": {
                "description": "An error, with the HTTP status that matches its gRPC code.",
                "headers": _reply_headers({"Retry-After": "Seconds to wait (on 429)."}),
                "content": {"application/json": {"schema": _ref("ErrorEnvelope")}},
            }
        },
        "parameters": {
            "RequestId": header(
                "X-Request-Id",
                "Carried to the API and its logs; returned. Anything else is 400.",
                CORRELATION_ID_SCHEMA,
            ),
            "IdempotencyKey": header(
                "Idempotency-Key",
                "Sets request_id: a retry with the same key returns the first result.",
                {"type": "string", "pattern": "^[!-~]([ -~]{0,62}[!-~])?$"},
            ),
            "Prefer": header(
                "Prefer",
                "wait=N (seconds, at most 60): answer once the generation is SUCCESS, "
                "FAILED or CANCELLED, or after N seconds.",
            ),
            "LastEventId": header("Last-Event-ID", "Resume after this event id.", EVENT_ID_SCHEMA),
            "IfNoneMatch": header(
                "If-None-Match", "An ETag seen before: 304 if the content is unchanged."
            ),
        },
        "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
    }


def _public_paths() -> dict[str, dict[str, Schema]]:
    """The public delivery routes (server/gateway/cdn.py): GET and HEAD, no API key."""

    def path(name: str, pattern: str, text: str) -> Schema:
        return {
            "name": name,
            "in": "path",
            "required": True,
            "description": text,
            "schema": {"type": "string", "pattern": pattern},
        }

    def query(name: str, schema: Schema, text: str, *, required: bool = False) -> Schema:
        return {
            "name": name,
            "in": "query",
            "required": required,
            "description": text,
            "schema": schema,
        }

    slug = path("project_slug", PROJECT_SLUG_PATTERN, "The project's slug.")
    image_headers = {
        "ETag": "A strong validator of the content.",
        "Cache-Control": "public, no-cache (signed URLs: private, no-cache).",
        "X-Image-Id": "The image's ID.",
        "X-Content-Type-Options": "nosniff.",
    }
    live_headers = {**image_headers, "X-Cache-Status": "HIT or MISS."}

    def operation(rpc: str, text: str, params: list[Schema], headers: dict[str, str]) -> Schema:
        text = f"{text}\n\n(served through the internal `imagegen.v1.DeliveryService.{rpc}`)"
        name = f"PublicDelivery_{rpc}"
        described = {
            key: {"description": value, "schema": {"type": "string"}}
            for key, value in {CORRELATION_HEADER: RATE_HEADERS["X-Request-Id"], **headers}.items()
        }
        return {
            "operationId": name,
            "tags": ["PublicDelivery"],
            "summary": first_sentence(text),
            "description": text,
            "security": [],
            "parameters": [*params, {"$ref": "#/components/parameters/IfNoneMatch"}],
            "responses": {
                "200": {
                    "description": "The image's bytes (HEAD: the headers alone).",
                    "headers": described,
                    # application/octet-stream for generic clients, as on the content route.
                    "content": {
                        media: {"schema": {"type": "string", "format": "binary"}}
                        for media in (*IMAGE_TYPES, "application/octet-stream")
                    },
                },
                "304": {"description": "Not modified: If-None-Match names the current ETag."},
                "default": {"$ref": "#/components/responses/Error"},
            },
        }

    routes = {
        "/cdn/{project_slug}/img/{image}": operation(
            "ReadPublicImage",
            "A project's image by ID or project alias, without a key. An unknown project, "
            "image or alias is the same 404.",
            [slug, path("image", IMAGE_REF_PATTERN, "An image ID or a project alias (@hero).")],
            image_headers,
        ),
        "/cdn/{project_slug}/live/{scope}": operation(
            "ReadLiveImage",
            "The cached image of a live URL for these parameters, generated on a miss. "
            "Misses are rate-limited per client address (429).",
            [
                slug,
                path("scope", SCOPE_SLUG_PATTERN, "The live scope's slug."),
                query(
                    "prompt",
                    REQUEST_BOUNDS["prompt"] | {"type": "string"},
                    "The prompt.",
                    required=True,
                ),
                query(
                    "aspectRatio",
                    {"type": "string", "enum": list(STRING_CHOICES["aspect_ratio"])},
                    "The aspect ratio; default 1:1.",
                ),
                query(
                    "autoEnhance",
                    {"type": "string", "enum": sorted(LIVE_BOOLEAN_WORDS)},
                    "Whether the prompt is enhanced first (true/1/yes or false/0/no).",
                ),
                query(
                    "template",
                    {"type": "string", "enum": list(STRING_CHOICES["enhancement_template"])},
                    "The enhancement template, when autoEnhance is on.",
                ),
            ],
            live_headers,
        ),
        "/signed/img/{image_id}": operation(
            "ReadSignedImage",
            "An image named by a signed URL of the local image store (GetImageUrl hands "
            "these out). A bad or expired signature is 403.",
            [
                path("image_id", UUID_PATTERN, "The image's ID."),
                query(
                    "expires",
                    {"type": "integer", "format": "int64", "minimum": 0, "maximum": EXPIRES_MAX},
                    "When the URL expires (Unix seconds).",
                    required=True,
                ),
                query("signature", {"type": "string"}, "The URL's signature.", required=True),
            ],
            image_headers,
        ),
    }
    return {
        route: {"get": op, "head": {**op, "operationId": op["operationId"] + "Head"}}
        for route, op in routes.items()
    }


def document(bindings: Sequence[Binding], *, version: str = "1") -> Schema:
    """The OpenAPI document: every binding's path and method, schemas from the descriptors."""
    builder = _Builder()
    operations = _Operations(builder)
    paths: dict[str, dict[str, Schema]] = {}
    for verbs in by_pattern(bindings).values():
        # Templates that differ only in variable names ("/images/{id}" for DELETE,
        # "/images/{id_or_alias}" for GET) are one path in OpenAPI: the first one's names.
        first = next(iter(verbs.values()))
        path = first.template.replace("=**}", "}").replace("=*}", "}")
        for binding in verbs.values():
            operation = operations.operation(binding, first.variables)
            paths.setdefault(path, {})[binding.verb.lower()] = operation
    paths.update(_public_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "imagegen REST gateway",
            "version": version,
            "description": "JSON over HTTP for the imagegen.v1 gRPC API, generated from its "
            "google.api.http annotations. Every answer is an envelope: "
            '{"success": true, "data": …} (lists add "pagination"), or '
            '{"success": false, "error": {"code", "message", "details"}}.',
        },
        "servers": [
            {"url": "/", "description": "This gateway: the origin that serves this document."}
        ],
        "security": [{"apiKey": []}],
        "paths": dict(sorted(paths.items())),
        "components": _components(builder),
    }
