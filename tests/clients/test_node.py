"""The Node client's own tests (`node --test` in clients/node), which start a real server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e.serve_process import ServeProcess

NODE_PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "node"
# clients/node is shared with test_readme's `npm ci` (see conftest.node_package_lock).
pytestmark = pytest.mark.usefixtures("node_package_lock")


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


CONSUMER = Path(__file__).resolve().parent / "node_consumer"


@pytest.mark.slow
def test_node_package_outside_the_repo(tmp_path: Path) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not on PATH: the Node client cannot be tested here")

    def run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
        return done.stdout

    # npm pack bundles the contract (prepack) and cleans up after itself (postpack).
    packed = json.loads(
        run(npm, "pack", "--json", "--pack-destination", str(tmp_path), cwd=NODE_PACKAGE)
    )
    files = {entry["path"] for entry in packed[0]["files"]}
    assert {"proto/imagegen/v1/generation.proto", "proto/google/api/annotations.proto"} <= files
    assert {"src/index.d.ts", "src/errors.d.ts"} <= files
    assert not (NODE_PACKAGE / "proto" / "imagegen").exists()
    tarball = tmp_path / packed[0]["filename"]

    # A project of its own, far from the repository, that installs the tarball.
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": "app", "type": "module"}))
    for name in ("tsconfig.json", "consumer.ts", "wrong.ts"):
        shutil.copy(CONSUMER / name, app / name)
    install = (npm, "install", "--no-audit", "--no-fund", str(tarball))
    run(*install, "typescript@5.9.3", "@types/node@20", cwd=app)
    tsc = str(app / "node_modules" / ".bin" / "tsc")
    run(tsc, "-p", ".", cwd=app)
    strict = ("--strict", "--module", "nodenext", "--moduleResolution", "nodenext")
    wrong = subprocess.run(
        [tsc, "--noEmit", *strict, "--target", "es2022", "wrong.ts"],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wrong.returncode != 0
    assert "'number' is not assignable to type 'string'" in wrong.stdout
    assert "'Date' is not assignable" in wrong.stdout
    assert "'\"tiff\"' is not assignable" in wrong.stdout
    assert "'\"sent\"' is not assignable" in wrong.stdout

    # The compiled consumer against a live server, from outside the repository.
    server = ServeProcess(tmp_path / "data").start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
        env |= {"IMAGEGEN_ADDRESS": server.address, "IMAGEGEN_API_KEY": server.api_key()}
        report = json.loads(run(node, "dist/consumer.js", cwd=app, env=env))
    finally:
        server.terminate()
    assert report == {
        "status": "GENERATION_STATUS_SUCCESS",
        "meta": {"campaign": "winter", "tags": ["a", "b"], "n": 2, "nested": {"ok": True}},
        "width": 1792,
        "missing": "NOT_FOUND GENERATION_NOT_FOUND",
        "updated": {"campaign": "spring"},
        "png": "PNG",
        "live": "http://cdn.example/cdn/default/live/heroes?prompt=a+fox&aspectRatio=16%3A9",
        "cancel": "FAILED_PRECONDITION GENERATION_ALREADY_FINISHED",
        "forged": True,
    }
