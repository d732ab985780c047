"""The savers: finished images are encoded and stored on these threads, so the GPU's worker never waits on disk."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SaveTask = Callable[[], None]

# Saves at once: one per job of a full shared run (8 images), at most one per core. A save spends part of its time in
# fsync and SQL, and its PNG outlasts its thumbnail, so one save at a time leaves cores idle while the run's later
# people wait (2 cores, eight 768² jobs through the real store: the last answered after about 510 ms with one saver,
# 300 ms with two; docs/performance.md, ninth round). The store's encoder pool takes the encodes in the order they
# come, so earlier jobs still tend to be stored first.
SAVE_THREADS = max(1, min(8, os.cpu_count() or 1))


class Saver:
    """Runs save tasks on `threads` threads of its own, taken in submission order; `close` runs every task still
    queued before it returns, so no finished job is dropped on a clean stop. Tasks may run side by side: each must be
    safe beside the others (the store is)."""

    def __init__(self, name: str = "image-saver", threads: int = SAVE_THREADS) -> None:
        if threads < 1:
            raise ValueError(f"A saver needs at least one thread (got {threads}).")
        self._tasks: queue.Queue[SaveTask | None] = queue.Queue()
        self._closing = threading.Lock()  # a task is queued before the stop marks, or run by its submitter
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{index}", daemon=True) for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, task: SaveTask) -> None:
        """Queue `task`; it must handle its own errors (a failure is logged and the next task runs). After `close`,
        the task runs here, on the caller's thread: a run that outlived the shutdown's wait still ends its jobs."""
        with self._closing:
            if not self._closed:
                self._tasks.put(task)
                return
        run_logged(task)

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued tasks, then stop the threads (waiting at most `timeout` seconds in all)."""
        with self._closing:
            self._closed = True
        for _ in self._threads:  # each thread takes one stop mark, after every task queued before it
            self._tasks.put(None)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            run_logged(task)


def run_logged(task: SaveTask) -> None:
    """Run `task`; its own failure is logged, and must not stop later saves."""
    try:
        task()
    except Exception:
        log.exception("a save task failed")
