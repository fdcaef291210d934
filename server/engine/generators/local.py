"""A self-contained generator that paints a deterministic picture from the prompt with Pillow."""

from __future__ import annotations

import asyncio
import colorsys
import functools
import hashlib
import io
import math
import random
import re
from collections.abc import Sequence
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageDraw, ImageFilter

from server.engine.generators.base import (
    GeneratedPicture,
    GenerateRequest,
    GeneratorError,
)

RGB = tuple[int, int, int]

MIME_TYPES: Final[dict[str, str]] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
}
FAIL_MODES: Final[tuple[str, ...]] = ("none", "always", "transient", "flaky")

# WebP cannot encode a side longer than this; the other formats allow more, but a
# local stand-in has no reason to.
MAX_SIDE: Final = 16383

# Shapes are painted at a reduced size and upscaled: the picture is soft anyway,
# and this keeps a 2016x864 render to a few tens of milliseconds.
_DRAW_LONG_SIDE: Final = 640
_MAX_MOTIFS: Final = 48

_WORD_RE: Final = re.compile(r"@?[\w'-]+")
_STOP_WORDS: Final = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "by",
        "for",
        "to",
        "and",
        "or",
        "with",
        "from",
        "into",
        "over",
        "under",
        "is",
        "are",
        "be",
        "as",
        "its",
        "it",
        "this",
        "that",
        "very",
    ]
)

# Colour words pull the palette towards colours a reader would recognise.
_COLOUR_WORDS: Final[dict[str, tuple[RGB, ...]]] = {
    "red": ((200, 30, 40), (130, 15, 25)),
    "crimson": ((170, 15, 45),),
    "orange": ((245, 140, 30), (200, 95, 20)),
    "yellow": ((250, 215, 50), (230, 190, 30)),
    "gold": ((212, 175, 55), (160, 120, 30)),
    "golden": ((225, 180, 60), (170, 125, 35)),
    "green": ((40, 160, 70), (20, 110, 45)),
    "forest": ((20, 80, 40), (60, 120, 50), (100, 75, 40)),
    "grass": ((80, 170, 60), (45, 120, 40)),
    "meadow": ((110, 180, 70), (230, 210, 90)),
    "jungle": ((15, 100, 45), (70, 150, 40)),
    "blue": ((30, 80, 200), (20, 45, 130)),
    "ocean": ((10, 70, 130), (20, 140, 170), (200, 230, 240)),
    "sea": ((15, 85, 140), (35, 150, 170)),
    "sky": ((120, 180, 240), (200, 225, 250)),
    "cyan": ((30, 200, 220),),
    "teal": ((20, 130, 130),),
    "turquoise": ((60, 210, 200),),
    "purple": ((120, 50, 170), (80, 30, 120)),
    "violet": ((140, 80, 200),),
    "pink": ((240, 130, 180), (250, 190, 210)),
    "brown": ((120, 75, 40), (80, 50, 25)),
    "black": ((15, 15, 20),),
    "white": ((245, 245, 245),),
    "grey": ((128, 128, 130),),
    "gray": ((128, 128, 130),),
    "silver": ((190, 195, 200), (150, 155, 165)),
    "sunset": ((250, 120, 40), (220, 60, 90), (90, 40, 120)),
    "sunrise": ((250, 180, 100), (240, 120, 130), (120, 170, 220)),
    "dawn": ((250, 190, 130), (200, 160, 210)),
    "dusk": ((70, 50, 110), (220, 110, 90)),
    "snow": ((240, 245, 255), (190, 215, 240), (150, 180, 215)),
    "snowy": ((240, 245, 255), (190, 215, 240)),
    "ice": ((210, 235, 250), (140, 190, 230)),
    "winter": ((225, 235, 250), (150, 175, 210)),
    "night": ((10, 15, 45), (30, 30, 80), (230, 230, 180)),
    "midnight": ((8, 10, 35), (25, 25, 70)),
    "space": ((5, 5, 20), (40, 20, 80)),
    "fire": ((255, 90, 0), (255, 200, 40), (150, 20, 10)),
    "flame": ((255, 110, 10), (255, 210, 60)),
    "lava": ((255, 70, 0), (60, 20, 15)),
    "desert": ((220, 180, 120), (190, 130, 70)),
    "sand": ((225, 195, 140),),
    "autumn": ((200, 90, 30), (160, 50, 20), (230, 170, 50)),
    "neon": ((255, 40, 200), (40, 255, 230), (120, 60, 255)),
    "pastel": ((250, 200, 210), (200, 230, 250), (220, 250, 210)),
}
_STARRY_WORDS: Final = frozenset(
    {"night", "midnight", "space", "star", "stars", "starry", "galaxy"}
)
_GLOW_WORDS: Final = frozenset({"sun", "sunset", "sunrise", "moon", "lamp", "light", "glow"})


