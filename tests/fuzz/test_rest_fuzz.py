"""Schemathesis against the served /openapi.json: every operation, schema-valid and
mutated (negative) requests, with a project key and with an admin key: zero 5xx answers.

And the document is tight: a schema-valid request with a valid key is accepted, or
refused only for a reason the schema cannot express (ALLOWED_REFUSALS says which, and
why); anything else means the schema should have said it up front."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from served import Served

from server.gateway import openapi
from server.gateway.routing import bindings

pytestmark = pytest.mark.slow

# Requests per operation and mode: enough to reach every field's edges, bounded in time.
EXAMPLES = 25
OPERATIONS = [
    (method.upper(), path)
    for path, item in openapi.document(bindings())["paths"].items()
    for method in item
    if method in ("get", "head", "post", "put", "patch", "delete")
]
# What a schema-valid request may still be refused for, by (HTTP status, reason code),
# or by (status, code, field) for field violations: none of it is in a request's shape.
ALLOWED_REFUSALS: dict[tuple[Any, ...], str] = {
    (404, "*_NOT_FOUND"): "a well-formed ID, alias or slug that names nothing (yet): the "
    "schema cannot know what exists",
    (404, "NOT_FOUND"): "the same, on the public routes (one 404 for every unknown)",
    (409, "PROJECT_SLUG_TAKEN"): "a slug an earlier request took: state",
    (409, "LIVE_SCOPE_EXISTS"): "a scope an earlier request made: state",
    (400, "REQUEST_ID_REUSED"): "an idempotency key an earlier, different request used: state",
    (400, "INVALID_PAGE_TOKEN"): "page tokens are opaque: only the server's own are valid",
    (400, "UNSUPPORTED_IMAGE"): "bytes that are not a PNG, JPEG or WebP picture: content",
    (400, "MIME_TYPE_MISMATCH"): "a claimed type the bytes are not: content",
    (400, "IMAGE_TOO_LARGE"): "more pixels than allowed: content",
    (403, "SIGNATURE_INVALID"): "a signature the server did not make",
    (400, "VALIDATION_ERROR", "offset"): "offset must be 0 with a pageToken: two fields",
    (400, "VALIDATION_ERROR", "requestId"): "requestId differs from Idempotency-Key: body "
    "and header",
    (400, "VALIDATION_ERROR", "flowAlias"): "a flowAlias needs a flow (flowId not empty): "
    "two fields",
    (400, "VALIDATION_ERROR", "prompt"): "an updateMask naming prompt with no prompt "
    "given (a blank one the schema refuses): two fields",
    (400, "VALIDATION_ERROR", "aspectRatio"): "an updateMask naming aspectRatio with no "
    "aspectRatio given (none is not one of the ratios): two fields",
    (400, "VALIDATION_ERROR", "meta"): "meta past 16 KiB once serialized: a size JSON "
    "Schema has no word for",
    (400, "FLOW_CONTEXT_REQUIRED"): "@last, @first and @upload need a flowId: two fields",
    (400, "VALIDATION_ERROR", "alias"): "@last, @first and @upload are reserved: a pattern "
    "would need a lookahead, which schema generators do not honour",
    (400, "WEBHOOK_URL_REFUSED"): "a webhook host that does not resolve, or resolves to a "
    "private address: the network's say, not the request's shape",
    (400, "MODEL_UNAVAILABLE"): "a model this deployment has not configured: settings",
    (429, "*"): "rate limits (live misses per client address): traffic, not shape",
}


def refusal_reason(status: int, body: Any) -> str | None:
    """Why ALLOWED_REFUSALS lets a schema-valid request get ``status``, or None."""
    error = body.get("error", {}) if isinstance(body, dict) else {}
    code = str(error.get("code", ""))
    for allowed_status, allowed_code, *field in ALLOWED_REFUSALS:
        if field or allowed_status != status:
            continue
        if allowed_code in (code, "*") or (
            allowed_code.startswith("*") and code.endswith(allowed_code[1:])
        ):
            return ALLOWED_REFUSALS[(allowed_status, allowed_code)]
    # Field violations: each violated field must be allowed for this status and code.
    fields = {
        str(violation.get("field", "")).split(".")[0].split("[")[0]
        for violation in error.get("details", {}).get("fieldViolations", [])
    }
    reasons = [ALLOWED_REFUSALS.get((status, code, field)) for field in sorted(fields)]
    if fields and all(reasons):
        return "; ".join(str(reason) for reason in reasons)
    return None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("fuzz-rest") / "data").start()
    try:
        yield server
    finally:
        server.stop()
    # No request, however odd, made the server log a crash.
    assert "Traceback" not in server.log(), server.log()[-5000:]


@pytest.fixture(scope="module")
def api_schema(served: Served) -> schemathesis.BaseSchema:
    # The schema the server serves, not the one this checkout would build.
    return schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


def test_every_operation_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    served_operations = {
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert served_operations == set(OPERATIONS)


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors(
    api_schema: schemathesis.BaseSchema,
    served: Served,
    session: requests.Session,
    method: str,
    path: str,
    mode: schemathesis.GenerationMode,
) -> None:
    operation = api_schema[path][method]
    key = served.admin_key() if path.startswith("/api/v1/admin/") else served.api_key()
    positive = mode == schemathesis.GenerationMode.POSITIVE

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        # A schema-valid request carries a valid key; a mutated one may carry any.
        headers = (
            {**(case.headers or {}), "X-API-Key": key}
            if positive
            else {"X-API-Key": key, **(case.headers or {})}
        )
        status, text = _call(session, case, served.base_url, headers)
        seen = (
            f"{case.method} {case.formatted_path} {case.query} {case.body!r:.300}"
            f" -> {status}: {text[:500]}"
        )
        assert status < 500, seen
        if positive and 400 <= status < 500:
            assert refusal_reason(status, _json(text)), seen

    fuzz()


def _call(
    session: requests.Session, case: schemathesis.Case, base_url: str, headers: dict[str, str]
) -> tuple[int, str]:
    """Send ``case``: its status and body. An event stream that opens is not read (a watch
    stays open); a HEAD's refusal is read from the same request as a GET (HEAD has no
    body to say why)."""
    kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
    with session.request(**kwargs, stream=True, timeout=30) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status_code, ""
        if case.method.upper() == "HEAD" and response.status_code >= 400:
            kwargs["method"] = "GET"
            with session.request(**kwargs, timeout=30) as twin:
                return response.status_code, twin.text
        return response.status_code, response.text


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
