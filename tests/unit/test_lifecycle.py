"""Tests for the generation state machine: every allowed move, and the refusal of the rest."""

from __future__ import annotations

import pytest

from server.domain.errors import DomainError, Status
from server.domain.lifecycle import MOVES, TERMINAL, GenerationStatus, Move, advance

S = GenerationStatus

ALLOWED = {
    (S.PENDING, Move.CLAIM): S.PROCESSING,
    # A PROCESSING generation whose lease expired (its worker died) is claimed again.
    (S.PROCESSING, Move.CLAIM): S.PROCESSING,
    (S.PROCESSING, Move.SUCCEED): S.SUCCESS,
    (S.PROCESSING, Move.FAIL): S.FAILED,
    (S.PENDING, Move.RERUN): S.PENDING,
    (S.PROCESSING, Move.RERUN): S.PENDING,
    (S.SUCCESS, Move.RERUN): S.PENDING,
    (S.FAILED, Move.RERUN): S.PENDING,
    (S.CANCELLED, Move.RERUN): S.PENDING,
    (S.PENDING, Move.CANCEL): S.CANCELLED,
    (S.PROCESSING, Move.CANCEL): S.CANCELLED,
    (S.PENDING, Move.EXPIRE): S.FAILED,
    (S.PROCESSING, Move.EXPIRE): S.FAILED,
}
FINISHED_CANCEL = {(start, Move.CANCEL) for start in TERMINAL}


@pytest.mark.parametrize(("start", "move"), list(ALLOWED))
def test_allowed_moves_lead_where_the_diagram_says(start: S, move: Move) -> None:
    assert advance(start, move) is ALLOWED[(start, move)]


@pytest.mark.parametrize(
    ("start", "move"),
    [
        (start, move)
        for start in S
        for move in Move
        if (start, move) not in ALLOWED and (start, move) not in FINISHED_CANCEL
    ],
)
def test_every_other_move_is_refused_as_failed_precondition(start: S, move: Move) -> None:
    with pytest.raises(DomainError) as caught:
        advance(start, move)
    assert caught.value.status is Status.FAILED_PRECONDITION
    assert caught.value.reason == "INVALID_STATUS_TRANSITION"
    assert caught.value.metadata == {"status": start.value, "move": move.value}


@pytest.mark.parametrize("start", sorted(TERMINAL))
def test_cancelling_a_finished_generation_says_it_is_finished(start: S) -> None:
    with pytest.raises(DomainError) as caught:
        advance(start, Move.CANCEL)
    assert caught.value.status is Status.FAILED_PRECONDITION
    assert caught.value.reason == "GENERATION_ALREADY_FINISHED"
    assert caught.value.metadata == {"status": start.value}


def test_the_table_declares_exactly_the_allowed_moves() -> None:
    declared = {
        (start, move): target for move, (starts, target) in MOVES.items() for start in starts
    }
    assert declared == ALLOWED


def test_terminal_states_are_the_ends_of_a_run() -> None:
    assert {s for s in S if s.terminal} == set(TERMINAL) == {S.SUCCESS, S.FAILED, S.CANCELLED}
