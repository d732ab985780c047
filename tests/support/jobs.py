"""Waiting for a worker's job to end, as a browser's page does: through its snapshots."""

from __future__ import annotations

import time

from mascot.generation.worker import Job, JobSnapshot, JobState


def wait_final(job: Job, timeout: float = 10.0) -> JobSnapshot:
    """The job's snapshot once it has ended (or, after `timeout`, as it stands)."""
    deadline = time.monotonic() + timeout
    snapshot = job.snapshot
    while snapshot.state in (JobState.QUEUED, JobState.RUNNING) and time.monotonic() < deadline:
        snapshot = job.wait_for_change(snapshot.version, timeout=0.2)
    return snapshot
