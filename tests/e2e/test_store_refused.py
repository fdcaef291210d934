"""`imagegen serve` with S3 credentials that may read but not write stops at start with a
clear message and exit code, instead of serving and failing every generation's store."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from seaweed import SeaweedFS, remove_bucket

from server.__main__ import EXIT_CANNOT_SERVE


def test_read_only_s3_credentials_stop_the_start(tmp_path: Path, s3_server: SeaweedFS) -> None:
    bucket = f"readonly-{uuid.uuid4().hex[:20]}"
    s3_server.client().make_bucket(bucket)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "server", "serve", "--data-dir", str(tmp_path), "--no-http"],
            env={
                **os.environ,
                "IMAGEGEN_LOG_LEVEL": "warning",
                "IMAGEGEN_GRPC_PORT": "0",
                "IMAGEGEN_DATABASE_URL": "",
                "IMAGEGEN_S3_ENDPOINT": s3_server.endpoint,
                "IMAGEGEN_S3_ACCESS_KEY": s3_server.reader_access_key,
                "IMAGEGEN_S3_SECRET_KEY": s3_server.reader_secret_key,
                "IMAGEGEN_S3_BUCKET": bucket,
            },
            capture_output=True,
            text=True,
            timeout=60,
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
