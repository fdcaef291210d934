"""/openapi.json: generated from the descriptors, valid OpenAPI, and in step with the routes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from rest import (
    standalone_gateway,
)

from server.api.generations import UPDATABLE as GENERATION_UPDATABLE
from server.api.live import UPDATABLE as SCOPE_UPDATABLE
from server.domain import aliases, images, live, models, rules, tenancy, webhooks
from server.domain.rules import (
    ASPECT_RATIO_SIZES,
    ENHANCEMENT_TEMPLATES,
    LIST_MAX_LIMIT,
    MAX_REFERENCES,
    MODEL_MAX_CHARS,
    OUTPUT_FORMATS,
    PROMPT_MAX_CHARS,
    REQUEST_ID_MAX_CHARS,
    SEED_MAX,
)
from server.gateway import create_gateway, openapi
from server.gateway.cdn import FALSE_WORDS, TRUE_WORDS
from server.gateway.comments import comment
from server.gateway.routing import SERVICES, bindings


@pytest.fixture(scope="module")
async def spec() -> AsyncIterator[dict[str, Any]]:
    # The document needs no API behind it: the target is never called.
    async with standalone_gateway("127.0.0.1:1") as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/openapi.json")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        yield response.json()


def test_document_is_valid_openapi(spec: dict[str, Any]) -> None:
    validate(spec)  # raises on any violation
    assert spec["openapi"].startswith("3.")


def test_every_annotated_rpc_is_a_path_and_method(spec: dict[str, Any]) -> None:
    annotated = sum(len(service.methods) for service in SERVICES)
    operations = [
        (path, verb, op)
        for path, item in spec["paths"].items()
        for verb, op in item.items()
        if verb in ("get", "put", "post", "delete", "patch") and path.startswith("/api/")
    ]
    assert len(operations) == annotated == len(bindings())
    ids = {op["operationId"] for _, _, op in operations}
    assert len(ids) == annotated
    for binding in bindings():
        template = re.sub(r"\{[^}]+\}", "{}", binding.template)
        matching = [
            op
            for path, verb, op in operations
            if re.sub(r"\{[^}]+\}", "{}", path) == template and verb == binding.verb.lower()
        ]
        assert [op["operationId"] for op in matching] == [
            f"{binding.service.name}_{binding.method.name}"
        ]
    for path, _, op in operations:  # every path variable is a required path parameter
        names = re.findall(r"\{([^}]+)\}", path)
        declared = [p["name"] for p in op["parameters"] if p.get("in") == "path"]
        assert declared == names, (path, declared)
    assert "/api/v1/generations:watch" in spec["paths"]


def test_public_delivery_routes_are_described_without_a_key(spec: dict[str, Any]) -> None:
    # Every route the gateway serves is in the document: the public ones (cdn.py) too.
    served = {
        route.path
        for route in create_gateway("127.0.0.1:1").routes
        if route.path.startswith(("/cdn/", "/signed/"))  # type: ignore[attr-defined]
    }
    assert served == {path for path in spec["paths"] if path.startswith(("/cdn/", "/signed/"))}
    for path in served:
        item = spec["paths"][path]
        assert set(item) == {"get", "head"}
        for op in item.values():
            assert op["security"] == []  # no API key
            assert {"200", "304", "default"} <= set(op["responses"])
            declared = [p["name"] for p in op["parameters"] if p.get("in") == "path"]
            assert declared == re.findall(r"\{([^}]+)\}", path)
    live = spec["paths"]["/cdn/{project_slug}/live/{scope}"]["get"]
    query = {p["name"]: p for p in live["parameters"] if p.get("in") == "query"}
    assert set(query) == {"prompt", "aspectRatio", "autoEnhance", "template"}
    assert query["prompt"]["required"] is True
    assert set(query["autoEnhance"]["schema"]["enum"]) == TRUE_WORDS | FALSE_WORDS
    signed = spec["paths"]["/signed/img/{image_id}"]["get"]
    assert {p["name"] for p in signed["parameters"] if p.get("required")} >= {
        "image_id",
        "expires",
        "signature",
    }


def test_schemas_are_camel_case_with_short_enums(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    generation = schemas["Generation"]["properties"]
    assert {"aspectRatio", "outputImage", "processingTimeMs", "createTime"} <= set(generation)
    assert generation["status"]["enum"] == [
        "unspecified",
        "pending",
        "processing",
        "success",
        "failed",
        "cancelled",
    ]
    assert generation["revision"]["type"] == "integer" and generation["id"]["readOnly"] is True
    assert generation["createTime"]["format"] == "date-time"
    assert generation["meta"]["type"] == "object"
    assert schemas["CreateGenerationRequest"]["required"] == ["prompt"]
    assert schemas["Flow"]["properties"]["aliases"]["additionalProperties"] == {"type": "string"}


def test_operations_describe_bodies_envelopes_and_headers(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    create = paths["/api/v1/generations"]["post"]
    assert "201" in create["responses"]
    envelope = create["responses"]["201"]["content"]["application/json"]["schema"]
    assert envelope["properties"]["data"] == {"$ref": "#/components/schemas/Generation"}
    headers = [p.get("$ref", "") for p in create["parameters"]]
    assert "#/components/parameters/IdempotencyKey" in headers
    assert "#/components/parameters/Prefer" in headers

    listing = paths["/api/v1/generations"]["get"]
    query = {p["name"]: p for p in listing["parameters"] if p.get("in") == "query"}
    assert set(query) == {"flowId", "status", "limit", "offset", "pageToken"}
    assert query["status"]["schema"]["enum"][1:] == [
        "pending",
        "processing",
        "success",
        "failed",
        "cancelled",
    ]
    listed = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed["properties"]["data"]["type"] == "array"
    assert listed["properties"]["pagination"] == {"$ref": "#/components/schemas/Pagination"}

    update = paths["/api/v1/generations/{id}"]["put"]["requestBody"]
    body = update["content"]["application/json"]["schema"]["properties"]
    assert "id" not in body and "prompt" in body  # the path carries the id

    upload = paths["/api/v1/images/upload"]["post"]["requestBody"]["content"]
    form = upload["multipart/form-data"]["schema"]
    assert form["properties"]["file"] == {"type": "string", "format": "binary", "minLength": 1}
    assert "content" not in form["properties"] and "meta" in form["properties"]

    events = paths["/api/v1/generations/{id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert {"$ref": "#/components/parameters/LastEventId"} in events["parameters"]
    content = paths["/api/v1/images/{id_or_alias}/content"]["get"]
    assert {"200", "304"} <= set(content["responses"])
    # DELETE /images/{id} shares the path of GET /images/{id_or_alias}.
    delete = paths["/api/v1/images/{id_or_alias}"]["delete"]
    assert [p["name"] for p in delete["parameters"] if p.get("in") == "path"] == ["id_or_alias"]
    assert spec["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"


def test_model_fields_are_in_the_create_request_and_the_generation(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    create = schemas["CreateGenerationRequest"]["properties"]
    assert {"model", "seed", "negativePrompt", "outputFormat"} <= set(create)
    generation = schemas["Generation"]["properties"]
    added = {"model", "seed", "negativePrompt", "outputFormat", "enhancedBy"}
    assert added | {"enhancementFallbackReason"} <= set(generation)
    assert generation["seed"]["readOnly"] is True


def test_descriptions_come_from_the_proto_comments(spec: dict[str, Any]) -> None:
    operations = [op for item in spec["paths"].values() for op in item.values()]
    for op in operations:  # every RPC is commented in the protos
        assert op["summary"] and op["description"].endswith("`)"), op["operationId"]
    create = spec["paths"]["/api/v1/generations"]["post"]
    assert create["summary"].startswith("Accepts a generation and returns it at once")
    schemas = spec["components"]["schemas"]
    generation = schemas["Generation"]
    assert generation["description"] == comment("imagegen.v1.Generation") != ""
    assert generation["properties"]["revision"]["description"] == comment(
        "imagegen.v1.Generation.revision"
    )
    # An enum field: its comment, then each value's.
    status = generation["properties"]["status"]["description"]
    assert status.startswith(comment("imagegen.v1.Generation.status"))
    assert "`pending`: " + comment("imagegen.v1.GENERATION_STATUS_PENDING") in status
    for name, schema in schemas.items():
        if name in ("ErrorEnvelope", "Pagination") or name.endswith("Sse"):
            continue
        assert schema.get("description"), name


def test_answers_require_what_the_gateway_always_prints(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    required = set(schemas["Generation"]["required"])
    # Fields without presence are always printed; optional fields and messages may be absent.
    assert {"id", "status", "prompt", "aspectRatio", "revision"} <= required
    assert {"referenceImages", "requestedReferences"} <= required
    assert not {"outputImage", "error", "flowId", "originalPrompt", "createTime"} & required
    assert schemas["Pagination"]["required"] == ["total", "limit", "offset", "hasMore"]
    # A request requires only what the API requires.
    assert schemas["CreateGenerationRequest"]["required"] == ["prompt"]


def test_enums_formats_bounds_servers(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    create = schemas["CreateGenerationRequest"]["properties"]
    assert create["aspectRatio"]["enum"] == list(ASPECT_RATIO_SIZES)
    assert create["enhancementTemplate"]["enum"] == list(ENHANCEMENT_TEMPLATES)
    assert schemas["Generation"]["properties"]["aspectRatio"]["enum"] == list(ASPECT_RATIO_SIZES)
    assert create["prompt"]["maxLength"] == PROMPT_MAX_CHARS
    assert create["requestId"]["maxLength"] == REQUEST_ID_MAX_CHARS
    assert create["referenceImages"]["maxItems"] == MAX_REFERENCES
    assert create["outputFormat"]["enum"] == list(OUTPUT_FORMATS)
    # An answer may carry it empty: the deployment's default format.
    assert schemas["Generation"]["properties"]["outputFormat"]["enum"] == ["", *OUTPUT_FORMATS]
    assert (create["seed"]["minimum"], create["seed"]["maximum"]) == (0, SEED_MAX)
    assert create["model"]["maxLength"] == MODEL_MAX_CHARS
    assert create["negativePrompt"]["maxLength"] == PROMPT_MAX_CHARS
    assert re.fullmatch(create["alias"]["pattern"], "@hero") and re.fullmatch(
        create["alias"]["pattern"], ""
    )
    assert not re.fullmatch(create["alias"]["pattern"], "hero")
    listing = spec["paths"]["/api/v1/generations"]["get"]["parameters"]
    limit = next(p for p in listing if p.get("name") == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"]) == (0, LIST_MAX_LIMIT)
    assert schemas["FocalPoint"]["properties"]["x"]["maximum"] == 1
    # Server-assigned IDs are UUIDs; a key's project_id may be "" (an admin key).
    assert schemas["Generation"]["properties"]["id"]["format"] == "uuid"
    assert schemas["Image"]["properties"]["generationId"]["format"] == "uuid"
    assert "format" not in schemas["ApiKey"]["properties"]["projectId"]
    assert "format" not in create["requestId"]
    assert spec["servers"] == [{"url": "/", "description": ANY_TEXT}]


def test_binary_and_event_stream_answers_are_typed(spec: dict[str, Any]) -> None:
    read = spec["paths"]["/api/v1/images/{id_or_alias}/content"]["get"]["responses"]["200"]
    assert set(read["content"]) == {
        "image/png",
        "image/jpeg",
        "image/webp",
        "application/octet-stream",
    }
    assert all(m["schema"]["format"] == "binary" for m in read["content"].values())
    events = spec["paths"]["/api/v1/generations/{id}/events"]["get"]["responses"]["200"]
    stream = events["content"]["text/event-stream"]
    assert stream["x-item-schema"] == {"$ref": "#/components/schemas/GenerationEventSse"}
    sse = spec["components"]["schemas"]["GenerationEventSse"]
    assert sse["properties"]["event"]["enum"] == [
        "unspecified",
        "snapshot",
        "created",
        "updated",
        "deleted",
        "error",
    ]
    assert sse["properties"]["data"]["oneOf"][0] == {"$ref": "#/components/schemas/GenerationEvent"}


class _AnyText:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY_TEXT = _AnyText()


def test_request_rules_are_the_servers() -> None:
    # The gateway may not import the domain; these are its copies, held equal here.
    assert {name: set(paths) for name, paths in openapi.UPDATE_MASKS.items()} == {
        "imagegen.v1.UpdateGenerationRequest": set(GENERATION_UPDATABLE),
        "imagegen.v1.UpdateImageRequest": set(images.UPDATABLE_FIELDS),
        "imagegen.v1.UpdateLiveScopeRequest": set(SCOPE_UPDATABLE),
    }
    assert tuple(images.CLAIMED_MIME_TYPES) == openapi.CLAIMED_MIME_TYPES
    assert f"^{tenancy.SLUG_PATTERN.pattern}$" == openapi.PROJECT_SLUG_PATTERN
    assert f"^{live.SCOPE_SLUG.pattern}$" == openapi.SCOPE_SLUG_PATTERN
    assert f"^({aliases.ALIAS_RE.pattern})?$" == openapi.ALIAS_PATTERN
    bounds = openapi.REQUEST_BOUNDS
    assert bounds["name"]["maxLength"] == tenancy.NAME_MAX_CHARS
    assert bounds["expire_days"]["maximum"] == tenancy.EXPIRE_DAYS_MAX
    assert bounds["new_generations_limit"]["maximum"] == live.MAX_GENERATIONS_LIMIT
    assert models._MODEL_NAME_RE.pattern[1:-1] == openapi.MODEL_NAME
    assert rules.WEBHOOK_URL_MAX_CHARS == openapi.WEBHOOK_URL_MAX_CHARS
    # Every integer count of seconds is accepted exactly when the server accepts it.
    ttl, timeout = re.compile(openapi.TTL_PATTERN), re.compile(openapi.TIMEOUT_PATTERN)
    ttl_most = int(images.PRESIGN_MAX_TTL.total_seconds())
    for seconds in range(-2, ttl_most + 100_000):
        assert bool(ttl.fullmatch(f"{seconds}s")) == (0 < seconds <= ttl_most), seconds
        assert bool(timeout.fullmatch(f"{seconds}s")) == (
            0 < seconds <= rules.MAX_TIMEOUT_SECONDS
        ), seconds
    # A webhook URL the schema takes is one the server takes.
    url = re.compile(openapi.WEBHOOK_URL_PATTERN)
    for candidate in [
        "http://a",
        "https://example.com:8443/hook?x=1",
        "http://10.0.0.1:65535/p@q",
        "https://h.example/x?y=%20",
        "http://a:65536/",
        "ftp://a/",
        "http://u:p@a/",
        "http://a/#f",
        "http:///x",
        "https://a b/",
    ]:
        if url.fullmatch(candidate):
            assert webhooks.url_problem(candidate) is None, candidate
    assert url.fullmatch("https://example.com:8443/hook?x=1")
    most = ttl_most
    accepted = ["1s", "0.5s", "3600s", "3600.25s", f"{most - 1}.999999999s", f"{most}s"]
    refused = ["0s", "0.0s", "-1s", f"{most}.5s", f"{most + 1}s", "1", "s", "1.s"]
    assert all(ttl.fullmatch(value) for value in accepted)
    assert not any(ttl.fullmatch(value) for value in refused)
