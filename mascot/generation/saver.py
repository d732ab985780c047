"""A saver thread: finished images are encoded and stored here, in order, so the GPU's worker never waits on disk."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

SaveTask = Callable[[], None]


class Saver:
    """Runs save tasks one at a time in submission order on its own thread; `close` runs every task still queued
    before it returns, so no finished job is dropped on a clean stop."""

    def __init__(self, name: str = "image-saver") -> None:
        self._tasks: queue.Queue[SaveTask | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, task: SaveTask) -> None:
        """Queue `task`; it must handle its own errors (a failure is logged and the next task runs)."""
        self._tasks.put(task)

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued tasks, then stop the thread."""
        self._tasks.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            try:
                task()
            except Exception:  # a task's own failure must not stop later saves
                log.exception("a save task failed")
