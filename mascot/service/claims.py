"""The database claims of this replica's jobs: kept alive while they run, freed when they end, even when the
database could not be written at that moment, and freed at once when a killed run of this replica starts again.

A browser's one-job-in-flight claim lives in the database (it must hold across replicas). If the process holding it
dies mid-job, nothing releases it: its next start frees the claims tagged with its replica id (quota.replica_tag),
and a replica that never comes back frees its claims after quota.JOB_STALE_AFTER. The living process refreshes its
own claims more often than that, so a long queue never looks dead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from mascot.generation.worker import Job
from mascot.store.quota import CLAIM_REFRESH_EVERY
from mascot.store.store import MascotStore

log = logging.getLogger(__name__)

# How soon a release that failed (disk full, read-only or locked database) is tried again: the browser waits on it.
RETRY_RELEASE_EVERY_S = 1.0


class CutOffJobs:
    """The browsers (owner hashes) whose mascot was queued or being made when a killed run of this replica died: its
    start freed their claims, and each is told once, on its next page load, that it was not made. Without this the
    page, which Gradio reloads when the server is back, would show nothing of it. Kept in memory: a restart's list
    only, at most one entry per job the dead run held."""

    def __init__(self) -> None:
        self._owners: set[str] = set()
        self._lock = threading.Lock()

    def add(self, owner_hashes: Iterable[str]) -> None:
        with self._lock:
            self._owners.update(owner_hashes)

    def __len__(self) -> int:
        with self._lock:
            return len(self._owners)

    def take(self, owner_hash: str) -> bool:
        """True once for a browser whose job was cut off (and forgets it), else False."""
        with self._lock:
            if owner_hash not in self._owners:
                return False
            self._owners.discard(owner_hash)
            return True


class ClaimKeeper:
    """A daemon thread that refreshes the running claims every CLAIM_REFRESH_EVERY and retries failed releases every
    RETRY_RELEASE_EVERY_S; `release` is the worker's `on_ended`."""

    def __init__(
        self,
        store: MascotStore,
        clock: Callable[[], datetime],
        claim_ids: Callable[[], Sequence[str]] = list,
        cut_off: CutOffJobs | None = None,
    ) -> None:
        self._store = store
        self.cut_off = CutOffJobs() if cut_off is None else cut_off  # filled at start, told by the page
        self._clock = clock
        self.claim_ids = claim_ids  # the claims of queued and running jobs (the worker's claim_ids)
        self._unreleased: dict[str, str] = {}  # claim id -> owner hash, for releases that failed
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claim-keeper", daemon=True)

    def start(self) -> ClaimKeeper:
        """Free the claims a killed run of this replica left (their jobs died with it), then keep them."""
        freed = self._store.release_replica_claims()
        if freed:
            log.info("freed %d job claims left by this replica's previous run", len(freed))
            self.cut_off.add(freed)
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop keeping, and free what this replica still holds (the end of a shutdown); returns how many."""
        self._stopped.set()
        with self._lock:
            self._unreleased.clear()
        return len(self._store.release_replica_claims())

    def release(self, job: Job) -> None:
        """Free a job's claim when it ends; if the database cannot write now, keep trying until it can."""
        if job.submission.claim_id is None:
            return
        if not self._try_release(job.submission.owner_hash, job.submission.claim_id):
            with self._lock:
                self._unreleased[job.submission.claim_id] = job.submission.owner_hash

    @property
    def unreleased(self) -> int:
        """How many ended jobs' claims wait for the database to accept their release."""
        with self._lock:
            return len(self._unreleased)

    def retry_releases(self) -> int:
        """Try the failed releases again; returns how many are still waiting."""
        with self._lock:
            waiting = dict(self._unreleased)
        for claim_id, owner_hash in waiting.items():
            if self._try_release(owner_hash, claim_id):
                with self._lock:
                    self._unreleased.pop(claim_id, None)
        return self.unreleased

    def refresh_once(self, now: datetime | None = None) -> int:
        """Refresh the claims of every job the worker holds; returns how many the database still had."""
        return self._store.refresh_job_claims(self.claim_ids(), now or self._clock())

    def _try_release(self, owner_hash: str, claim_id: str) -> bool:
        try:
            self._store.release_job(owner_hash, claim_id)
        except Exception:  # the store logged why (faults.writes); the keeper's thread tries again
            return False
        return True

    def _run(self) -> None:
        next_refresh = 0.0
        waited = 0.0
        while not self._stopped.wait(RETRY_RELEASE_EVERY_S):
            waited += RETRY_RELEASE_EVERY_S
            self.retry_releases()
            if waited < next_refresh:
                continue
            next_refresh = waited + CLAIM_REFRESH_EVERY.total_seconds()
            try:
                self.refresh_once()
            except Exception:  # a database hiccup must not end the keeper: the next round tries again
                log.exception("refreshing job claims failed")