class UnreadableReferenceError(Exception):
    """A reference picture's bytes could not be decoded.

    Raised by the render function instead of GeneratorError because it must cross
    a process boundary: its arguments round-trip through pickle unchanged.
    """

    def __init__(self, index: int, detail: str) -> None:
        super().__init__(index, detail)
        self.index = index
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Motif:
    """One shape of the composition, in units of the picture's shorter side."""

    kind: str  # "ellipse", "box", "rounded", "ring", "polygon" or "stripes"
    points: tuple[tuple[float, float], ...]
    colour: RGB
    alpha: int
    stroke: float


def _digest(text: str) -> bytes:
    # hashlib rather than hash(): str hashing is salted per process.
    return hashlib.sha256(text.encode("utf-8")).digest()


def _mix(a: RGB, b: RGB, amount: float) -> RGB:
    return (
        round(a[0] + (b[0] - a[0]) * amount),
        round(a[1] + (b[1] - a[1]) * amount),
        round(a[2] + (b[2] - a[2]) * amount),
    )


def _mean(colours: Sequence[RGB]) -> RGB:
    n = len(colours)
    return (
        round(sum(c[0] for c in colours) / n),
        round(sum(c[1] for c in colours) / n),
        round(sum(c[2] for c in colours) / n),
    )


def _word_colour(word: str) -> RGB:
    d = _digest("colour:" + word)
    hue = int.from_bytes(d[0:2], "big") / 65535
    saturation = 0.35 + d[2] / 255 * 0.5
    value = 0.45 + d[3] / 255 * 0.5
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return (round(r * 255), round(g * 255), round(b * 255))


def _colour_word(word: str) -> tuple[RGB, ...]:
    found = _COLOUR_WORDS.get(word)
    if found is None and word.endswith("s"):
        found = _COLOUR_WORDS.get(word[:-1])
    return found or ()


def prompt_words(prompt: str) -> list[str]:
    """The prompt's content words, lower-cased, in order (aliases keep their ``@``)."""
    return [w for w in _WORD_RE.findall(prompt.lower()) if w.strip("'-") not in _STOP_WORDS]


def reference_colours(content: bytes, index: int) -> tuple[RGB, tuple[RGB, ...]]:
    """The average colour and up to three dominant colours of an encoded picture."""
    try:
        with Image.open(io.BytesIO(content)) as opened:
            # JPEG can decode straight at a fraction of its size; others ignore this.
            opened.draft("RGB", (128, 128))
            if opened.mode in ("RGBA", "LA", "PA") or "transparency" in opened.info:
                # Transparent areas carry arbitrary colour values; see them over white.
                rgba = opened.convert("RGBA")
                backdrop = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                picture = Image.alpha_composite(backdrop, rgba).convert("RGB")
            else:
                picture = opened.convert("RGB")
        picture.thumbnail((64, 64))
        average = picture.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
        quantized = picture.quantize(colors=4, method=Image.Quantize.MEDIANCUT)
        counts = sorted(quantized.getcolors() or [], key=lambda pair: (-pair[0], pair[1]))
        flat = quantized.getpalette() or []
    except Exception as exc:
        # Pillow reports corrupt input through many exception types (OSError,
        # SyntaxError, ValueError, struct.error, DecompressionBombError, ...).
        raise UnreadableReferenceError(index, f"{type(exc).__name__}: {exc}") from None
    assert isinstance(average, tuple)
    dominant: list[RGB] = []
    for _, entry in counts[:3]:
        if isinstance(entry, int) and 3 * entry + 2 < len(flat):
            dominant.append((flat[3 * entry], flat[3 * entry + 1], flat[3 * entry + 2]))
    return (int(average[0]), int(average[1]), int(average[2])), tuple(dominant)


