"""Waiting for a worker's job to end, as a browser's page does: through its snapshots."""

from __future__ import annotations

import time
from typing import Any

from mascot.generation.worker import Job, JobSnapshot, JobState


def wait_final(job: Job, timeout: float = 10.0) -> JobSnapshot:
    """The job's snapshot once it has ended (or, after `timeout`, as it stands)."""
    deadline = time.monotonic() + timeout
    snapshot = job.snapshot
    while snapshot.state in (JobState.QUEUED, JobState.RUNNING) and time.monotonic() < deadline:
        snapshot = job.wait_for_change(snapshot.version, timeout=0.2)
    return snapshot


def finished(job: Job) -> JobState:
    """The state the job ended in (a generous wait: a busy machine is slow, a quick one returns at once)."""
    return wait_final(job, timeout=60.0).state


def released(store: Any, owner_hash: str, now: Any) -> None:
    """Wait for the job's quota claim to be released: the worker frees it just after the job's last snapshot."""
    deadline = time.monotonic() + 60
    while store.quota(owner_hash, now=now).in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
