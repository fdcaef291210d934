"""`imagegen serve` that cannot serve stops at start with one line saying why and exit code
3, not a traceback: S3 credentials that may read but not write (instead of serving and
failing every generation's store), a database or an object store that cannot be reached
(its supervisor starts it again). In process, a refused start leaves nothing running."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import make_settings
from seaweed import SeaweedFS, remove_bucket
from serve_process import free_port

from server.__main__ import EXIT_CANNOT_SERVE
from server.app import App, StartupError


def _serve(data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "serve", "--data-dir", str(data_dir), "--no-http"],
        env={
            **os.environ,
            "IMAGEGEN_LOG_LEVEL": "warning",
            "IMAGEGEN_GRPC_PORT": "0",
            "IMAGEGEN_DATABASE_URL": "",
            "IMAGEGEN_S3_ENDPOINT": "",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_read_only_s3_credentials_stop_the_start(tmp_path: Path, s3_server: SeaweedFS) -> None:
    bucket = f"readonly-{uuid.uuid4().hex[:20]}"
    s3_server.client().make_bucket(bucket)
    try:
        result = _serve(
            tmp_path,
            {
                "IMAGEGEN_S3_ENDPOINT": s3_server.endpoint,
                "IMAGEGEN_S3_ACCESS_KEY": s3_server.reader_access_key,
                "IMAGEGEN_S3_SECRET_KEY": s3_server.reader_secret_key,
                "IMAGEGEN_S3_BUCKET": bucket,
            },
        )
        assert result.returncode == EXIT_CANNOT_SERVE, result.stderr
        assert "refused to write and delete an object" in result.stderr
        assert f"bucket {bucket!r}" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert "serving" not in result.stdout
        # The check wrote nothing it could not take back (it could write nothing at all).
        assert list(s3_server.client().list_objects(bucket, recursive=True)) == []
    finally:
        remove_bucket(s3_server, bucket)


def test_an_unreachable_object_store_stops_the_start(tmp_path: Path) -> None:
    result = _serve(
        tmp_path,
        {
            "IMAGEGEN_S3_ENDPOINT": f"127.0.0.1:{free_port()}",
            "IMAGEGEN_S3_ACCESS_KEY": "any",
            "IMAGEGEN_S3_SECRET_KEY": "any",
        },
    )
    assert result.returncode == EXIT_CANNOT_SERVE, result.stderr
    assert "the object store cannot be reached at start" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_an_unreachable_database_stops_the_start(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://imagegen:secret@127.0.0.1:{free_port()}/imagegen"
    result = _serve(tmp_path, {"IMAGEGEN_DATABASE_URL": url})
    assert result.returncode == EXIT_CANNOT_SERVE, result.stderr
    assert "the database cannot be reached at start" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    # The reason names no password.
    assert "secret" not in result.stderr


async def test_a_refused_start_closes_what_it_opened(tmp_path: Path) -> None:
    # In an embedding program (or a test) the process goes on after a refused start:
    # nothing start() made may keep running or accept work.
    app = App(
        make_settings(
            tmp_path / "data",
            s3_endpoint=f"127.0.0.1:{free_port()}",
            s3_access_key="any",
            s3_secret_key="any",
        )
    )
    with pytest.raises(StartupError, match="object store cannot be reached"):
        await app.start()
    with pytest.raises(RuntimeError, match="after shutdown"):
        app.draw_pool.submit(print)
