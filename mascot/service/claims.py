"""Keeps the database claims of queued and running jobs alive, so that only a stopped process's claims go stale.

A browser's one-job-in-flight claim lives in the database (it must hold across replicas). If the process holding it
dies mid-job, nothing releases it; the claim then frees itself after quota.JOB_STALE_AFTER. The living process
refreshes its own claims more often than that, so a long queue never looks dead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from mascot.generation.worker import GenerationWorker
from mascot.store.quota import CLAIM_REFRESH_EVERY
from mascot.store.store import MascotStore

log = logging.getLogger(__name__)


class ClaimKeeper:
    """A daemon thread that refreshes the worker's claims every CLAIM_REFRESH_EVERY."""

    def __init__(self, worker: GenerationWorker, store: MascotStore, clock: Callable[[], datetime]) -> None:
        self._worker = worker
        self._store = store
        self._clock = clock
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claim-keeper", daemon=True)

    def start(self) -> ClaimKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def refresh_once(self, now: datetime | None = None) -> int:
        """Refresh the claims of every job the worker holds; returns how many the database still had."""
        return self._store.refresh_job_claims(self._worker.claim_ids(), now or self._clock())

    def _run(self) -> None:
        while not self._stopped.wait(CLAIM_REFRESH_EVERY.total_seconds()):
            try:
                self.refresh_once()
            except Exception:  # a database hiccup must not end the keeper: the next round tries again
                log.exception("refreshing job claims failed")
