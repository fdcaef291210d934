"""Secrets of the embedded default: from a setting, or generated once into the data dir."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from pydantic import SecretStr

URL_SIGNING_SECRET_FILE = "url-signing-secret"
GATEWAY_TOKEN_FILE = "gateway-token"


def stored_secret(value: SecretStr, path: Path, *, create: bool = True) -> str:
    """The setting's value when set; else the secret kept in ``path`` (made on first use).

    The file appears whole and exclusively with mode 0600, so two processes starting
    at once on one data dir end up with the same secret, and others cannot read it.
    """
    given = value.get_secret_value()
    if given:
        return given
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    if not create:
        return ""
    fresh = secrets.token_urlsafe(32)
    if not write_private(path, fresh + "\n", replace=False):
        return path.read_text().strip()
    return fresh


def write_private(path: Path, text: str, *, replace: bool = True) -> bool:
    """Write ``text`` to ``path`` readable by this user only, all at once.

    A reader never sees the file half-written or empty (it appears complete,
    by rename or link), and never with wider permissions. With ``replace`` off,
    an existing file wins and False is returned.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temp, path)
            return True
        try:
            os.link(temp, path)  # fails if the file exists: the first writer wins
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
