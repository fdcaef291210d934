"""A generation's life as a state machine: its states and the moves allowed between them.

    PENDING ──claim──▶ PROCESSING ──succeed──▶ SUCCESS
     │ │                 │ │ ▲  └────fail─────▶ FAILED
     │ │                 │ └─┘ reclaim (lease expired: its worker died)
     │ └───────expire────┼──────(timeout)──────▶ FAILED (DEADLINE_EXCEEDED)
     └─────────cancel────┴─────────────────────▶ CANCELLED
       rerun (regenerate, or an update of prompt/aspect ratio): from any state to PENDING

Every change of a generation's status goes through :func:`advance`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from server.domain.errors import DomainError, Status


class GenerationStatus(StrEnum):
    """PENDING → PROCESSING → SUCCESS | FAILED, or CANCELLED before it finishes."""

    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether a run has ended in this state."""
        return self in TERMINAL


TERMINAL: Final = frozenset(
    {GenerationStatus.SUCCESS, GenerationStatus.FAILED, GenerationStatus.CANCELLED}
)
UNFINISHED: Final = frozenset({GenerationStatus.PENDING, GenerationStatus.PROCESSING})


class Move(StrEnum):
    """What happens to a generation."""

    CLAIM = "claim"  # a worker takes it
    SUCCEED = "succeed"  # its run stored an image
    FAIL = "fail"  # its run ended with an error
    RERUN = "rerun"  # regenerate, or a change that needs new content
    CANCEL = "cancel"  # the caller stops it before it finishes
    EXPIRE = "expire"  # its timeout passed before it finished (queue time included)


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
    Move.CANCEL: (UNFINISHED, GenerationStatus.CANCELLED),
    Move.EXPIRE: (UNFINISHED, GenerationStatus.FAILED),
}

DEADLINE_EXCEEDED: Final = "DEADLINE_EXCEEDED"  # the error code of an expired generation


def advance(current: GenerationStatus, move: Move) -> GenerationStatus:
    """The status after ``move``; FAILED_PRECONDITION if the move is not allowed from here."""
    sources, target = MOVES[move]
    if move is Move.CANCEL and current.terminal:
        raise DomainError(
            Status.FAILED_PRECONDITION,
            "GENERATION_ALREADY_FINISHED",
            f"the generation is already {current.value}; only a pending or processing one "
            "can be cancelled",
            metadata={"status": current.value},
        )
    if current not in sources:
        raise DomainError(
            Status.FAILED_PRECONDITION,
            "INVALID_STATUS_TRANSITION",
            f"a {current.value} generation cannot {move.value}",
            metadata={"status": current.value, "move": move.value},
        )
    return target
