"""structlog setup: one JSON (or console) line per event, configured in one place."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

# The fields of the RPC being served (correlation id, method, principal), added to every
# line logged while serving it. One variable, set once per call in the call's own task,
# where structlog's contextvars cost a variable per field and a walk of the whole
# context to clear them (grpc runs each call in a task of its own, which ends with it).
call_fields: ContextVar[dict[str, Any] | None] = ContextVar("imagegen_call_fields", default=None)


def merge_call_fields(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current call's fields, under the event's own."""
    fields = call_fields.get()
    if fields:
        for name, value in fields.items():
            event.setdefault(name, value)
    return event


def add_process_id(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the id of the process that wrote the line.

    `imagegen serve` and its gateway processes (IMAGEGEN_GATEWAY_PROCESSES) write to one
    stderr; without it their lines cannot be told apart.
    """
    event.setdefault("pid", os.getpid())
    return event


# The lowest level configure_logging lets through (until it runs, structlog's default
# lets everything through). Checked before building a line per RPC that would be dropped.
_lowest_level = logging.NOTSET


def enabled(level: int) -> bool:
    """Whether a line at ``level`` would be written."""
    return level >= _lowest_level


def configure_logging(level: str = "info", fmt: str = "json", stream: Any = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr by default) at ``level``."""
    global _lowest_level
    _lowest_level = logging.getLevelNamesMapping()[level.upper()]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            merge_call_fields,
            add_process_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Other libraries' stdlib log records (uvicorn, alembic, …) get the same shape.
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                add_process_id,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosqlite logs every SQL parameter at DEBUG, API key hashes included.
    for noisy in ("alembic", "sqlalchemy", "aiosqlite", "asyncio", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