def _palette(
    words: Sequence[str], references: Sequence[tuple[RGB, tuple[RGB, ...]]]
) -> tuple[list[RGB], list[RGB], list[RGB]]:
    """Return (named colours, per-word colours, background corners)."""
    named: list[RGB] = []
    for word in words:
        for colour in _colour_word(word):
            if colour not in named:
                named.append(colour)
    per_word = [_word_colour(w) for w in words] or [_word_colour("")]
    if named:
        anchor = _mean(named)
        per_word = [_mix(c, anchor, 0.45) for c in per_word]
        corners = [named[i % len(named)] for i in range(4)]
        # A single named colour would give a flat background; shade its corners.
        corners = [
            _mix(c, (0, 0, 0), 0.35) if i % 2 else _mix(c, (255, 255, 255), 0.15)
            for i, c in enumerate(corners)
        ]
    else:
        corners = [per_word[i % len(per_word)] for i in range(4)]
        corners[3] = _mix(corners[3], (0, 0, 0), 0.3)
    if references:
        average = _mean([avg for avg, _ in references])
        dominant = [c for _, cs in references for c in cs] or [average]
        named = [_mix(c, average, 0.35) for c in named] + dominant
        per_word = [_mix(c, average, 0.35) for c in per_word]
        corners = [_mix(c, dominant[i % len(dominant)], 0.45) for i, c in enumerate(corners)]
    return named, per_word, corners


def _compose(
    words: Sequence[str],
    named: Sequence[RGB],
    per_word: Sequence[RGB],
    aspect: float,
    seed: int,
) -> list[_Motif]:
    """Lay out the motifs; x spans [0, aspect] and y [0, 1] when wide, the reverse when tall.

    A word decides its motif's shape, colour and size; the seed moves it around,
    so that a regeneration re-arranges the same elements.
    """
    span_x, span_y = (aspect, 1.0) if aspect >= 1 else (1.0, 1 / aspect)
    count = min(_MAX_MOTIFS, len(words) + 2) if words else 3
    subjects = [words[i % len(words)] if words else "" for i in range(count)]
    motifs: list[_Motif] = []
    seen: dict[str, int] = {}
    for index, word in enumerate(subjects):
        seen[word] = seen.get(word, 0) + 1
        d = _digest(f"motif:{word}:{seen[word]}")
        place = _digest(f"place:{seed}:{word}:{seen[word]}")
        cx = (place[0] / 255 * 0.9 + 0.05) * span_x
        cy = (place[1] / 255 * 0.9 + 0.05) * span_y
        # Earlier words are the subject: they get the larger shapes.
        size = (0.08 + d[2] / 255 * 0.3) * (1.4 if index < 2 else 1.0) * (0.85 + place[2] / 850)
        angle = place[3] / 255 * math.tau
        if named and d[4] < 192:
            colour = named[d[5] % len(named)]
        else:
            colour = per_word[index % len(per_word)]
        alpha = 110 + d[6] % 120
        kind_pick = d[7] % 8
        stroke = size * 0.15
        if kind_pick == 0:
            motif = _Motif(
                "ellipse", _box(cx, cy, size, size * (0.6 + d[8] / 255)), colour, alpha, 0
            )
        elif kind_pick == 1:
            motif = _Motif("box", _box(cx, cy, size * 1.2, size * 0.8), colour, alpha, 0)
        elif kind_pick == 2:
            motif = _Motif("rounded", _box(cx, cy, size, size), colour, alpha, 0)
        elif kind_pick == 3:
            motif = _Motif("ring", _box(cx, cy, size, size), colour, alpha, stroke)
        elif kind_pick == 4:
            points = 5 + d[9] % 3
            radii = [size if i % 2 == 0 else size * 0.45 for i in range(points * 2)]
            motif = _Motif("polygon", _star(cx, cy, radii, angle), colour, alpha, 0)
        elif kind_pick == 5:
            motif = _Motif("polygon", _star(cx, cy, [size] * 3, angle), colour, alpha, 0)
        elif kind_pick == 6:
            # A ridge rising from the bottom edge gives the picture a horizon.
            peak_y = max(cy, span_y * 0.35)
            ridge = (
                (cx - size * 2.5, span_y),
                (cx - size * 0.6, peak_y + size * 0.4),
                (cx, peak_y),
                (cx + size * 0.9, peak_y + size * 0.5),
                (cx + size * 2.5, span_y),
            )
            motif = _Motif("polygon", ridge, colour, alpha, 0)
        else:
            lines = []
            dx, dy = math.cos(angle) * size * 1.5, math.sin(angle) * size * 1.5
            for k in range(3 + d[10] % 3):
                ox, oy = -math.sin(angle) * stroke * 2 * k, math.cos(angle) * stroke * 2 * k
                lines += [(cx - dx + ox, cy - dy + oy), (cx + dx + ox, cy + dy + oy)]
            motif = _Motif("stripes", tuple(lines), colour, alpha, stroke * 0.7)
        motifs.append(motif)
    return motifs


