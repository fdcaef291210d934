"""`imagegen serve` with IMAGEGEN_DRAW_PROCESSES: pictures drawn in child processes, and no
child outliving the server, whether it stops (SIGTERM) or is killed (kill -9)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from expect import until, until_terminal
from PIL import Image
from serve_process import ServeProcess, children_of, gone

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(tmp_path / "data", IMAGEGEN_DRAW_PROCESSES="1").start()
    try:
        yield server
    finally:
        server.kill()


async def _draw_one(server: ServeProcess) -> list[int]:
    """Create a generation, wait for its picture; the server's child processes then."""
    md = (("x-api-key", server.api_key()),)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        made = await stub.CreateGeneration(
            g.CreateGenerationRequest(prompt="a lighthouse in a storm", aspect_ratio="16:9"),
            metadata=md,
            timeout=10,
        )
        got = await until_terminal(stub, made.id, md, timeout=60)
    assert got.status == g.GENERATION_STATUS_SUCCESS, got
    assert (got.output_image.width, got.output_image.height) == (1792, 1008)
    assert server.process is not None
    return children_of(server.process.pid)


def _drawing(children: list[int]) -> list[int]:
    """Which of ``children`` are drawing processes (multiprocessing's spawned workers)."""
    return [
        pid
        for pid in children
        if b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


async def test_a_picture_drawn_in_a_child_process_that_leaves_when_the_server_stops(
    served: ServeProcess,
) -> None:
    children = await _draw_one(served)
    assert len(_drawing(children)) == 1
    (image,) = (served.data_dir / "images").rglob("*.png")
    with Image.open(image) as picture:
        assert picture.size == (1792, 1008)
    assert served.terminate(30) == 0
    await until(lambda: all(gone(pid) for pid in children), 15)


async def test_drawing_processes_leave_when_the_server_is_killed(served: ServeProcess) -> None:
    children = await _draw_one(served)
    assert len(_drawing(children)) == 1
    served.kill()
    await until(lambda: all(gone(pid) for pid in children), 15)
