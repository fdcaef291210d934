"""A generation's life as a state machine: its states and the moves allowed between them.

    PENDING ──claim──▶ PROCESSING ──succeed──▶ SUCCESS
       ▲                 │  ▲  └────fail─────▶ FAILED
       │                 └──┘ reclaim (lease expired: its worker died)
       └──── rerun (regenerate, or an update of prompt/aspect ratio) from any state

Every change of a generation's status goes through :func:`advance`, so a new
state (CANCELLED, say) is one new member and a few new rows of ``MOVES``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from server.domain.errors import DomainError, Status


class GenerationStatus(StrEnum):
    """PENDING → PROCESSING → SUCCESS | FAILED."""

    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """Whether a run has ended in this state."""
        return self in TERMINAL


TERMINAL: Final = frozenset({GenerationStatus.SUCCESS, GenerationStatus.FAILED})


class Move(StrEnum):
    """What happens to a generation."""

    CLAIM = "claim"  # a worker takes it
    SUCCEED = "succeed"  # its run stored an image
    FAIL = "fail"  # its run ended with an error
    RERUN = "rerun"  # regenerate, or a change that needs new content


_ANY: Final = frozenset(GenerationStatus)

# The states each move may start from, and where it leads.
MOVES: Final[dict[Move, tuple[frozenset[GenerationStatus], GenerationStatus]]] = {
    # From PROCESSING only when the lease has expired; the store's query decides that.
    Move.CLAIM: (
        frozenset({GenerationStatus.PENDING, GenerationStatus.PROCESSING}),
        GenerationStatus.PROCESSING,
    ),
    Move.SUCCEED: (frozenset({GenerationStatus.PROCESSING}), GenerationStatus.SUCCESS),
    Move.FAIL: (frozenset({GenerationStatus.PROCESSING}), GenerationStatus.FAILED),
    Move.RERUN: (_ANY, GenerationStatus.PENDING),
}


def advance(current: GenerationStatus, move: Move) -> GenerationStatus:
    """The status after ``move``; FAILED_PRECONDITION if the move is not allowed from here."""
    sources, target = MOVES[move]
    if current not in sources:
        raise DomainError(
            Status.FAILED_PRECONDITION,
            "INVALID_STATUS_TRANSITION",
            f"a {current.value} generation cannot {move.value}",
            metadata={"status": current.value, "move": move.value},
        )
    return target