def _box(cx: float, cy: float, w: float, h: float) -> tuple[tuple[float, float], ...]:
    return ((cx - w / 2, cy - h / 2), (cx + w / 2, cy + h / 2))


def _star(
    cx: float, cy: float, radii: Sequence[float], angle: float
) -> tuple[tuple[float, float], ...]:
    step = math.tau / len(radii)
    return tuple(
        (cx + r * math.cos(angle + i * step), cy + r * math.sin(angle + i * step))
        for i, r in enumerate(radii)
    )


def _paint(draw: ImageDraw.ImageDraw, motif: _Motif, unit: float, *, outline: bool) -> None:
    xy = [(x * unit, y * unit) for x, y in motif.points]
    if outline:
        shade = _mix(motif.colour, (255, 255, 255), 0.5)
        fill: tuple[int, ...] = (*shade, 170)
        width = max(1, round(unit / 400))
        if motif.kind in ("ellipse", "ring"):
            draw.ellipse(xy, outline=fill, width=width)
        elif motif.kind == "box":
            draw.rectangle(xy, outline=fill, width=width)
        elif motif.kind == "rounded":
            draw.rounded_rectangle(
                xy, radius=(xy[1][0] - xy[0][0]) * 0.2, outline=fill, width=width
            )
        elif motif.kind == "polygon":
            draw.line([*xy, xy[0]], fill=fill, width=width, joint="curve")
        return
    fill = (*motif.colour, motif.alpha)
    if motif.kind == "ellipse":
        draw.ellipse(xy, fill=fill)
    elif motif.kind == "box":
        draw.rectangle(xy, fill=fill)
    elif motif.kind == "rounded":
        draw.rounded_rectangle(xy, radius=(xy[1][0] - xy[0][0]) * 0.2, fill=fill)
    elif motif.kind == "ring":
        draw.ellipse(xy, outline=fill, width=max(1, round(motif.stroke * unit)))
    elif motif.kind == "polygon":
        draw.polygon(xy, fill=fill)
    else:
        width = max(1, round(motif.stroke * unit))
        for start in range(0, len(xy), 2):
            draw.line(xy[start : start + 2], fill=fill, width=width)


def _background(size: tuple[int, int], corners: Sequence[RGB], turn: int) -> Image.Image:
    """A four-corner gradient; ``turn`` rotates which colour sits in which corner."""
    tl, tr, br, bl = (corners[(i + turn) % 4] for i in range(4))
    down, across = _corner_masks(size)
    # Composite takes its first image where the mask is white: right for across, bottom for down.
    top = Image.composite(Image.new("RGB", size, tr), Image.new("RGB", size, tl), across)
    bottom = Image.composite(Image.new("RGB", size, br), Image.new("RGB", size, bl), across)
    return Image.composite(bottom, top, down)


def encode_picture(picture: Image.Image, image_format: str) -> bytes:
    """Encode ``picture`` the way every LocalGenerator picture is encoded."""
    out = io.BytesIO()
    if image_format == "png":
        # Level 1 is several times faster than the default 6 for a modest size cost.
        picture.save(out, "PNG", compress_level=1)
    elif image_format == "jpeg":
        picture.save(out, "JPEG", quality=90)
    elif image_format == "webp":
        # method=2 rather than the default 4: about three times faster, ~10% larger.
        picture.save(out, "WEBP", quality=85, method=2)
    else:
        raise ValueError(f"unsupported image format {image_format!r}")
    return out.getvalue()


# The glow and vignette masks depend only on their size: made once per size and shared
# (read-only) by every picture, instead of a gradient, a point map and a resize each.
_MASKS_KEPT: Final = 256


