"""A real browser (headless Chromium) decodes <img src> at an image URL and at a live URL."""

from __future__ import annotations

import asyncio
import html
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from rest import (  # noqa: F401  (fixtures, by function name)
    app_fixture,
    app_overrides_fixture,
    base_url,
    client_fixture,
    ok,
    picture,
)
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from server.app import App
from server.gateway import create_gateway, serve_gateway

# scripts/test installs Debian's chromium when it is missing.
CHROMIUM = shutil.which("chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The load event waits for every <img>; this bounds the page's run on a slow machine.
    "--virtual-time-budget=60000",
)
PAGE = """<!doctype html>
<html><body>
<img id="image" src="{image}">
<img id="live" src="{live}">
<pre id="result">pending</pre>
<script>
window.addEventListener("load", () => {{
  const size = (id) => document.getElementById(id).naturalWidth;
  document.getElementById("result").textContent =
    "image=" + size("image") + " live=" + size("live");
}});
</script>
</body></html>
"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/test installs it)")
async def test_chromium_decodes_an_image_url_and_a_live_url(
    app: App, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    image = ok(
        await client.post(
            "/api/v1/images/upload", files={"file": ("p.png", picture(size=(64, 48)), "image/png")}
        ),
        201,
    )
    live_url = f"{base_url(app)}/cdn/default/live/browser?prompt=a+paper+boat&aspectRatio=16:9"

    async def page(request: Request) -> Response:
        return HTMLResponse(
            PAGE.format(image=html.escape(image["url"]), live=html.escape(live_url))
        )

    # A gateway of its own in front of the app's gRPC port, serving the page beside the
    # public routes, as a site would serve its HTML beside the image CDN.
    gateway = create_gateway(
        f"127.0.0.1:{app.grpc_port}",
        extra_routes=[Route("/page", page)],
        gateway_token=app.gateway_token,
    )
    server, _, port = await serve_gateway(gateway, "127.0.0.1", 0, grace_seconds=2)
    try:
        browser = await asyncio.create_subprocess_exec(
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--dump-dom",
            f"http://127.0.0.1:{port}/page",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            dom, errors = await asyncio.wait_for(browser.communicate(), 180)
        finally:
            if browser.returncode is None:
                browser.kill()
                await browser.wait()
    finally:
        await server.stop()
    found = re.search(r"image=(\d+) live=(\d+)", dom.decode())
    assert found, (dom.decode()[-2000:], errors.decode()[-2000:])
    sizes: dict[str, Any] = {"image": int(found.group(1)), "live": int(found.group(2))}
    assert sizes == {"image": 64, "live": sizes["live"]} and sizes["live"] > 0, sizes
