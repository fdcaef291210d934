"""Outbox snapshots: the one-walk conversion gives exactly what a JSON round trip of asdict gave."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from server.domain.generations import Generation, ReferenceUse, from_snapshot, to_snapshot
from server.domain.images import Image, ImageSource
from server.domain.lifecycle import GenerationStatus

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

# What a caller's meta may hold once parsed from JSON or a protobuf Struct.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


def _reference(generation: Generation) -> Any:
    def default(value: object) -> str:
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(type(value).__name__)

    return json.loads(json.dumps(asdict(generation), default=default))


def _generation(meta: dict[str, Any]) -> Generation:
    image = Image(
        id="11111111-1111-4111-8111-111111111111",
        project_id="22222222-2222-4222-8222-222222222222",
        flow_id=None,
        generation_id="33333333-3333-4333-8333-333333333333",
        source=ImageSource.GENERATED,
        alias="@hero",
        mime_type="image/png",
        file_size=1234,
        width=64,
        height=64,
        focal_point=(0.25, 0.75),
        meta={"tags": ("a", "b")},
        object_key="p/i.png",
        etag="abc",
        create_time=NOW,
        update_time=NOW + timedelta(seconds=1),
    )
    return Generation(
        id="33333333-3333-4333-8333-333333333333",
        project_id="22222222-2222-4222-8222-222222222222",
        flow_id="44444444-4444-4444-8444-444444444444",
        input_prompt="a lighthouse",
        enhanced_prompt="a lighthouse at dusk",
        auto_enhance=True,
        enhancement_template="general",
        aspect_ratio="1:1",
        status=GenerationStatus.SUCCESS,
        output_image=image,
        references=(ReferenceUse(image_id=image.id, alias="@hero"),),
        requested_references=("@hero",),
        alias=None,
        flow_alias="@last",
        meta=meta,
        error_code=None,
        error_message=None,
        processing_time_ms=42,
        run=2,
        attempt=1,
        revision=5,
        create_time=NOW,
        update_time=NOW,
        start_time=NOW,
        complete_time=NOW + timedelta(milliseconds=42),
        requested_seed=7,
    )


@given(JSON_VALUES.filter(lambda v: isinstance(v, dict)))
def test_snapshot_equals_the_json_round_trip(meta: dict[str, Any]) -> None:
    generation = _generation(meta)
    snapshot = to_snapshot(generation)
    assert snapshot == _reference(generation)
    assert json.loads(json.dumps(snapshot)) == snapshot


def test_snapshot_of_a_fresh_generation_round_trips() -> None:
    fresh = replace(
        _generation({"n": 1, 2: "non-string key"}),
        status=GenerationStatus.PENDING,
        output_image=None,
        references=(),
        start_time=None,
        complete_time=None,
    )
    snapshot = to_snapshot(fresh)
    assert snapshot == _reference(fresh)
    assert snapshot["meta"] == {"n": 1, "2": "non-string key"}
    assert from_snapshot(snapshot) == replace(fresh, meta={"n": 1, "2": "non-string key"})
