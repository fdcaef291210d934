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
        if verb in ("get", "put", "post", "delete", "patch")
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
    assert query["status"]["schema"]["enum"][1:] == ["pending", "processing", "success", "failed"]
    listed = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed["properties"]["data"]["type"] == "array"
    assert listed["properties"]["pagination"] == {"$ref": "#/components/schemas/Pagination"}

    update = paths["/api/v1/generations/{id}"]["put"]["requestBody"]
    body = update["content"]["application/json"]["schema"]["properties"]
    assert "id" not in body and "prompt" in body  # the path carries the id

    upload = paths["/api/v1/images/upload"]["post"]["requestBody"]["content"]
    form = upload["multipart/form-data"]["schema"]
    assert form["properties"]["file"] == {"type": "string", "format": "binary"}
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
