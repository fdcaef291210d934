"""Secrets of the embedded default: from a setting, or generated once into the data dir."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

URL_SIGNING_SECRET_FILE = "url-signing-secret"
GATEWAY_TOKEN_FILE = "gateway-token"


def stored_secret(value: SecretStr, path: Path, *, create: bool = True) -> str:
    """The setting's value when set; else the secret kept in ``path`` (made on first use).

    The file is created exclusively with mode 0600, so two processes starting at
    once on one data dir end up with the same secret, and others cannot read it.
    """
    given = value.get_secret_value()
    if given:
        return given
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    if not create:
        return ""
    fresh = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(fresh + "\n")
    return fresh
