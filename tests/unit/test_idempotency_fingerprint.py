"""Tests for idempotency fingerprints: canonical JSON of the request, not its repr."""

from __future__ import annotations

from dataclasses import replace

from server.domain.fields import FlowChoice, FlowMode
from server.domain.generations import CreateGeneration
from server.domain.images import UploadImage
from server.store.idempotency import fingerprint


def create(meta: dict[str, object]) -> CreateGeneration:
    return CreateGeneration(
        prompt="a lighthouse",
        aspect_ratio="1:1",
        references=("@logo",),
        flow=FlowChoice(FlowMode.NEW),
        alias=None,
        flow_alias=None,
        auto_enhance=True,
        enhancement_template="general",
        meta=meta,
        request_id="r-1",
    )


def test_the_same_request_has_the_same_fingerprint_whatever_its_key_order() -> None:
    first = create({"a": 1, "b": {"x": [1, 2], "y": None}})
    second = create({"b": {"y": None, "x": [1, 2]}, "a": 1})
    assert fingerprint(first) == fingerprint(second)


def test_any_change_of_the_request_changes_the_fingerprint() -> None:
    base = create({"a": 1})
    changed = [
        replace(base, prompt="a lighthouse at night"),
        replace(base, meta={"a": 2}),
        replace(base, flow=FlowChoice(FlowMode.NONE)),
        replace(base, auto_enhance=False),
        replace(base, references=()),
    ]
    digests = {fingerprint(base), *(fingerprint(c) for c in changed)}
    assert len(digests) == len(changed) + 1


def test_upload_bytes_count_through_their_digest() -> None:
    upload = UploadImage(
        content=b"\x89PNG one",
        mime_type="image/png",
        alias=None,
        flow=FlowChoice(FlowMode.NONE),
        flow_alias=None,
        meta={},
        request_id="r-2",
    )
    same = replace(upload)
    other = replace(upload, content=b"\x89PNG two")
    assert fingerprint({"command": upload}) == fingerprint({"command": same})
    assert fingerprint({"command": upload}) != fingerprint({"command": other})


def test_the_fingerprint_is_a_sha256_hex_digest() -> None:
    digest = fingerprint({"regenerate": "0190a7d2-0000-7000-8000-000000000000"})
    assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")
