"""A Python client generated from /openapi.json by openapi-python-client, used end to end."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from rest import (  # noqa: F401  (fixtures, by function name)
    app_fixture,
    app_overrides_fixture,
    base_url,
    standalone_gateway,
)

from server.app import App

pytestmark = pytest.mark.slow
PACKAGE = "imagegen_rest"
GENERATOR = Path(sys.executable).parent / "openapi-python-client"


@pytest.fixture(scope="module")
async def generated(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ModuleType]:
    """The package openapi-python-client writes from the served document, imported."""
    async with standalone_gateway("127.0.0.1:1") as url, httpx.AsyncClient(base_url=url) as http:
        spec = (await http.get("/openapi.json")).json()
    folder = tmp_path_factory.mktemp("openapi")
    (folder / "openapi.json").write_text(json.dumps(spec))
    env = {**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ['PATH']}"}
    command = [GENERATOR, "generate", "--path", "openapi.json", "--meta", "none"]
    done = await asyncio.to_thread(
        subprocess.run,
        [*command, "--output-path", PACKAGE],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    # Every operation and response made it into the client: nothing skipped or degraded.
    assert "Warning" not in report and "Unsupported" not in report, report
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def round_trip(url: str, key: str) -> dict[str, Any]:
    """create → get → list → read the bytes → delete → get (NOT_FOUND), through the client."""
    client = module("client").AuthenticatedClient(
        base_url=url, token=key, prefix="", auth_header_name="X-API-Key", timeout=60
    )
    generations = "api.generation_service.generation_service_"
    create = module(generations + "create_generation")
    get = module(generations + "get_generation")
    listing = module(generations + "list_generations")
    delete = module(generations + "delete_generation")
    content = module("api.image_service.image_service_read_image_content")
    models = module("models")

    body = models.CreateGenerationRequest(
        prompt="a lighthouse at dusk",
        aspect_ratio=models.CreateGenerationRequestAspectRatio("16:9"),
        enhancement_template=models.CreateGenerationRequestEnhancementTemplate.PHOTOREALISTIC,
        meta=models.CreateGenerationRequestMeta.from_dict({"campaign": "coast"}),
    )
    created = create.sync(client=client, body=body, prefer="wait=30").data
    assert isinstance(created.id, uuid.UUID)  # format: uuid, parsed as such
    fetched = get.sync(id=str(created.id), client=client).data
    page = listing.sync(
        client=client, status=models.GenerationServiceListGenerationsStatus.SUCCESS, limit=10
    )
    picture = content.sync(id_or_alias=str(fetched.output_image.id), client=client)
    deleted = delete.sync(id=str(created.id), client=client).data
    gone = get.sync(id=str(created.id), client=client)
    return {
        "status": fetched.status.value,
        "aspect_ratio": fetched.aspect_ratio.value,
        "template": fetched.enhancement_template.value,
        "meta": fetched.meta.to_dict(),
        "size": (fetched.output_image.width, fetched.output_image.height),
        "listed": [str(g.id) for g in page.data],
        "total": page.pagination.total,
        "bytes": picture.payload.read(8),
        "deleted": deleted.id,
        "gone": (type(gone).__name__, gone.error.code),
        "id": str(created.id),
    }


async def test_generated_client_round_trip(generated: ModuleType, app: App) -> None:
    assert app.dev_api_key
    result = await asyncio.to_thread(round_trip, base_url(app), app.dev_api_key)
    assert result == {
        "status": "success",
        "aspect_ratio": "16:9",
        "template": "photorealistic",
        "meta": {"campaign": "coast"},
        "size": (1792, 1008),
        "listed": [result["id"]],
        "total": 1,
        "bytes": b"\x89PNG\r\n\x1a\n",
        "deleted": result["id"],
        "gone": ("ErrorEnvelope", "GENERATION_NOT_FOUND"),
        "id": result["id"],
    }
