"""Tests for the local Pillow generator: sizes, formats, determinism, references, failures."""

from __future__ import annotations

import asyncio
import io
import itertools
import multiprocessing
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from server.domain.rules import ASPECT_RATIO_SIZES
from server.engine.generators.base import (
    GeneratedPicture,
    GenerateRequest,
    Generator,
    GeneratorError,
    ReferencePicture,
)
from server.engine.generators.draw_processes import DrawProcesses
from server.engine.generators.local import LocalGenerator

PROMPT = "a red fox in a snowy forest at dawn"


def make_request(
    prompt: str = PROMPT,
    aspect_ratio: str = "1:1",
    seed: int = 1,
    references: tuple[ReferencePicture, ...] = (),
) -> GenerateRequest:
    width, height = ASPECT_RATIO_SIZES[aspect_ratio]
    return GenerateRequest(
        prompt=prompt, width=width, height=height, seed=seed, references=references
    )


def decode(picture: GeneratedPicture) -> Image.Image:
    image = Image.open(io.BytesIO(picture.content))
    image.load()
    return image


def thumbnail(picture: GeneratedPicture) -> Image.Image:
    return decode(picture).convert("RGB").resize((32, 32), Image.Resampling.BOX)


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute per-channel difference, 0..255."""
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def mean_colour(picture: GeneratedPicture) -> tuple[float, float, float]:
    r, g, b = ImageStat.Stat(thumbnail(picture)).mean
    return r, g, b


def encoded(colour: tuple[int, int, int], image_format: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (120, 80), colour).save(out, image_format)
    return out.getvalue()


def test_satisfies_the_generator_protocol() -> None:
    generator: Generator = LocalGenerator()
    assert generator.name == "local"


@pytest.mark.parametrize("aspect_ratio", sorted(ASPECT_RATIO_SIZES))
async def test_every_aspect_ratio_has_its_exact_size(aspect_ratio: str) -> None:
    width, height = ASPECT_RATIO_SIZES[aspect_ratio]

    picture = await LocalGenerator().generate(make_request(aspect_ratio=aspect_ratio))

    image = decode(picture)
    assert image.format == "PNG"
    assert image.size == (width, height)
    assert (picture.width, picture.height) == (width, height)
    assert picture.mime_type == "image/png"


@pytest.mark.parametrize(
    ("image_format", "pillow_format", "mime_type"),
    [("png", "PNG", "image/png"), ("jpeg", "JPEG", "image/jpeg"), ("webp", "WEBP", "image/webp")],
)
async def test_each_image_format_decodes_as_that_format(
    image_format: str, pillow_format: str, mime_type: str
) -> None:
    picture = await LocalGenerator(image_format=image_format).generate(
        make_request(aspect_ratio="16:9")
    )

    image = decode(picture)
    assert image.format == pillow_format
    assert image.size == ASPECT_RATIO_SIZES["16:9"]
    assert picture.mime_type == mime_type
    assert Image.MIME[pillow_format] == mime_type


@pytest.mark.parametrize("image_format", ["png", "jpeg", "webp"])
async def test_same_inputs_give_identical_bytes(image_format: str) -> None:
    request = make_request(aspect_ratio="3:2", seed=42)

    first = await LocalGenerator(image_format=image_format).generate(request)
    second = await LocalGenerator(image_format=image_format).generate(request)

    assert first.content == second.content


async def test_different_prompts_give_visibly_different_pictures() -> None:
    generator = LocalGenerator()

    fox = await generator.generate(make_request("a red fox in a snowy forest"))
    lighthouse = await generator.generate(make_request("a lighthouse on a cliff at night"))

    assert mean_difference(thumbnail(fox), thumbnail(lighthouse)) > 10


async def test_different_seeds_rearrange_the_picture() -> None:
    generator = LocalGenerator()

    first = await generator.generate(make_request(seed=1))
    regenerated = await generator.generate(make_request(seed=2))

    assert first.content != regenerated.content
    assert mean_difference(thumbnail(first), thumbnail(regenerated)) > 3


async def test_colour_words_bias_the_palette() -> None:
    generator = LocalGenerator()

    red = mean_colour(await generator.generate(make_request("a red sunset")))
    blue = mean_colour(await generator.generate(make_request("a blue ocean")))
    forest = mean_colour(await generator.generate(make_request("a green forest")))

    assert red[0] > red[2] + 30
    assert blue[2] > blue[0] + 30
    assert forest[1] > forest[0] + 15
    assert forest[1] > forest[2] + 15


@pytest.mark.parametrize("reference_format", ["PNG", "JPEG"])
async def test_a_reference_picture_changes_the_output(reference_format: str) -> None:
    generator = LocalGenerator()
    green = ReferencePicture(
        content=encoded((20, 200, 40), reference_format),
        mime_type=Image.MIME[reference_format],
    )

    plain = await generator.generate(make_request("a red sunset over the sea"))
    guided = await generator.generate(
        make_request("a red sunset over the sea", references=(green,))
    )

    assert mean_difference(thumbnail(plain), thumbnail(guided)) > 10
    assert mean_colour(guided)[1] > mean_colour(plain)[1] + 20


async def test_a_transparent_reference_is_read() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(out, "PNG")
    reference = ReferencePicture(content=out.getvalue(), mime_type="image/png")

    picture = await LocalGenerator().generate(make_request(references=(reference,)))

    assert decode(picture).size == ASPECT_RATIO_SIZES["1:1"]


@pytest.mark.parametrize(
    "content",
    [b"", b"not a picture at all", encoded((1, 2, 3))[:60]],
    ids=["empty", "text", "truncated-png"],
)
async def test_an_undecodable_reference_is_reported(content: bytes) -> None:
    good = ReferencePicture(content=encoded((9, 9, 9)), mime_type="image/png")
    bad = ReferencePicture(content=content, mime_type="image/png")

    with pytest.raises(GeneratorError) as caught:
        await LocalGenerator().generate(make_request(references=(good, bad)))

    assert caught.value.code == "REFERENCE_UNREADABLE"
    assert caught.value.transient is False
    assert "reference picture 2" in caught.value.message


async def test_fail_mode_always_fails_permanently() -> None:
    generator = LocalGenerator(fail_mode="always")

    for _ in range(2):
        with pytest.raises(GeneratorError) as caught:
            await generator.generate(make_request())
        assert caught.value.code == "GENERATOR_ERROR"
        assert caught.value.transient is False


async def test_fail_mode_transient_fails_every_time() -> None:
    generator = LocalGenerator(fail_mode="transient")

    for _ in range(3):
        with pytest.raises(GeneratorError) as caught:
            await generator.generate(make_request())
        assert caught.value.code == "GENERATOR_UNAVAILABLE"
        assert caught.value.transient is True


async def test_fail_mode_flaky_fails_the_first_attempt_per_prompt_and_seed() -> None:
    generator = LocalGenerator(fail_mode="flaky")
    small = GenerateRequest(prompt="a kite", width=64, height=48, seed=5)

    with pytest.raises(GeneratorError) as caught:
        await generator.generate(small)
    assert caught.value.code == "GENERATOR_UNAVAILABLE"
    assert caught.value.transient is True

    retried = await generator.generate(small)
    assert (retried.width, retried.height) == (64, 48)
    assert await generator.generate(small) == retried

    # A new seed (a regeneration) or a new instance starts counting again.
    with pytest.raises(GeneratorError):
        await generator.generate(GenerateRequest(prompt="a kite", width=64, height=48, seed=6))
    with pytest.raises(GeneratorError):
        await LocalGenerator(fail_mode="flaky").generate(small)


async def test_fail_mode_flaky_counts_concurrent_calls_in_order() -> None:
    generator = LocalGenerator(fail_mode="flaky", delay_seconds=0.01)
    small = GenerateRequest(prompt="a kite", width=32, height=32, seed=1)

    results = await asyncio.gather(
        *(generator.generate(small) for _ in range(3)), return_exceptions=True
    )

    assert [isinstance(r, GeneratorError) for r in results] == [True, False, False]


@pytest.mark.parametrize(
    "options",
    [
        {"image_format": "gif"},
        {"image_format": "PNG"},
        {"fail_mode": "sometimes"},
        {"delay_seconds": -1},
    ],
)
def test_invalid_options_are_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is free text
        LocalGenerator(**options)


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, -1), (20000, 10)])
async def test_an_impossible_size_is_a_generator_error(width: int, height: int) -> None:
    request = GenerateRequest(prompt="x", width=width, height=height, seed=0)

    with pytest.raises(GeneratorError) as caught:
        await LocalGenerator().generate(request)

    assert caught.value.transient is False


async def test_delay_seconds_adds_latency() -> None:
    request = GenerateRequest(prompt="a kite", width=32, height=32, seed=1)

    started = time.perf_counter()
    await LocalGenerator(delay_seconds=0.15).generate(request)

    assert time.perf_counter() - started >= 0.15


async def test_the_picture_is_drawn_in_the_second_half_of_the_delay() -> None:
    # A hosted model draws while its caller waits: the drawing is handed to the executor
    # halfway through the delay, not once it is over (nor at once, with the claim).
    delay = 0.4
    with CountingExecutor() as executor:
        started = time.perf_counter()
        await LocalGenerator(delay_seconds=delay, executor=executor).generate(make_request())
        ended = time.perf_counter()

    (submitted_at,) = executor.submit_times
    # asyncio may wake a sleeper up to its clock resolution early.
    assert submitted_at - started >= delay / 2 - 0.01
    assert ended - submitted_at >= delay / 2 - 0.01


async def test_a_call_abandoned_in_the_first_half_of_its_delay_draws_nothing() -> None:
    with CountingExecutor() as executor:
        generating = asyncio.create_task(
            LocalGenerator(delay_seconds=60, executor=executor).generate(make_request())
        )
        await asyncio.sleep(0.01)
        generating.cancel()
        with pytest.raises(asyncio.CancelledError):
            await generating

    assert executor.submit_times == []


async def test_an_unreadable_reference_is_reported_after_the_delay() -> None:
    bad = ReferencePicture(content=b"garbage", mime_type="image/png")
    started = time.perf_counter()
    with pytest.raises(GeneratorError) as caught:
        await LocalGenerator(delay_seconds=0.15).generate(make_request(references=(bad,)))

    assert caught.value.code == "REFERENCE_UNREADABLE"
    assert time.perf_counter() - started >= 0.15


async def test_an_empty_prompt_still_draws() -> None:
    picture = await LocalGenerator().generate(make_request(prompt=""))

    assert decode(picture).size == ASPECT_RATIO_SIZES["1:1"]


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submit_times: list[float] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submit_times.append(time.perf_counter())
        return super().submit(fn, *args, **kwargs)


async def test_rendering_runs_on_the_given_executor() -> None:
    with CountingExecutor() as executor:
        await LocalGenerator(executor=executor).generate(make_request())

    assert len(executor.submit_times) == 1


async def test_a_process_pool_gives_the_same_picture_and_errors() -> None:
    request = make_request(aspect_ratio="9:16", seed=3)
    bad = ReferencePicture(content=b"garbage", mime_type="image/png")
    expected = await LocalGenerator().generate(request)

    with DrawProcesses(1) as pool:
        generator = LocalGenerator(executor=pool)
        picture = await generator.generate(request)
        with pytest.raises(GeneratorError) as caught:
            await generator.generate(make_request(references=(bad,)))

    assert picture.content == expected.content
    assert caught.value.code == "REFERENCE_UNREADABLE"


async def test_a_drawing_process_that_dies_fails_its_picture_for_a_retry() -> None:
    before = set(multiprocessing.active_children())
    with DrawProcesses(1) as pool:
        generator = LocalGenerator(executor=pool)
        # The one process is busy, so the picture waits in the pool's queue when it dies.
        busy = asyncio.wrap_future(pool.submit(time.sleep, 60))
        drawing = asyncio.create_task(generator.generate(make_request()))
        await asyncio.sleep(0)  # with no delay, the drawing is submitted at once
        (process,) = set(multiprocessing.active_children()) - before
        process.kill()

        with pytest.raises(GeneratorError) as caught:
            await drawing
        with pytest.raises(BrokenProcessPool):
            await busy
        # The next picture is drawn by a new process, and is the one threads would draw.
        picture = await generator.generate(make_request())

    assert caught.value.code == "GENERATOR_UNAVAILABLE"
    assert caught.value.transient
    assert pool.replaced == 1
    assert picture.content == (await LocalGenerator().generate(make_request())).content


async def test_the_event_loop_keeps_running_during_a_wide_render() -> None:
    interval = 0.005
    ticks: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(interval)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    generator = LocalGenerator(image_format="webp")
    started = time.perf_counter()
    # Several renders in a row so that the window is long enough to measure.
    for seed in range(3):
        await generator.generate(make_request(aspect_ratio="21:9", seed=seed))
    finished = time.perf_counter()
    stop.set()
    await ticker

    during = [t for t in ticks if started <= t <= finished]
    gaps = [b - a for a, b in itertools.pairwise(ticks) if b >= started and a <= finished]
    # Rendering on the loop would leave one tick at most, with a gap as long as a render.
    assert len(during) >= 5
    assert max(gaps) < 0.1
