"""Secret files of the embedded default: private, whole at once, first writer wins."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import SecretStr

from server.secrets import stored_secret, write_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_private_replaces_whole_and_leaves_no_temp_files(tmp_path: Path) -> None:
    key = tmp_path / "dev-api-key"
    assert write_private(key, "first\n")
    assert write_private(key, "second\n")
    assert key.read_text() == "second\n"
    assert _mode(key) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["dev-api-key"]


def test_write_private_without_replace_keeps_the_first(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    assert write_private(path, "one\n", replace=False)
    assert not write_private(path, "two\n", replace=False)
    assert path.read_text() == "one\n"
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "gateway-token"
    with ThreadPoolExecutor(8) as pool:
        seen = set(pool.map(lambda _: stored_secret(SecretStr(""), path), range(32)))
    assert seen == {path.read_text().strip()}
    assert _mode(path) == 0o600


def test_a_configured_secret_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "url-signing-secret"
    assert stored_secret(SecretStr("given"), path) == "given"
    assert not path.exists()