@functools.lru_cache(maxsize=_MASKS_KEPT)
def _glow_mask(side: int) -> Image.Image:
    """A soft round glow, zero from the inscribed circle outwards (no visible edge)."""
    return Image.radial_gradient("L").point(lambda v: max(0, 170 - v) * 3 // 2).resize((side, side))


@functools.lru_cache(maxsize=_MASKS_KEPT)
def _corner_masks(size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """The background's two gradients: top to bottom, and left to right."""
    down = Image.linear_gradient("L").resize(size)
    across = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(size)
    return down, across


@functools.lru_cache(maxsize=_MASKS_KEPT)
def _vignette(size: tuple[int, int]) -> Image.Image:
    """Darkened edges, as a photograph's lens gives."""
    return Image.radial_gradient("L").point(lambda v: v * 90 // 255).resize(size)


def render_picture(
    prompt: str,
    width: int,
    height: int,
    seed: int,
    references: tuple[bytes, ...],
    image_format: str,
) -> bytes:
    """Paint and encode the picture for (prompt, seed); the same inputs give the same bytes.

    A plain module-level function of plain values so that it can run in a process pool.
    """
    words = prompt_words(prompt)
    refs = [reference_colours(content, i) for i, content in enumerate(references)]
    named, per_word, corners = _palette(words, refs)
    rng = random.Random(int.from_bytes(_digest(f"seed:{seed}:{prompt}")[:8], "big"))

    scale = max(1, math.ceil(max(width, height) / _DRAW_LONG_SIDE))
    small = (max(1, round(width / scale)), max(1, round(height / scale)))
    lead = _digest("lead:" + (words[0] if words else ""))
    canvas = _background(small, corners, (lead[0] + seed) % 4)

    glow_words = [w for w in words if w in _GLOW_WORDS]
    if glow_words or lead[1] < 96:
        glow_colour = _mix(named[0] if named else per_word[0], (255, 240, 200), 0.6)
        side = max(1, round(min(small) * (0.5 + lead[2] / 255 * 0.6)))
        # Zero from the inscribed circle outwards, so the square mask leaves no visible edge.
        mask = _glow_mask(side)
        x = round(rng.uniform(0.1, 0.9) * small[0]) - side // 2
        y = round(rng.uniform(0.1, 0.6) * small[1]) - side // 2
        canvas.paste(glow_colour, (x, y, x + side, y + side), mask)

    short_side = min(small)
    motifs = _compose(words, named, per_word, width / height, seed)
    draw = ImageDraw.Draw(canvas, "RGBA")
    for motif in motifs:
        _paint(draw, motif, short_side, outline=False)

    # Darkened edges pull the eye to the middle, as a photograph's lens would.
    canvas.paste((0, 0, 0), (0, 0, *small), _vignette(small))
    canvas = canvas.filter(ImageFilter.GaussianBlur(0.8))

    picture = canvas.resize((width, height), Image.Resampling.BICUBIC)
    # Crisp outlines and specks drawn at full size keep the upscaled picture from looking blurred.
    full_unit = min(width, height)
    detail = ImageDraw.Draw(picture, "RGBA")
    for motif in motifs[::3]:
        _paint(detail, motif, full_unit, outline=True)
    starry = any(w in _STARRY_WORDS for w in words)
    specks = 60 if starry else 3 * min(len(words), 12)
    speck_colour = (255, 255, 240) if starry else _mix(per_word[0], (255, 255, 255), 0.7)
    for _ in range(specks):
        sx, sy = rng.uniform(0, width), rng.uniform(0, height * 0.7)
        r = rng.uniform(0.6, 2.2) * max(1, full_unit / 1024)
        detail.ellipse(
            (sx - r, sy - r, sx + r, sy + r), fill=(*speck_colour, rng.randint(140, 255))
        )

    return encode_picture(picture, image_format)


class LocalGenerator:
    """Draws pictures on this machine with Pillow: no model, no network, fully deterministic.

    It stands in for a hosted model in development, tests and benchmarks;
    ``delay_seconds`` and ``fail_mode`` imitate a hosted model's latency and failures.
    """

    name = "local"

    def __init__(
        self,
        *,
        image_format: str = "png",
        delay_seconds: float = 0.0,
        fail_mode: str = "none",
        executor: Executor | None = None,
        max_side: int = 0,
    ) -> None:
        if image_format not in MIME_TYPES:
            raise ValueError(
                f"image_format must be one of {sorted(MIME_TYPES)}, not {image_format!r}"
            )
        if fail_mode not in FAIL_MODES:
            raise ValueError(f"fail_mode must be one of {list(FAIL_MODES)}, not {fail_mode!r}")
        if not delay_seconds >= 0:
            raise ValueError(f"delay_seconds must be zero or more, not {delay_seconds!r}")
        self._image_format = image_format
        self._delay_seconds = delay_seconds
        self._fail_mode = fail_mode
        self._executor = executor
        # Above 0: draw at most this many pixels a side (same aspect ratio). With a
        # delay it stands in for a hosted model whose picture costs this process nothing.
        self._max_side = max_side
        self._calls: dict[tuple[str, int], int] = {}

    @property
    def mime_type(self) -> str:
        """The MIME type of every picture this generator returns."""
        return MIME_TYPES[self._image_format]

    def _configured_failure(self, request: GenerateRequest) -> GeneratorError | None:
        if self._fail_mode == "always":
            return GeneratorError(
                "GENERATOR_ERROR", "the local generator is configured to fail", transient=False
            )
        if self._fail_mode == "transient":
            return GeneratorError(
                "GENERATOR_UNAVAILABLE",
                "the local generator is configured to be unavailable",
                transient=True,
            )
        if self._fail_mode == "flaky":
            key = (request.prompt, request.seed)
            calls = self._calls.get(key, 0)
            self._calls[key] = calls + 1
            if calls == 0:
                return GeneratorError(
                    "GENERATOR_UNAVAILABLE",
                    "the local generator failed the first attempt (flaky mode)",
                    transient=True,
                )
        return None

    async def generate(self, request: GenerateRequest) -> GeneratedPicture:
        """Draw the picture off the event loop; raise GeneratorError on failure."""
        if not (0 < request.width <= MAX_SIDE and 0 < request.height <= MAX_SIDE):
            raise GeneratorError(
                "GENERATOR_ERROR",
                f"cannot draw {request.width}x{request.height}: each side must be 1..{MAX_SIDE}",
                transient=False,
            )
        # Decided before any await so that concurrent calls count attempts in call order.
        failure = self._configured_failure(request)
        if failure is not None:
            await self._wait()
            raise failure
        # A generation's own output_format wins over the deployment's.
        image_format = request.output_format or self._image_format
        if image_format not in MIME_TYPES:
            await self._wait()
            raise GeneratorError(
                "GENERATOR_ERROR", f"cannot encode {image_format!r}", transient=False
            )
        width, height = self._drawn_size(request.width, request.height)
        # Drawn while the delay runs, as a hosted model draws while its caller waits, and in
        # its second half: a hosted model costs its caller no CPU, and this stand-in's
        # drawing is kept away from the engine's own work around a call (the claim just
        # before, storing and committing just after), which calls started together do at
        # the same moments. A call takes max(delay, delay / 2 + drawing), and one
        # abandoned in the first half has drawn nothing.
        half = self._delay_seconds / 2
        if half > 0:
            await asyncio.sleep(half)
        drawing = asyncio.get_running_loop().run_in_executor(
            self._executor,
            render_picture,
            request.prompt,
            width,
            height,
            request.seed,
            tuple(ref.content for ref in request.references),
            image_format,
        )
        try:
            if half > 0:
                await asyncio.sleep(half)
        except BaseException:
            # Its result is not wanted (cancel() also keeps a drawing that already failed
            # from being logged as an error never read).
            drawing.cancel()
            raise
        try:
            content = await drawing
        except UnreadableReferenceError as exc:
            raise GeneratorError(
                "REFERENCE_UNREADABLE",
                f"reference picture {exc.index + 1} could not be decoded ({exc.detail})",
                transient=False,
            ) from exc
        except BrokenProcessPool:
            # A drawing process died (killed, out of memory); the next attempt draws in
            # a new one (IMAGEGEN_DRAW_PROCESSES).
            raise GeneratorError(
                "GENERATOR_UNAVAILABLE",
                "the process drawing the picture died before it finished",
                transient=True,
            ) from None
        return GeneratedPicture(
            content=content,
            mime_type=MIME_TYPES[image_format],
            width=width,
            height=height,
        )

    async def _wait(self) -> None:
        if self._delay_seconds > 0:
            await asyncio.sleep(self._delay_seconds)

    def _drawn_size(self, width: int, height: int) -> tuple[int, int]:
        longest = max(width, height)
        if not self._max_side or longest <= self._max_side:
            return width, height
        scale = self._max_side / longest
        return max(1, round(width * scale)), max(1, round(height * scale))
