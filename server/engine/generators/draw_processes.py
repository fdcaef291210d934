"""Processes the local generator draws in, off the server's GIL; a dead one is replaced."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.process import BaseProcess
from typing import ParamSpec, TypeVar

import structlog

log = structlog.get_logger("imagegen.engine")

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _start_drawing_process() -> None:
    # Ctrl-C reaches the whole foreground process group; the server stops its drawing
    # processes itself, so they must not each die with a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A child holds its task queue's write end too, so it never reads end-of-file when
    # the server dies (kill -9): without this it would outlive it forever.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with, args=(parent,), name="parent-watch", daemon=True
        ).start()


def _exit_with(parent: BaseProcess) -> None:
    parent.join()
    os._exit(0)


class DrawProcesses(Executor):
    """A process pool that builds a new one when a process of the current one died.

    A process that dies (killed, out of memory) breaks the whole ProcessPoolExecutor:
    the drawings it held fail with BrokenProcessPool, which the local generator reports
    as a transient failure (retried), and the next submit starts a fresh pool.
    """

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"processes must be 1 or more, not {processes}")
        self._processes = processes
        self._lock = threading.Lock()
        self._pool = self._new_pool()
        self._replaced = 0

    def _new_pool(self) -> ProcessPoolExecutor:
        # "spawn": forking a process that runs grpc and threads is unsafe; a spawned
        # child imports only what drawing needs.
        return ProcessPoolExecutor(
            self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_drawing_process,
        )

    @property
    def replaced(self) -> int:
        """How many times a broken pool was replaced."""
        return self._replaced

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        with self._lock:
            try:
                return self._pool.submit(fn, *args, **kwargs)
            except BrokenProcessPool:
                log.warning("drawing_process_died", processes=self._processes)
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
                self._replaced += 1
                return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
