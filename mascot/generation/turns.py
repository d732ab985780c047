"""Whose turn it is on the loaded models: generations one at a time, and background work (loading compiled code)
only in the gaps between them, one stage per turn."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

# How long background work that found the models held by something other than a generation (parking the image
# encoder, switching an adapter) sleeps before it looks again: those hold them for moments.
RECHECK_S = 0.01


class ModelsTurn:
    """One lock on the models, taken three ways.

    - `for_run`: a generation. It counts as wanting the models from before it waits until it is done, so background
      work never starts a stage while one is queued for them.
    - `between_runs`: one stage of background work, started only when no generation runs or waits; a generation that
      comes meanwhile waits for the stage to end, and is told so first (a stage can take seconds).
    - `alone`: a short change to the models that must not happen during a run (moving a model, choosing an adapter).
    """

    def __init__(self) -> None:
        # The pipelines keep per-call state (timesteps, guidance scale): one user of the models at a time.
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._runs_wanted = 0  # generations running or waiting for the lock
        self._loading = False  # a turn of `between_runs` holds the lock

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        """The models to the caller alone, waiting for whoever has them."""
        with self._lock:
            yield

    @contextlib.contextmanager
    def for_run(self, told_to_wait: Callable[[], None]) -> Iterator[None]:
        """A generation's turn. When a stage of background work holds the models, `told_to_wait` is called once
        before waiting for it, so the people of the run can be told why they wait."""
        with self.wanting_a_run():
            if not self._lock.acquire(blocking=False):
                if self._loading:
                    told_to_wait()
                self._lock.acquire()
            try:
                yield
            finally:
                self._lock.release()

    @contextlib.contextmanager
    def wanting_a_run(self) -> Iterator[None]:
        """Count a generation as wanting the models while inside: no stage of background work starts meanwhile."""
        with self._idle:
            self._runs_wanted += 1
        try:
            yield
        finally:
            with self._idle:
                self._runs_wanted -= 1
                self._idle.notify_all()

    @contextlib.contextmanager
    def between_runs(self) -> Iterator[None]:
        """A turn for one stage of background work: it starts only when no generation runs or waits."""
        while True:
            with self._idle:
                self._idle.wait_for(lambda: self._runs_wanted == 0)
                if self._lock.acquire(blocking=False):
                    # Marked while no generation can count itself in: one that comes next sees the mark.
                    self._loading = True
                    break
            time.sleep(RECHECK_S)  # held by `alone`: soon free
        try:
            yield
        finally:
            self._loading = False
            self._lock.release()
