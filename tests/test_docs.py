"""The deployment docs stay complete: every setting documented, compose uses real settings."""

from __future__ import annotations

import re
from pathlib import Path

from server.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_deploy_guide() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    missing = [n for n in Settings.model_fields if f"`IMAGEGEN_{n.upper()}`" not in guide]
    assert not missing, f"document these in docs/deploy.md: {missing}"


def test_compose_and_dockerfile_name_only_real_settings() -> None:
    known = {f"IMAGEGEN_{n.upper()}" for n in Settings.model_fields}
    for name in ("compose.yaml", "Dockerfile"):
        used = set(re.findall(r"IMAGEGEN_[A-Z0-9_]+", (ROOT / name).read_text()))
        assert used <= known, (name, used - known)
