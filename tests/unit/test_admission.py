"""Admission counts unary calls and streams apart, and gives every slot back."""

from __future__ import annotations

import pytest

from server.api.admission import Admission
from server.domain.errors import DomainError, Status


def test_unary_calls_past_the_limit_are_refused_with_a_reason() -> None:
    admission = Admission(max_unary=1, max_streams=10, max_streams_per_key=10)
    admission.take_unary()
    with pytest.raises(DomainError) as refused:
        admission.take_unary()
    assert refused.value.status is Status.RESOURCE_EXHAUSTED
    assert refused.value.reason == "TOO_MANY_CALLS"
    assert refused.value.retry_after_seconds is not None
    assert admission.unary == 1  # the refused call took nothing
    # Streams do not compete for unary slots.
    admission.take_stream("key-a")
    assert admission.streams == 1
    admission.release_stream("key-a")
    admission.release_unary()
    assert admission.unary == 0
    admission.take_unary()  # the slot came back
    assert admission.unary == 1


def test_streams_are_limited_per_key_and_per_process() -> None:
    admission = Admission(max_unary=1, max_streams=3, max_streams_per_key=2)
    admission.take_stream("a")
    admission.take_stream("a")
    with pytest.raises(DomainError) as per_key:
        admission.take_stream("a")
    assert (per_key.value.reason, per_key.value.metadata["scope"]) == ("TOO_MANY_STREAMS", "key")
    admission.take_stream("b")
    with pytest.raises(DomainError) as per_process:
        admission.take_stream("c")
    assert per_process.value.status is Status.RESOURCE_EXHAUSTED
    assert per_process.value.metadata["scope"] == "server"
    assert (admission.streams, admission.streams_of("a"), admission.streams_of("c")) == (3, 2, 0)
    for key in ("b", "a", "a"):
        admission.release_stream(key)
    assert admission.streams == 0
    assert admission.streams_of("a") == 0


def test_a_released_stream_slot_can_be_taken_again() -> None:
    admission = Admission(max_unary=1, max_streams=1, max_streams_per_key=1)
    admission.take_stream("a")
    with pytest.raises(DomainError):
        admission.take_stream("b")  # the process's one slot is held
    admission.release_stream("a")
    admission.take_stream("b")
    assert (admission.streams, admission.streams_of("a"), admission.streams_of("b")) == (1, 0, 1)
