"""Live URLs: build ``{base}/cdn/{project}/live/{scope}?prompt=…`` for <img src>."""

from __future__ import annotations

from urllib.parse import quote, urlencode


def live_url(
    base_url: str,
    project_slug: str,
    scope: str,
    prompt: str,
    *,
    aspect_ratio: str = "",
    auto_enhance: bool = False,
    template: str = "",
) -> str:
    """The live URL of a prompt in a scope: a browser GET returns the image, generated once.

    ``base_url`` is the gateway's public base (PUBLIC_BASE_URL); the same arguments
    always give the same URL, so the cache key (prompt, aspect ratio, enhancement)
    stays the same.
    """
    query = {"prompt": prompt}
    if aspect_ratio:
        query["aspectRatio"] = aspect_ratio
    if auto_enhance:
        query["autoEnhance"] = "true"
        if template:
            query["template"] = template
    path = f"/cdn/{quote(project_slug, safe='')}/live/{quote(scope, safe='')}"
    return f"{base_url.rstrip('/')}{path}?{urlencode(query)}"
