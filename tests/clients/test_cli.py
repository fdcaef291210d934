"""The `imagegen` client commands against a real server: output, --json, files, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from conftest import make_settings
from PIL import Image as PILImage

from imagegen_client.cli import main
from imagegen_client.launcher import installed_commands
from imagegen_client.launcher import main as imagegen_main
from server.app import App
from server.services.tenancy import bootstrap_admin

MISSING_ID = "01a20000-0000-7000-8000-000000000000"
IMAGEGEN = Path(sys.executable).parent / "imagegen"


@pytest.fixture(autouse=True)
def quiet_server_logs() -> Iterator[None]:
    """Keep the in-process server's log lines out of the CLI output that capsys reads.

    Unconfigured structlog prints every event to sys.stdout; here only
    warnings and errors are logged, to the process's real stderr.
    """
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.__stderr__),
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


@contextlib.asynccontextmanager
async def serving(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, **overrides: object
) -> AsyncIterator[App]:
    """A started App (SQLite), and IMAGEGEN_ADDRESS / IMAGEGEN_API_KEY pointing at it."""
    started = App(make_settings(data_dir, **overrides))
    await started.start()
    monkeypatch.setenv("IMAGEGEN_ADDRESS", f"127.0.0.1:{started.grpc_port}")
    monkeypatch.setenv("IMAGEGEN_API_KEY", started.dev_api_key or "")
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    """A server on the defaults."""
    async with serving(tmp_path / "data", monkeypatch) as started:
        yield started


@pytest.fixture
async def failing_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    """A server whose generator always fails after a second."""
    async with serving(
        tmp_path / "failing", monkeypatch, generator_fail_mode="always", generator_delay_seconds=1.0
    ) as started:
        yield started


@pytest.fixture
async def slow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    """A server whose generator takes a minute: a short wait on it always times out."""
    async with serving(tmp_path / "slow", monkeypatch, generator_delay_seconds=60.0) as started:
        yield started


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `imagegen ARGV` in-process (off the loop that serves the App): code, stdout, stderr."""
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def json_of(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    code, out, err = await cli(capsys, *argv, "--json")
    assert code == 0, err
    value = json.loads(out)
    assert isinstance(value, dict)
    return value


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 30), (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


async def test_generate_wait_out_through_the_console_script(server: App, tmp_path: Path) -> None:
    # The real `imagegen` console script: the launcher hands client commands to the CLI.
    process = await asyncio.create_subprocess_exec(
        str(IMAGEGEN),
        "generate",
        "a red fox in snow",
        "--aspect-ratio",
        "16:9",
        "--meta",
        "campaign=winter",
        "--wait",
        "--out",
        "hero.png",
        cwd=tmp_path,
        env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    hero = tmp_path / "hero.png"
    assert hero.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with PILImage.open(hero) as picture:
        assert picture.format == "PNG"
        assert picture.size == (1792, 1008)
    assert "SUCCESS" in out.decode()
    assert f"wrote {hero.name}" in out.decode()
    assert files_in(tmp_path) == ["data", "hero.png"]  # no .part file left behind


async def test_json_output_parses(server: App, capsys: pytest.CaptureFixture[str]) -> None:
    created = await json_of(
        capsys, "generate", "a kite", "--no-enhance", "--meta", "n=3", "--meta", "tag=blue"
    )
    assert created["status"] == "GENERATION_STATUS_PENDING"
    assert created["meta"] == {"n": 3, "tag": "blue"}
    assert created["prompt"] == "a kite"
    generation_id = str(created["id"])

    finished = await json_of(capsys, "wait", generation_id)
    assert finished["status"] == "GENERATION_STATUS_SUCCESS"
    assert (await json_of(capsys, "get", generation_id))["revision"] == finished["revision"]

    listed = await json_of(capsys, "list", "--status", "success", "--limit", "5")
    assert [g["id"] for g in listed["generations"]] == [generation_id]  # type: ignore[attr-defined]
    assert listed["total"] == "1"  # int64 is a string in protobuf JSON
    assert listed["hasMore"] is False

    code, out, err = await cli(capsys, "watch", generation_id, "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events] == ["GENERATION_EVENT_TYPE_SNAPSHOT"]
    assert events[0]["generation"]["status"] == "GENERATION_STATUS_SUCCESS"

    updated = await json_of(capsys, "update", generation_id, "--meta", "tag=red")
    assert updated["meta"] == {"tag": "red"}
    deleted = await json_of(capsys, "delete", generation_id)
    assert deleted["id"] == generation_id


async def test_human_output(server: App, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await cli(capsys, "generate", "a [bold] lantern", "--wait")
    assert code == 0, err
    generation_id, status = out.split()[:2]
    assert status == "SUCCESS"

    code, out, _ = await cli(capsys, "list")
    assert code == 0
    assert generation_id in out and "SUCCESS" in out
    assert "1 of 1" in out

    code, out, _ = await cli(capsys, "get", generation_id)
    assert code == 0
    assert f"id                    {generation_id}" in out
    assert "original_prompt       a [bold] lantern" in out  # user text is not rich markup

    code, out, _ = await cli(capsys, "watch", generation_id)
    assert code == 0
    assert out.startswith(f"SNAPSHOT {generation_id}  SUCCESS")


async def test_errors_are_one_line_with_distinct_exit_codes(
    server: App, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await cli(capsys, "get", MISSING_ID)
    assert (code, out) == (1, "")
    assert err == f"imagegen: NOT_FOUND GENERATION_NOT_FOUND: generation '{MISSING_ID}' not found\n"

    code, _, err = await cli(capsys, "generate", "", "--aspect-ratio", "5:4")
    assert code == 1
    assert err.startswith("imagegen: INVALID_ARGUMENT VALIDATION_ERROR: ")
    assert "prompt" in err and "aspect_ratio" in err

    code, _, err = await cli(capsys, "generate", "x", "--ref", "@nope", "--alias", "@hero")
    assert code == 1
    assert err == "imagegen: NOT_FOUND REFERENCE_NOT_FOUND: reference image '@nope' not found\n"

    code, _, err = await cli(capsys, "list", "--api-key", "igk_wrong")
    assert code == 1
    assert err.startswith("imagegen: UNAUTHENTICATED ")

    # Usage errors: argparse's, and the ones the CLI finds itself.
    assert (await cli(capsys, "list", "--no-such-flag"))[0] == 2
    assert (await cli(capsys, "generate", "x", "--meta", "novalue"))[0] == 2
    assert (await cli(capsys, "update", MISSING_ID))[0] == 2
    assert (await cli(capsys, "upload", "/no/such/file.png"))[0] == 2
    code, _, err = await cli(capsys)
    assert code == 2
    # The CLI alone knows no server commands (the launcher lists the installed ones).
    assert "client commands" in err and "other commands" not in err

    # Nothing listens there: UNAVAILABLE after the (short) retries.
    code, _, err = await cli(capsys, "list", "--address", "127.0.0.1:1", "--timeout", "2")
    assert code == 3
    assert err.startswith("imagegen: UNAVAILABLE")


async def test_failed_wait(failing_server: App, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await cli(capsys, "generate", "a doomed picture", "--wait", "--json")
    assert code == 4, err
    assert json.loads(out)["status"] == "GENERATION_STATUS_FAILED"
    assert "FAILED: GENERATOR_ERROR" in err


async def test_timed_out_wait(slow_server: App, capsys: pytest.CaptureFixture[str]) -> None:
    # A minute-long run, not the failing server's one second: on a busy CI host the two
    # client calls took longer than that second and the wait found the run already FAILED.
    code, out, err = await cli(capsys, "generate", "a slow picture", "--wait-timeout", "0.3")
    assert code == 0  # without --wait the timeout does not matter
    generation_id = out.split()[0]
    code, _, err = await cli(capsys, "wait", generation_id, "--wait-timeout", "0.3")
    assert code == 5
    assert err.startswith("imagegen: DEADLINE_EXCEEDED: ")
    assert "did not finish within 0.3 s" in err


async def test_images(server: App, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = tmp_path / "logo.png"
    source.write_bytes(png_bytes())
    code, out, err = await cli(capsys, "upload", str(source), "--alias", "@logo", "--json")
    if code == 1 and "UNIMPLEMENTED" in err:
        pytest.skip("ImageService is not served yet")
    assert code == 0, err
    image = json.loads(out)
    assert (image["source"], image["alias"], image["width"]) == (
        "IMAGE_SOURCE_UPLOADED",
        "@logo",
        40,
    )

    target = tmp_path / "copy" / "logo.png"
    code, out, err = await cli(capsys, "download", "@logo", str(target))
    assert code == 0, err
    assert target.read_bytes() == source.read_bytes()

    code, out, _ = await cli(capsys, "images")
    assert code == 0 and image["id"] in out and "@logo" in out
    resolved = await json_of(capsys, "images", "resolve", "@logo")
    assert resolved["scope"] == "ALIAS_SCOPE_PROJECT"

    code, _, err = await cli(capsys, "alias", image["id"], "--clear")
    assert code == 0, err
    code, _, err = await cli(capsys, "download", "@logo", str(tmp_path / "gone.png"))
    assert code == 1
    assert err.startswith("imagegen: NOT_FOUND ")
    assert not (tmp_path / "gone.png").exists()

    code, _, err = await cli(capsys, "alias", image["id"], "@brand")
    assert code == 0, err
    assert (await json_of(capsys, "images", "get", "@brand"))["id"] == image["id"]


async def test_flows(server: App, capsys: pytest.CaptureFixture[str]) -> None:
    created = await json_of(capsys, "generate", "a meadow", "--wait")
    code, out, err = await cli(capsys, "flows")
    if code == 1 and "UNIMPLEMENTED" in err:
        pytest.skip("FlowService is not served yet")
    assert code == 0, err
    assert str(created["flowId"]) in out
    flow = await json_of(capsys, "flows", "get", str(created["flowId"]))
    assert flow["generationCount"] == 1


async def test_projects_and_keys(server: App, capsys: pytest.CaptureFixture[str]) -> None:
    admin_key = await bootstrap_admin(server.sessions)
    project = await json_of(capsys, "projects", "create", "acme", "--api-key", admin_key)
    assert project["slug"] == "acme"
    code, out, _ = await cli(capsys, "projects", "list", "--api-key", admin_key)
    assert code == 0 and "acme" in out

    code, out, err = await cli(
        capsys, "--api-key", admin_key, "keys", "create", "--project-id", str(project["id"])
    )
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("igk_")
    assert "shown only now" in err

    # The new key works for the new project: an empty list.
    assert (await json_of(capsys, "list", "--api-key", secret))["total"] == "0"
    keys = await json_of(
        capsys, "keys", "list", "--project-id", str(project["id"]), "--api-key", admin_key
    )
    (key,) = keys["keys"]  # type: ignore[misc]
    code, _, err = await cli(capsys, "keys", "revoke", key["id"], "--api-key", admin_key)
    assert code == 0, err
    code, _, err = await cli(capsys, "list", "--api-key", secret)
    assert code == 1 and "UNAUTHENTICATED" in err


async def test_console_script_routes_commands(
    server: App, capsys: pytest.CaptureFixture[str]
) -> None:
    # The server distribution registers its commands; the launcher finds them by name.
    assert {"serve", "gateway", "admin", "healthcheck"} <= set(installed_commands())
    # Client commands go to the CLI …
    code = await asyncio.to_thread(imagegen_main, ["list", "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["total"] == "0"
    # … whose help also names the commands other distributions add …
    assert imagegen_main(["--help"]) == 0
    help_text = capsys.readouterr().out
    assert "generate" in help_text and "admin, gateway, healthcheck, serve" in help_text
    # … and a registered command runs the server's own parser.
    with pytest.raises(SystemExit) as exited:
        imagegen_main(["admin", "--help"])
    assert exited.value.code == 0
    assert "imagegen projects" in capsys.readouterr().out


async def test_generate_model_seed_negative_and_format_flags(
    server: App, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ("--model", "local", "--seed", "77", "--negative", "rain", "--format", "webp")
    a, b = tmp_path / "a.webp", tmp_path / "b.webp"
    first = await json_of(capsys, "generate", "a kite", *args, "--wait", "--out", str(a))
    assert (first["model"], first["seed"], first["negativePrompt"]) == ("local", "77", "rain")
    assert first["outputFormat"] == "webp"
    assert first["outputImage"]["mimeType"] == "image/webp"  # type: ignore[index]
    await json_of(capsys, "generate", "a kite", *args, "--wait", "--out", str(b))
    # Same prompt and seed: the same picture, byte for byte.
    assert a.read_bytes() == b.read_bytes()
    assert PILImage.open(a).format == "WEBP"

    code, _, err = await cli(capsys, "generate", "a kite", "--model", "openai/gpt-image-1")
    assert code == 1
    assert err.startswith("imagegen: FAILED_PRECONDITION MODEL_UNAVAILABLE: ")
    code, _, err = await cli(capsys, "generate", "a kite", "--format", "tiff", "--seed", "-5")
    assert code == 1
    assert err.startswith("imagegen: INVALID_ARGUMENT VALIDATION_ERROR: ")
    assert "output_format" in err and "seed" in err


async def test_generate_run_timeout_and_webhook_flags(
    server: App, capsys: pytest.CaptureFixture[str]
) -> None:
    made = await json_of(capsys, "generate", "a kite", "--run-timeout", "45")
    assert made["timeout"] == "45s"
    # The webhook URL reaches the server: a loopback one is refused there (SSRF guard).
    code, _, err = await cli(
        capsys,
        "generate",
        "a kite",
        "--webhook",
        "http://127.0.0.1:9/hook",
        "--webhook-event",
        "processing",
    )
    assert code == 1
    assert err.startswith("imagegen: INVALID_ARGUMENT WEBHOOK_URL_REFUSED: ")
    code, _, err = await cli(capsys, "generate", "a kite", "--run-timeout", "0")
    assert code == 1 and "timeout" in err


async def test_live_scopes_from_the_cli(server: App, capsys: pytest.CaptureFixture[str]) -> None:
    created = await json_of(capsys, "live", "create", "heroes", "--limit", "5", "--allow-new", "no")
    assert created["slug"] == "heroes" and created["newGenerationsLimit"] == 5
    assert created["allowNewGenerations"] is False
    updated = await json_of(capsys, "live", "update", "heroes", "--allow-new", "yes")
    assert updated["allowNewGenerations"] is True and updated["newGenerationsLimit"] == 5
    listed = await json_of(capsys, "live", "list")
    assert [s["slug"] for s in listed["scopes"]] == ["heroes"]  # type: ignore[index, union-attr]
    code, out, _ = await cli(
        capsys,
        "live",
        "url",
        "heroes",
        "a cat & a dog",
        "--base",
        "http://cdn.example",
        "--project",
        "default",
        "--aspect-ratio",
        "16:9",
    )
    assert code == 0
    assert out.strip() == (
        "http://cdn.example/cdn/default/live/heroes?prompt=a+cat+%26+a+dog&aspectRatio=16%3A9"
    )
    deleted = await json_of(capsys, "live", "delete", "heroes")
    assert deleted["slug"] == "heroes"
    code, _, err = await cli(capsys, "live", "get", "heroes")
    assert code != 0 and "not found" in err


async def test_healthcheck_through_the_console_script(server: App) -> None:
    # A server command run by name through its entry point, against a live server.
    process = await asyncio.create_subprocess_exec(
        str(IMAGEGEN),
        "healthcheck",
        "--address",
        f"127.0.0.1:{server.grpc_port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == "SERVING"


async def test_quiet_prints_only_the_id(
    server: App, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # -q is for shell variables: ID=$(imagegen generate … -q)
    code, out, err = await cli(capsys, "generate", "a red fox", "--wait", "-q")
    assert code == 0, err
    generation = await json_of(capsys, "get", out.strip())
    assert generation["status"] == "GENERATION_STATUS_SUCCESS"
    code, waited, _ = await cli(capsys, "wait", out.strip(), "-q", "--out", str(tmp_path / "a.png"))
    assert (code, waited) == (0, out)
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    logo = tmp_path / "logo.png"
    logo.write_bytes(png_bytes())
    code, out, err = await cli(capsys, "upload", str(logo), "--alias", "@logo", "-q")
    assert code == 0, err
    assert (await json_of(capsys, "images", "get", "@logo"))["id"] == out.strip()
