"""Schemathesis against the served /openapi.json: every operation, schema-valid and
mutated (negative) requests, with a project key and with an admin key: zero 5xx answers."""

from __future__ import annotations

from collections.abc import Iterator

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
    if method in ("get", "post", "put", "patch", "delete")
]


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

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        headers = {"X-API-Key": key, **(case.headers or {})}
        response = case.call(session=session, headers=headers, timeout=30)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} {case.query} {case.body!r:.300}"
            f" -> {response.status_code}: {response.text[:500]}"
        )

    fuzz()
