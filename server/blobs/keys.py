"""Object keys: the one place that names where a project's image bytes are stored."""

from __future__ import annotations

from server.domain.images import MIME_EXTENSIONS


def project_prefix(project_id: str) -> str:
    """Where every object of a project lives (the sweeper walks it)."""
    return f"projects/{project_id}/"


def generation_prefix(project_id: str, generation_id: str) -> str:
    """Where every stored version of a generation's output lives."""
    return f"{project_prefix(project_id)}generations/{generation_id}/"


def generation_output_key(
    project_id: str, generation_id: str, *, run: int, attempt: int, token: str, mime_type: str
) -> str:
    """A new key for one run's output.

    Each run writes a new key, so the committed version is never overwritten in
    place and a half-written object is never what a row points at.
    """
    extension = MIME_EXTENSIONS.get(mime_type, "bin")
    name = f"r{run}-a{attempt}-{token[:8]}.{extension}"
    return generation_prefix(project_id, generation_id) + name


def upload_key(project_id: str, image_id: str, mime_type: str) -> str:
    """The object key of an uploaded image's bytes (uploads have one version)."""
    return f"{project_prefix(project_id)}uploads/{image_id}/v1.{MIME_EXTENSIONS[mime_type]}"
