"""A worker that stores in a test store, and waiting for its jobs to end as a browser's page does: by snapshots."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mascot.generation.generator import Generator
from mascot.generation.worker import GenerationWorker, Job, JobSnapshot, JobState, ModelState


def wait_until(job: Job, reached: Callable[[JobSnapshot], bool], timeout: float = 10.0) -> JobSnapshot:
    """The job's first snapshot that has `reached` (or, after `timeout`, the job as it stands: the caller's assertion
    then fails, rather than the test hanging)."""
    deadline = time.monotonic() + timeout
    snapshot = job.snapshot
    while not reached(snapshot) and time.monotonic() < deadline:
        snapshot = job.wait_for_change(snapshot.version, timeout=0.2)
    return snapshot


def wait_final(job: Job, timeout: float = 10.0) -> JobSnapshot:
    """The job's snapshot once it has ended (or, after `timeout`, as it stands)."""
    return wait_until(job, lambda snapshot: snapshot.state not in (JobState.QUEUED, JobState.RUNNING), timeout)


def finished(job: Job) -> JobState:
    """The state the job ended in (a generous wait: a busy machine is slow, a quick one returns at once)."""
    return wait_final(job, timeout=60.0).state


def storing_worker(store: Any, generator: Generator, *, now: Any, max_per_client: int, load_logo: Any = None) -> Any:
    """A started, ready worker around `generator` that saves each job into `store` at `now` and frees its claim, as
    the app wires it (app.create_app)."""
    worker = GenerationWorker(
        lambda on_status: generator,
        lambda job, images, model: store.save_generation(
            job.submission.owner_hash,
            job.submission.request,
            images,
            model,
            now=now,
            address_hash=job.submission.address_hash,
        ),
        on_ended=lambda job: store.release_job(job.submission.owner_hash, job.submission.claim_id),
        max_per_client=max_per_client,
        load_logo=load_logo,
    ).start()
    assert worker.wait_until_loaded(10).state is ModelState.READY
    return worker
