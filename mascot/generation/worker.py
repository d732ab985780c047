"""The GPU's one owner: loads the model in the background, runs queued jobs, and always stores results.

Gradio closes a streaming handler when its browser goes away, so no generation may live inside a handler: a handler
submits a `Job` here and relays what it sees. The worker finishes every job it starts and hands the images to
`on_finished` (the store), whether or not anyone is still watching.

Queued jobs that ask for the same size, steps, guidance and LoRA share one run of the decoder (`batch_key`), up to
`max_batch_images` images: on a GPU four images at once cost far less than four runs one after the other, so a busy
queue drains faster (on a CPU they cost more, so there each job runs alone unless told otherwise). Only jobs
already waiting are combined; nobody waits for a batch to fill.
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from mascot.generation.generator import (
    BatchItem,
    CompileProgress,
    Compiling,
    GeneratedImages,
    GenerationCancelled,
    Generator,
    LogoOutOfMemory,
    ModelInfo,
    StepUpdate,
    batch_key,
    ran_out_of_gpu_memory,
)
from mascot.generation.memory_lessons import MemoryLessons
from mascot.generation.saver import SAVE_THREADS, Saver
from mascot.prompt.pictures import PictureRefused
from mascot.prompt.request import GenerationRequest, based_on_mascot

log = logging.getLogger(__name__)
# ZeroGPU: how a request handler runs a job's run itself (mascot.generation.zero_gpu.ZeroGpuRunner).
RunBatch = Callable[[Generator, Sequence[BatchItem]], list[GeneratedImages | None]]
TURN_POLL_S = 1.0  # how often a handler waiting for its turn looks again (it is woken at once on most changes)

# Images one shared run may make on a GPU by default: eight people queued share one run (a UNet step of 8 images
# costs about twice one image's; MoVQ decodes one at a time when memory is tight, so the peak stays bounded).
GPU_BATCH_IMAGES = 8


class ModelState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


# What people are told when the model failed to load (the page's banner, a refused Generate, /healthz).
MODEL_FAILED = "No mascots can be made until it is fixed; the reason is in the app's log."


@dataclass(frozen=True)
class ModelStatus:
    """What the banner says: the state, a sentence for people, and the loaded model once there is one."""

    state: ModelState
    message: str
    info: ModelInfo | None = None


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


# What a queued job's browser reads when the server shuts down before the job ran.
SHUTDOWN_MESSAGE = (
    "The server is restarting, so your mascot was not made and nothing counts against your quota. "
    "Please try again in a minute."
)
# What the running job's browser reads when a shutdown had to stop its run before the end.
STOPPED_MESSAGE = (
    "The server is restarting, so your mascot was stopped before it was finished and nothing counts against your "
    "quota. Please try again in a minute."
)
CANCEL_GRACE_S = 10.0  # how long a cancelled run may take to reach its next step when a shutdown cancels it
NOT_SAVED = "Your mascot was made but could not be saved."
# A finished job whose save meets a fault that passes (a database restarting or locked, a disk being freed) is saved
# again, waiting longer each time, for up to this long: what the person made is not thrown away for a brief outage.
SAVE_RETRY_S = 300.0
SAVE_PAUSES_S = (1.0, 2.0, 5.0, 10.0)  # between tries; the last one from then on
SAVING = "saving"  # the stage of a job whose save waits for the store to answer again
REMAKING = "remaking"  # the stage of a job whose shared run ran out of GPU memory, until its smaller run starts


class SubmitRefused(Exception):
    """A job could not be queued; the message is a sentence for the person who asked."""


class SavedImages(Protocol):
    """What `on_finished` returns and a finished job's snapshot carries: where its images were saved (the store's
    SavedGeneration; a Protocol, so that the GPU's side never imports the store)."""

    @property
    def image_paths(self) -> Sequence[Path]: ...

    @property
    def public_ids(self) -> Sequence[str]: ...  # each image's share id, in the same order


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent view of a job at one moment, for a handler to show."""

    version: int
    state: JobState
    jobs_ahead: int
    wait_seconds: float | None = None  # a guess at the time until it starts, from recent jobs; None: no guess yet
    stage: str = ""
    step: int = 0
    total: int = 0
    preview: Image.Image | None = None
    outcome: SavedImages | None = None  # set when the job is DONE
    generated: GeneratedImages | None = None
    error: str = ""


@dataclass(frozen=True)
class Submission:
    """What a browser asks the worker for: the request, who asks, and what the store and the caps know them by."""

    request: GenerationRequest
    owner_hash: str
    claim_id: str | None = None  # the store's quota claim the job holds, freed when it ends
    # The key of the network it came from (web.clients.ClientNetwork.key): new cookies are free, networks are not.
    network: str = ""
    address_hash: str | None = None  # its network's quota in the store (clients.AddressKeys); None: none


@dataclass
class RunTimer:
    """When a run's work began, for the wait a queued job is told: a run that first waited for a stage of loading
    compiled code (its "waiting" update) starts at its next update, so that one stage's wait, which the next runs will
    not have, does not lengthen the guesses told after it."""

    started: float
    waiting: bool = False

    def saw(self, update: StepUpdate, now: Callable[[], float]) -> None:
        if update.stage == "waiting":
            self.waiting = True
        elif self.waiting:
            self.waiting, self.started = False, now()


class Job:
    """One request of one browser, from the queue to the store. Thread-safe; handlers only read it."""

    def __init__(self, submission: Submission) -> None:
        self.id = uuid.uuid4().hex
        self.submission = submission
        self.cancel_requested = threading.Event()
        # Set by the handler relaying the job once it handed on the job's end (or its browser left): a shutdown
        # waits for it, so that nobody is left without an answer.
        self.answered = threading.Event()
        self._changed = threading.Condition()
        self._snapshot = JobSnapshot(version=0, state=JobState.QUEUED, jobs_ahead=0)

    @property
    def snapshot(self) -> JobSnapshot:
        with self._changed:
            return self._snapshot

    def cancel(self) -> None:
        """Ask the job to stop: a queued job never starts, a running one stops at its next step."""
        self.cancel_requested.set()

    def wait_for_change(self, seen_version: int, timeout: float) -> JobSnapshot:
        """Block until the job moves past `seen_version` (or `timeout` seconds pass) and return its snapshot."""
        with self._changed:
            self._changed.wait_for(lambda: self._snapshot.version > seen_version, timeout=timeout)
            return self._snapshot

    def update(self, **changes: Any) -> None:
        with self._changed:
            self._snapshot = replace(self._snapshot, version=self._snapshot.version + 1, **changes)
            self._changed.notify_all()


LoadGenerator = Callable[[Callable[[str], None]], Generator]
OnFinished = Callable[[Job, GeneratedImages, ModelInfo], SavedImages]
OnEnded = Callable[[Job], object]  # what it returns is not used
# An exception of `on_finished` that may pass (the store's database or disk): its sentence for people; None for a bug.
PassingFault = Callable[[Exception], str | None]


class GenerationWorker:
    """Owns the generator: one thread loads it, then runs jobs in submission order, each together with the queued
    jobs that can share its run."""

    def __init__(
        self,
        load_generator: LoadGenerator,
        on_finished: OnFinished,
        *,
        on_ended: OnEnded | None = None,
        prepare: Callable[[GenerationRequest], GenerationRequest] | None = None,
        load_logo: Callable[[str, str], Image.Image] | None = None,
        max_queued: int = 64,
        max_per_client: int = 0,
        max_batch_images: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        save_in_background: bool = False,
        save_threads: int = SAVE_THREADS,
        run_in_handlers: RunBatch | None = None,
        passing_fault: PassingFault | None = None,
        save_retry_s: float = SAVE_RETRY_S,
    ) -> None:
        self._clock = clock  # times runs, for the wait a queued job is told; dates the memory lessons
        self._seconds_per_job: float | None = None  # recent runs' seconds per job served (moving average)
        self._max_batch_images = max_batch_images  # images one shared run may make; None: by device (batch_limit)
        self._memory_lessons = MemoryLessons(clock)  # fewer images per shared run at sizes whose runs ran out of memory
        self._max_per_client = max_per_client  # jobs one network key may have waiting or running; 0: no cap
        # The image behind request.logo for the job's owner: an uploaded logo, or a mascot it may see (checked now).
        self._load_logo = load_logo
        self._prepare = prepare  # the request as the model sees it (presets applied); the store keeps the submitted one
        self._load_generator = load_generator
        self._on_finished = on_finished
        self._on_ended = on_ended  # every job, however it ends (done, failed, cancelled): e.g. free its quota claim
        self._passing_fault = passing_fault  # on_finished's faults worth saving again for (and their sentence)
        self._save_retry_s = save_retry_s
        self._max_queued = max_queued
        self._generator: Generator | None = None
        self._status = ModelStatus(ModelState.LOADING, "Starting up…")
        self._pending: collections.deque[Job] = collections.deque()
        self._active: dict[str, Job] = {}  # owner_hash -> queued or running job
        self._lock = threading.Condition()
        # Set by stop(), under the lock with the queue's last look: no job is admitted after it, and a save waiting to
        # try again tries once more at once.
        self._stopping = threading.Event()
        self._ended_while_stopping: list[Job] = []  # whose answers a shutdown waits for (wait_until_answered)
        self._thread = threading.Thread(target=self._run, name="generation-worker", daemon=True)
        # With a saver, on_finished (PNG, thumbnail, store) runs on its threads while the GPU starts the next run; the
        # jobs of one shared run are stored side by side, so its last person does not wait for the others' saves.
        self._saver = Saver(threads=save_threads) if save_in_background else None
        self._saving: set[str] = set()  # ids of jobs handed to the saver: they stay active until stored
        self._remaking: set[Job] = set()  # jobs of a shared run that ran out of memory, waiting for a smaller run
        # ZeroGPU: the GPU exists only inside a request handler's @spaces.GPU call, so each handler runs its own job
        # (run_in_handler), one at a time in queue order, alone; the worker's thread only loads the model.
        self._run_in_handlers = run_in_handlers
        self._handler_running = False

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> GenerationWorker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0, *, end_compiling: bool = False) -> bool:
        """Drain, as on SIGTERM: refuse new jobs, end the loaded model's compiling with `end_compiling` (a server's
        shutdown; left alone, as the model may outlive this worker, as in the benchmark), end the queued jobs unmade
        (SHUTDOWN_MESSAGE; `on_ended` frees their claims, and nothing was charged), and let the running run finish
        and be saved within `timeout` seconds; past that it is cancelled at its next step. True when the running run
        (if any) finished in time."""
        with self._lock:
            self._stopping.set()
            # Jobs waiting for a smaller run after their shared run ran out of memory are as unmade as queued ones.
            queued = [*self._pending, *self._remaking]
            self._pending.clear()
            self._remaking.clear()
            self._lock.notify_all()
        if end_compiling:  # admitting nothing first: ending the compile processes may take seconds
            self._end_compiling()
        for job in queued:  # outside the lock: on_ended writes to the database
            self._end(job, answer_first=True, state=JobState.CANCELLED, error=SHUTDOWN_MESSAGE)
        finished = self._finish_running(timeout)
        if self._saver is not None:
            self._saver.close(max(timeout, CANCEL_GRACE_S))  # every finished job is still stored
        return finished

    def _end_compiling(self) -> None:
        """No compile process outlives the server (each holds a copy of the model, on the GPU), and no stage of
        loading compiled code starts during the drain, beside the run being finished."""
        generator = self._generator
        if not isinstance(generator, Compiling):
            return
        try:
            # Without waiting for the warm-up thread: a stage that waits for the running run would hold the drain up
            # to the join's limit; stopped, it starts nothing once that run ends (a daemon, it ends with the process).
            generator.stop_compiling(timeout=0)
        except Exception:  # the drain goes on: the running run's people are still answered
            log.exception("stopping the compiling failed")

    def _finish_running(self, timeout: float) -> bool:
        """Let the running run end within `timeout` seconds, else cancel it; True when it ended in time."""
        if self._run_in_handlers is not None:
            return self._finish_handler_run(timeout)
        with self._lock:
            idle = not self._active  # e.g. the model still loads: nothing to finish, and no load to wait for
        if idle or not self._thread.is_alive():
            return True
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        with self._lock:
            running = list(self._active.values())
        log.warning("the running jobs did not finish within %.0f s of the shutdown: cancelling them", timeout)
        for job in running:
            job.cancel()
        self._thread.join(CANCEL_GRACE_S)
        return False

    def _finish_handler_run(self, timeout: float) -> bool:
        """ZeroGPU: let the run a handler holds end within `timeout` seconds, else cancel it at its next step (on
        ZeroGPU hardware a run cannot be reached once it holds the GPU: its @spaces.GPU duration bounds it)."""
        with self._lock:
            if self._lock.wait_for(lambda: not self._handler_running, timeout):
                return True
            running = list(self._active.values())
        log.warning("the running job did not finish within %.0f s of the shutdown: cancelling it", timeout)
        for job in running:
            job.cancel()
        with self._lock:
            self._lock.wait_for(lambda: not self._handler_running, CANCEL_GRACE_S)
        return False

    def wait_until_answered(self, timeout: float) -> bool:
        """After `stop`: wait (at most `timeout` seconds in all) until the handlers relaying the jobs that ended
        during the shutdown handed their answers on; True when all did."""
        deadline = time.monotonic() + timeout
        with self._lock:
            jobs = list(self._ended_while_stopping)
        return all(job.answered.wait(max(0.0, deadline - time.monotonic())) for job in jobs)

    def wait_until_loaded(self, timeout: float) -> ModelStatus:
        """Block until the model is ready or failed (tests and benchmarks)."""
        with self._lock:
            self._lock.wait_for(lambda: self._status.state is not ModelState.LOADING, timeout=timeout)
            return self._status

    @property
    def is_stopping(self) -> bool:
        """True once a shutdown began: no new job is admitted."""
        with self._lock:
            return self._stopping.is_set()

    @property
    def status(self) -> ModelStatus:
        with self._lock:
            return self._status

    @property
    def compile_progress(self) -> CompileProgress | None:
        """How far the loaded model's compiled code is, per size bucket; None before it loads or when it compiles
        nothing."""
        generator = self._generator
        return generator.compile_progress() if isinstance(generator, Compiling) else None

    # ---- the queue ---------------------------------------------------------------------------------------------
    def submit(self, submission: Submission) -> Job:
        """Queue a job; refused with a sentence while the model loads, when full, or when this browser has one."""
        with self._lock:
            self.check_can_submit(submission.owner_hash, submission.network)
            job = Job(submission)
            jobs_ahead = len(self._pending) + self._running_count()
            job.update(jobs_ahead=jobs_ahead, wait_seconds=self._wait_for(jobs_ahead))
            self._pending.append(job)
            self._active[submission.owner_hash] = job
            self._lock.notify_all()
            return job

    def check_can_submit(self, owner_hash: str, network: str = "") -> None:
        """Raise SubmitRefused if a new job from this browser (from the network with this key) would be refused now.
        The caller works out the key (web.clients.ClientNetwork); jobs with the same key share the cap."""
        with self._lock:
            if self._stopping.is_set():
                raise SubmitRefused("The server is shutting down; try again in a minute.")
            if self._status.state is ModelState.LOADING:
                raise SubmitRefused(f"The model is still loading ({self._status.message}). Try again in a moment.")
            if self._status.state is ModelState.FAILED:
                raise SubmitRefused(f"The model could not be loaded. {self._status.message}")
            if owner_hash in self._active:
                raise SubmitRefused("You already have a mascot in the works: wait for it to finish or cancel it.")
            if len(self._pending) >= self._max_queued:
                raise SubmitRefused("The queue is full right now. Please try again in a minute.")
            if network and self._max_per_client and self._jobs_from(network) >= self._max_per_client:
                raise SubmitRefused(
                    "Several mascots from your network are already waiting. Try again when one of them is done."
                )

    def _jobs_from(self, network: str) -> int:
        return sum(1 for job in self._active.values() if job.submission.network == network)

    def active_job(self, owner_hash: str) -> Job | None:
        with self._lock:
            return self._active.get(owner_hash)

    def cancel_for(self, owner_hash: str) -> bool:
        """Cancel this browser's queued or running job; False when it has none."""
        with self._lock:
            job = self._active.get(owner_hash)
            if job is None:
                return False
            job.cancel()
            # Never started, or waiting for a smaller run after its shared run ran out of memory: dropped now, so the
            # browser may submit again at once.
            unstarted = job in self._pending or job in self._remaking
            if unstarted:
                if job in self._pending:
                    self._pending.remove(job)
                self._remaking.discard(job)
                self._active.pop(owner_hash, None)
                self._announce_positions()
                self._lock.notify_all()  # ZeroGPU: the handler next in line need not wait for its next look
        if unstarted:
            self._end(job, state=JobState.CANCELLED)  # outside the lock: on_ended writes to the database
        return True

    def claim_ids(self) -> list[str]:
        """The store's claims held by queued and running jobs, to keep alive."""
        with self._lock:
            return [job.submission.claim_id for job in self._active.values() if job.submission.claim_id is not None]

    @property
    def queue_length(self) -> int:
        with self._lock:
            return len(self._pending) + self._running_count()

    def _running_count(self) -> int:
        """Jobs in a run now; not those whose images are being saved (the GPU is done with them, and the next run
        has begun: counted, the queue would read a whole run too long until that run ends)."""
        return sum(
            1 for job in self._active.values() if job.snapshot.state is JobState.RUNNING and job.id not in self._saving
        )

    # ---- the worker thread -------------------------------------------------------------------------------------
    def _run(self) -> None:
        if not self._load() or self._run_in_handlers is not None:
            return
        while True:
            jobs = self._next_batch()
            if not jobs:
                return
            try:
                self._run_batch(jobs)
            finally:
                with self._lock:
                    for job in jobs:  # normally each has ended already; never leave a browser locked out
                        if self._active.get(job.submission.owner_hash) is job and job.id not in self._saving:
                            del self._active[job.submission.owner_hash]
                    self._announce_positions()

    @property
    def runs_in_handlers(self) -> bool:
        """ZeroGPU: the handler that submitted a job must run it (run_in_handler)."""
        return self._run_in_handlers is not None

    def run_in_handler(self, job: Job) -> None:
        """ZeroGPU: run `job` in the calling request handler when its turn comes (queue order, one at a time, no
        shared runs), through the @spaces.GPU runner; returns once it ended (stored, cancelled or failed). A job
        cancelled or ended by a shutdown while it waited returns at once."""
        assert self._run_in_handlers is not None, "run_in_handler is for the ZeroGPU mode"
        with self._lock:
            while job in self._pending and not self._stopping.is_set():
                if self._pending[0] is job and not self._handler_running:
                    break
                self._lock.wait(TURN_POLL_S)
            if job not in self._pending or self._stopping.is_set():
                return
            self._pending.popleft()
            self._handler_running = True
            job.update(state=JobState.RUNNING, jobs_ahead=0)
            self._announce_positions()
        try:
            self._run_batch([job], self._run_in_handlers)
        finally:
            with self._lock:
                self._handler_running = False
                if self._active.get(job.submission.owner_hash) is job and job.id not in self._saving:
                    del self._active[job.submission.owner_hash]
                self._announce_positions()
                self._lock.notify_all()

    def _load(self) -> bool:
        def on_status(message: str) -> None:
            with self._lock:
                self._status = ModelStatus(ModelState.LOADING, message)

        try:
            generator = self._load_generator(on_status)
        except Exception:  # the page must keep serving and say why
            log.exception("loading the model failed")
            with self._lock:
                # The error names the server's files and folders: it goes to the log, which the operator reads.
                self._status = ModelStatus(ModelState.FAILED, MODEL_FAILED)
                self._lock.notify_all()
            return False
        with self._lock:
            self._generator = generator
            self._status = ModelStatus(ModelState.READY, "Ready", generator.info)
            self._lock.notify_all()
        return True

    def _next_batch(self) -> list[Job]:
        """Wait for work and take the next batch (empty when stopping)."""
        with self._lock:
            while True:
                if self._stopping.is_set():
                    return []
                if self._pending:
                    jobs = self._take_batch()
                    for job in jobs:
                        job.update(state=JobState.RUNNING, jobs_ahead=0)
                    self._announce_positions()
                    return jobs
                self._lock.wait()

    def _take_batch(self) -> list[Job]:
        """The oldest job, plus the queued jobs after it that can share its run while the images fit."""
        return take_a_run(self._pending, self._shared_run_limit(self._pending[0].submission.request))

    def _shared_run_limit(self, request: GenerationRequest) -> int:
        """The most images a shared run of `request`'s size may make now: the batch limit, or less while a run of
        this size or a smaller one lately ran out of GPU memory."""
        return self._memory_lessons.limit(request.width * request.height, self._batch_limit())

    def _batch_limit(self) -> int:
        """The most images one shared run may make: as configured, else GPU_BATCH_IMAGES on a GPU and 1 elsewhere."""
        if self._max_batch_images is not None:
            return max(1, self._max_batch_images)
        device = self._generator.info.device if self._generator is not None else "cpu"
        return GPU_BATCH_IMAGES if device.startswith("cuda") else 1

    def _announce_positions(self) -> None:
        """Tell each queued job how many jobs run before it (running ones count)."""
        running = self._running_count()
        for position, job in enumerate(self._pending):
            ahead, wait = position + running, self._wait_for(position + running)
            if (job.snapshot.jobs_ahead, job.snapshot.wait_seconds) != (ahead, wait):
                job.update(jobs_ahead=ahead, wait_seconds=wait)

    def _wait_for(self, jobs_ahead: int) -> float | None:
        """A guess at how long `jobs_ahead` jobs take, from how fast recent jobs were served (shared runs count)."""
        if self._seconds_per_job is None:
            return None
        return jobs_ahead * self._seconds_per_job

    def _note_run(self, seconds: float, jobs: int) -> None:
        """Fold a finished run into the moving average of seconds per job."""
        per_job = seconds / max(1, jobs)
        with self._lock:
            previous = self._seconds_per_job
            self._seconds_per_job = per_job if previous is None else 0.7 * previous + 0.3 * per_job

    def _run_batch(self, jobs: Sequence[Job], run: RunBatch | None = None) -> None:
        """Run `jobs` in one shared run (through `run`, for ZeroGPU) and end each one: stored, cancelled or failed."""
        assert self._generator is not None
        generator = self._generator
        items: list[BatchItem] = []
        started: list[Job] = []
        timer = RunTimer(started=0.0)  # started once the items are ready
        for job in jobs:
            try:
                items.append(self._batch_item(job, timer))
            except Exception as error:  # e.g. its logo file vanished: only this job fails
                log.exception("preparing job %s failed", job.id)
                self._end(job, state=JobState.FAILED, error=describe_failure(error))
                continue
            started.append(job)
        if not started:
            return
        if len(started) > 1:
            log.info("jobs %s share one run", ", ".join(job.id for job in started))
        timer.started = self._clock()
        results: list[GeneratedImages | None] | None = None
        try:
            results = run(generator, items) if run is not None else generator.generate_batch(items)
        except Exception as error:  # the run itself failed (out of memory, say): it failed for every job in it
            out_of_memory = ran_out_of_gpu_memory(error)
            if out_of_memory and not isinstance(error, LogoOutOfMemory):  # a logo's encoder needs its size in any run
                self._learn_from_running_out(started)
            if len(started) == 1 or not out_of_memory:
                log.exception("the run of jobs %s failed", ", ".join(job.id for job in started))
                for job in started:
                    self._end(job, state=JobState.FAILED, error=describe_failure(error, job.submission.request))
                return
            log.warning(
                "the shared run of jobs %s ran out of GPU memory: making them again in smaller runs",
                ", ".join(job.id for job in started),
            )
        if results is None:  # made again outside the `except`, whose traceback would keep the run's tensors alive
            self._remake_in_smaller_runs(started, run)
            return
        # A run whose every job was cancelled stopped early: it says nothing of how long runs take. One with some jobs
        # cancelled ran about its whole length (a job cancelled once the decoder began keeps its rows in the batch;
        # one cancelled in the prior leaves it), so it counts all its jobs.
        if any(result is not None for result in results):
            self._note_run(self._clock() - timer.started, len(started))
        for job, result in zip(started, results, strict=True):
            if result is None:
                self._end_cancelled(job)
            else:
                self._store(job, result, generator.info)

    def _remake_in_smaller_runs(self, jobs: Sequence[Job], run: RunBatch | None) -> None:
        """Make the jobs of a shared run that ran out of GPU memory again, in runs of at most half its images.

        Sharing the run was the server's choice, not the people's: a person's run fails with the out-of-memory
        sentence only if their own request does not fit alone. Halved here, not only by the lesson (which a later
        change might forget at once): each smaller run is smaller than the one that ran out, so the halving ends.
        A job waiting here is ended at once when its person cancels it (cancel_for), like a queued one."""
        at_most = max(1, images_of(jobs) // 2)
        with self._lock:
            for job in jobs:
                job.update(stage=REMAKING, step=0, total=0, preview=None)
            self._remaking.update(jobs)
        while True:
            smaller_run: list[Job] = []
            with self._lock:
                # Still waiting, in queue order: runs taken leave the set, and cancel_for or stop took the others out.
                waiting = [job for job in jobs if job in self._remaking]
                # Cancelled otherwise (a shutdown past its wait cancels every job): no new run either; nor, once a
                # shutdown began, for any (stop ends those it finds here; these came here after it began).
                cancelled = [job for job in waiting if job.cancel_requested.is_set()]
                waiting = [job for job in waiting if job not in cancelled]
                unmade, waiting = (waiting, []) if self._stopping.is_set() else ([], waiting)
                if waiting:
                    limit = min(at_most, self._shared_run_limit(waiting[0].submission.request))
                    smaller_run = take_a_run(waiting, limit)
                self._remaking.difference_update([*cancelled, *unmade, *smaller_run])
                self._announce_positions()  # the run just ended is no longer ahead of the queue
            for job in cancelled:
                self._end_cancelled(job)
            for job in unmade:
                self._end(job, answer_first=True, state=JobState.CANCELLED, error=SHUTDOWN_MESSAGE)
            if not smaller_run:
                return
            self._run_batch(smaller_run, run)

    def _learn_from_running_out(self, jobs: Sequence[Job]) -> None:
        """Runs of this size share fewer images for a while: the next shared runs need not run out first."""
        request, images = jobs[0].submission.request, images_of(jobs)
        limit = self._memory_lessons.ran_out(request.width * request.height, images, self._batch_limit())
        if limit is not None:
            log.warning(
                "a run of %d images of %dx%d ran out of GPU memory: runs of that size or larger share at most %s for"
                " ten minutes",
                images,
                request.width,
                request.height,
                "1 image" if limit == 1 else f"{limit} images",
            )

    def _end_cancelled(self, job: Job) -> None:
        log.info("job %s cancelled", job.id)
        # Cancelled by a shutdown, not by its person: they are told why, as the queued ones are.
        self._end(job, state=JobState.CANCELLED, error=STOPPED_MESSAGE if self._stopping.is_set() else "")

    def _batch_item(self, job: Job, timer: RunTimer) -> BatchItem:
        """The job as the model sees it (presets applied, its logo loaded), reporting its steps to the job (and to the
        run's `timer`)."""

        def on_step(update: StepUpdate) -> None:
            timer.saw(update, self._clock)
            if job.cancel_requested.is_set():
                raise GenerationCancelled
            changes: dict[str, Any] = {"stage": update.stage, "step": update.step, "total": update.total}
            if update.preview is not None:
                changes["preview"] = update.preview
            job.update(**changes)

        request = job.submission.request
        model_request = self._prepare(request) if self._prepare else request
        owner_hash = job.submission.owner_hash
        logo = self._load_logo(request.logo, owner_hash) if request.logo and self._load_logo else None
        return BatchItem(model_request, on_step, logo)

    def _store(self, job: Job, images: GeneratedImages, info: ModelInfo) -> None:
        """Store a finished job: on a saver thread when there are savers (beside the run's other jobs), else here."""
        if self._saver is None:
            self._save(job, images, info)
            return
        with self._lock:
            self._saving.add(job.id)
        self._saver.submit(lambda: self._save(job, images, info))

    def _save(self, job: Job, images: GeneratedImages, info: ModelInfo) -> None:
        """Hand a finished job's images to `on_finished`, then end the job with what it returned. A fault that may
        pass is tried again for up to `save_retry_s` seconds (or until a shutdown), the job saying so meanwhile."""
        deadline = time.monotonic() + self._save_retry_s  # the wall's clock: a stand-in clock may stand still
        for attempt in itertools.count():
            try:
                outcome = self._on_finished(job, images, info)
            except Exception as error:
                sentence = self._passing_fault(error) if self._passing_fault is not None else None
                if sentence is not None and time.monotonic() < deadline and not self._stopping.is_set():
                    log.warning("storing job %s failed (%s): trying again", job.id, sentence)
                    job.update(stage=SAVING)
                    self._stopping.wait(SAVE_PAUSES_S[min(attempt, len(SAVE_PAUSES_S) - 1)])
                    continue
                log.exception("storing job %s failed", job.id)
                self._end(job, state=JobState.FAILED, error=f"{NOT_SAVED} {sentence or 'Please try again.'}")
                return
            self._end(job, state=JobState.DONE, outcome=outcome, generated=images, preview=None)
            return

    def _end(self, job: Job, *, answer_first: bool = False, **changes: Any) -> None:
        """Tell `on_ended` that a job ended (its failure must not stop the worker), then, in one step, let its browser
        submit again (a job cancelled inside a shared run need not wait for the others) and put the job in its final
        state.

        `on_ended` first: the moment a person reads that their job ended, its claim is free (the app's `on_ended`), so
        asking again at once is not refused, and what they have left today counts the job's images once. Until then
        the job stays active (a page opened again still follows it), unless cancel_for took it out of the queue. A
        database that does not answer holds the answer as long as it holds the release (SQLite's busy timeout; the
        save before it waited as long). `answer_first`: the answer, then `on_ended` (a shutdown's unmade jobs, each
        told at once)."""
        if not answer_first:
            self._tell_ended(job)
        with self._lock:
            self._saving.discard(job.id)
            if self._active.get(job.submission.owner_hash) is job:
                del self._active[job.submission.owner_hash]
            if self._stopping.is_set():
                self._ended_while_stopping.append(job)
            job.update(**changes)
            # A job whose preparation failed before its run began is no longer ahead of anyone; after a run, _run
            # says so anyway.
            self._announce_positions()
        if answer_first:
            self._tell_ended(job)

    def _tell_ended(self, job: Job) -> None:
        if self._on_ended is None:
            return
        try:
            self._on_ended(job)
        except Exception:
            log.exception("on_ended failed for job %s", job.id)


def images_of(jobs: Sequence[Job]) -> int:
    """The images the jobs ask for, together."""
    return sum(job.submission.request.num_images_per_prompt for job in jobs)


def take_a_run(queue: MutableSequence[Job], limit: int) -> list[Job]:
    """Take the first job of `queue`, and the later ones that can share its run while their images fit `limit`.

    The first job always leads, so a job that fits no shared run waits for no more runs than the jobs ahead of it.
    Presets change only prompts, so the key of the request as submitted is the key of the request the model sees."""
    head = queue[0]
    del queue[0]
    first = head.submission.request
    jobs, images, key = [head], first.num_images_per_prompt, batch_key(first)
    for job in list(queue):
        count = job.submission.request.num_images_per_prompt
        if images + count <= limit and batch_key(job.submission.request) == key:
            queue.remove(job)
            jobs.append(job)
            images += count
    return jobs


def describe_failure(error: Exception, request: GenerationRequest | None = None) -> str:
    """A sentence for people about a failed generation of `request`; the traceback goes to the log."""
    if isinstance(error, PictureRefused):  # its picture cannot be used (gone, or no longer the browser's to use)
        return str(error)
    if isinstance(error, LogoOutOfMemory):  # the image encoder reads a variation's mascot as it reads a logo
        varied = request is not None and based_on_mascot(request.logo) is not None
        picture, without = (
            ("the mascot you are varying", "") if varied else ("your logo", ", or make your mascot without it")
        )
        return (
            f"There was not enough free GPU memory to read {picture} just now. Please try again in a moment{without}."
        )
    if ran_out_of_gpu_memory(error):
        return "The GPU ran out of memory. Try fewer images or a smaller size."
    # The CPU's allocator (torch's RuntimeError) or Python's own: another try of the same size would fail again.
    if isinstance(error, MemoryError) or "can't allocate memory" in str(error):
        return "The server ran out of memory. Try fewer images or a smaller size."
    return "Something went wrong while making your mascot. Please try again; the error was logged."
