"""The Node client's own tests (`node --test` in clients/node), which start a real server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NODE_PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "node"


@pytest.mark.slow
def test_node_client() -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not on PATH: the Node client cannot be tested here")
    if not (NODE_PACKAGE / "node_modules").is_dir():
        # A fresh clone: install exactly what package-lock.json pins.
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_PACKAGE,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert installed.returncode == 0, installed.stdout + installed.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    env["IMAGEGEN_PYTHON"] = sys.executable  # the server runs from this very environment
    ran = subprocess.run(
        [node, "--test", "--test-reporter=tap", "test/"],
        cwd=NODE_PACKAGE,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    report = ran.stdout + ran.stderr
    assert ran.returncode == 0, report
    passed = re.search(r"^# pass (\d+)$", ran.stdout, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", ran.stdout, re.MULTILINE)
    assert passed and failed, report
    assert int(failed.group(1)) == 0, report
    assert int(passed.group(1)) >= 4, report
