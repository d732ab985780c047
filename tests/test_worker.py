"""The worker owns the generator: it loads it, runs jobs in order, reports progress, cancels, and always stores."""

import dataclasses
import itertools
import threading
import time

import pytest

from mascot.generation import worker as worker_module
from mascot.generation.generator import LogoOutOfMemory, StepUpdate
from mascot.generation.memory_lessons import LESSON_KEPT_S
from mascot.generation.worker import (
    MODEL_FAILED,
    GenerationWorker,
    Job,
    JobState,
    ModelState,
    Submission,
    SubmitRefused,
    describe_failure,
)
from mascot.prompt.request import GenerationRequest
from tests.support.fakes import FakeGenerator
from tests.support.jobs import wait_final, wait_until

REQUEST = GenerationRequest.from_user(prompt="an otter", width=256, height=256)


class Recorder:
    """Stands in for the store: remembers what the worker handed over."""

    def __init__(self) -> None:
        self.finished: list[tuple[str, int]] = []
        self.fail = False

    def __call__(self, job, images, model):
        if self.fail:
            raise OSError("disk full")
        self.finished.append((job.submission.owner_hash, len(images.images)))
        return {"saved": len(images.images)}


@pytest.fixture
def fake():
    return FakeGenerator()


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def worker(fake, recorder):
    worker = GenerationWorker(lambda on_status: fake, recorder, max_queued=3, max_batch_images=4).start()
    assert worker.wait_until_loaded(10).state is ModelState.READY
    yield worker
    fake.gate.set()
    worker.stop()


def test_generate_is_refused_while_the_model_loads(recorder):
    release = threading.Event()

    def slow_load(on_status):
        on_status("Downloading the decoder")
        release.wait(10)
        return FakeGenerator()

    worker = GenerationWorker(slow_load, recorder).start()
    try:
        time.sleep(0.1)
        assert worker.status.state is ModelState.LOADING
        assert "Downloading the decoder" in worker.status.message
        with pytest.raises(SubmitRefused, match="still loading"):
            worker.submit(Submission(REQUEST, "owner"))
        release.set()
        assert worker.wait_until_loaded(10).state is ModelState.READY
        assert wait_final(worker.submit(Submission(REQUEST, "owner"))).state is JobState.DONE
    finally:
        release.set()
        worker.stop()


def test_a_failed_load_is_reported_and_refuses_jobs_without_showing_why_to_people(recorder, caplog):
    def broken_load(on_status):
        raise RuntimeError("no weights in /models/kandinsky")

    worker = GenerationWorker(broken_load, recorder).start()
    status = worker.wait_until_loaded(10)
    # People are told it failed and where the reason is; the reason itself, with the server's paths, is logged.
    assert status.state is ModelState.FAILED and status.message == MODEL_FAILED
    with pytest.raises(SubmitRefused, match="could not be loaded") as refused:
        worker.submit(Submission(REQUEST, "owner"))
    assert "/models" not in str(refused.value) and "/models" not in status.message
    logged = [str(record.exc_info[1]) for record in caplog.records if record.exc_info]
    assert "no weights in /models/kandinsky" in logged
    worker.stop()


def test_a_job_runs_to_the_store_and_reports_steps_and_a_preview(worker, recorder, fake):
    fake.gate.clear()
    job = worker.submit(
        Submission(GenerationRequest.from_user(prompt="x", num_images_per_prompt=2, width=256, height=256), "a")
    )
    snapshot = wait_until(job, lambda snapshot: snapshot.step >= 1)
    assert (snapshot.state, snapshot.stage, snapshot.step, snapshot.total) == (JobState.RUNNING, "decoder", 1, 3)
    fake.gate.set()
    final = wait_final(job)
    assert final.state is JobState.DONE
    assert final.outcome == {"saved": 2}
    assert final.generated is not None and final.generated.seeds == [0, 1]
    assert recorder.finished == [("a", 2)]


def test_previews_reach_the_job_and_are_dropped_when_done(worker, fake):
    fake.gate.clear()
    job = worker.submit(Submission(REQUEST, "a"))
    snapshot = wait_until(job, lambda snapshot: snapshot.preview is not None)
    assert snapshot.preview.size == (8, 8) and snapshot.step == 1
    fake.gate.set()
    assert wait_final(job).preview is None


def test_jobs_wait_in_order_and_know_how_many_are_ahead(worker, fake):
    fake.gate.clear()
    first = worker.submit(Submission(REQUEST, "a"))
    assert fake.started.wait(5)
    second = worker.submit(Submission(REQUEST, "b"))
    third = worker.submit(Submission(REQUEST, "c"))
    assert second.snapshot.jobs_ahead == 1
    assert third.snapshot.jobs_ahead == 2
    assert worker.queue_length == 3
    fake.gate.set()
    assert [wait_final(job).state for job in (first, second, third)] == [JobState.DONE] * 3
    assert [request.prompt for request in fake.requests] == ["an otter"] * 3


def test_one_job_in_flight_per_browser(worker, fake):
    fake.gate.clear()
    worker.submit(Submission(REQUEST, "a"))
    with pytest.raises(SubmitRefused, match="already have a mascot"):
        worker.submit(Submission(REQUEST, "a"))
    worker.submit(Submission(REQUEST, "b"))  # another browser is not held up
    fake.gate.set()


def test_the_queue_has_a_limit(worker, fake):
    fake.gate.clear()
    worker.submit(Submission(REQUEST, "running"))
    assert fake.started.wait(5)
    for owner in ("a", "b", "c"):
        worker.submit(Submission(REQUEST, owner))
    with pytest.raises(SubmitRefused, match="queue is full"):
        worker.submit(Submission(REQUEST, "d"))
    fake.gate.set()


def test_cancel_stops_a_running_job_and_the_worker_goes_on(worker, fake, recorder):
    fake.gate.clear()
    job = worker.submit(Submission(REQUEST, "a"))
    assert fake.started.wait(5)
    assert worker.cancel_for("a") is True
    fake.gate.set()
    assert wait_final(job).state is JobState.CANCELLED
    assert recorder.finished == []
    assert wait_final(worker.submit(Submission(REQUEST, "a"))).state is JobState.DONE


def test_cancel_drops_a_queued_job_at_once(worker, fake, recorder):
    fake.gate.clear()
    running = worker.submit(Submission(REQUEST, "a"))
    assert fake.started.wait(5)
    queued = worker.submit(Submission(REQUEST, "b"))
    assert worker.cancel_for("b") is True
    assert queued.snapshot.state is JobState.CANCELLED
    assert worker.cancel_for("b") is False
    fake.gate.set()
    assert wait_final(running).state is JobState.DONE
    assert recorder.finished == [("a", 1)]


def test_a_failing_generation_is_reported_and_the_next_job_runs(worker, fake):
    fake.fail_next = RuntimeError("CUDA error: an illegal memory access")
    failed = wait_final(worker.submit(Submission(REQUEST, "a")))
    assert failed.state is JobState.FAILED
    assert "went wrong" in failed.error and "CUDA" not in failed.error
    assert wait_final(worker.submit(Submission(REQUEST, "a"))).state is JobState.DONE


CPU_ALLOCATOR_FAILED = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 9663676416 bytes"
CUBLAS_HANDLE_FAILED = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        (type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory"), "The GPU ran out of memory"),
        (RuntimeError(CUBLAS_HANDLE_FAILED), "The GPU ran out of memory"),
        (RuntimeError("CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"), "The GPU ran out of memory"),  # cuDNN 9
        (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), "The GPU ran out of memory"),  # before cuDNN 9
        (type("AcceleratorError", (RuntimeError,), {})("CUDA error: out of memory"), "The GPU ran out of memory"),
        (RuntimeError(CPU_ALLOCATOR_FAILED), "The server ran out of memory"),
        (MemoryError(), "The server ran out of memory"),
    ],
)
def test_running_out_of_memory_says_to_ask_for_less_not_to_try_again(worker, fake, error, sentence):
    fake.fail_next = error
    failed = wait_final(worker.submit(Submission(REQUEST, "a")))
    assert failed.state is JobState.FAILED
    assert failed.error.startswith(sentence) and failed.error.endswith("Try fewer images or a smaller size.")


def test_a_failing_store_is_reported_and_the_worker_goes_on(worker, recorder):
    recorder.fail = True
    failed = wait_final(worker.submit(Submission(REQUEST, "a")))
    assert failed.state is JobState.FAILED and "could not be saved" in failed.error
    recorder.fail = False
    assert wait_final(worker.submit(Submission(REQUEST, "a"))).state is JobState.DONE


class PassingFault(Exception):
    """Stands in for the store's StoreUnavailable: a fault that passes, with a sentence."""


def passing_sentence(error: Exception) -> str | None:
    return str(error) if isinstance(error, PassingFault) else None


@pytest.mark.parametrize("save_in_background", [False, True])
def test_a_made_mascot_is_saved_again_while_the_store_is_briefly_away(fake, monkeypatch, save_in_background):
    """A database restarting or locked when a mascot is finished must not throw the mascot away (a resilience
    walkthrough lost one to a 40 s lock)."""
    monkeypatch.setattr(worker_module, "SAVE_PAUSES_S", (0.01,))
    stages: list[str] = []

    def store(job, images, model):
        stages.append(job.snapshot.stage)
        if len(stages) <= 2:
            raise PassingFault("The database is busy right now.")
        return {"saved": len(images.images)}

    worker = GenerationWorker(
        lambda on_status: fake, store, passing_fault=passing_sentence, save_in_background=save_in_background
    ).start()
    try:
        job = wait_final(worker.submit(Submission(REQUEST, "a")))
    finally:
        worker.stop()
    assert job.state is JobState.DONE and job.outcome == {"saved": 1}
    assert stages[1:] == [worker_module.SAVING, worker_module.SAVING]  # the page says it is being saved again


def test_a_store_away_for_too_long_fails_the_job_with_its_sentence(fake, monkeypatch):
    monkeypatch.setattr(worker_module, "SAVE_PAUSES_S", (0.01,))
    tries = []

    def store(job, images, model):
        tries.append(job.submission.owner_hash)
        if job.submission.owner_hash == "bug":
            raise KeyError("a bug, not a fault that passes")
        raise PassingFault("The server cannot reach its database right now.")

    worker = GenerationWorker(lambda on_status: fake, store, passing_fault=passing_sentence, save_retry_s=0.2).start()
    try:
        job = wait_final(worker.submit(Submission(REQUEST, "a")))
        bug = wait_final(worker.submit(Submission(REQUEST, "bug")))
    finally:
        worker.stop()
    assert job.state is JobState.FAILED
    assert job.error == f"{worker_module.NOT_SAVED} The server cannot reach its database right now."
    assert tries.count("a") > 1
    assert (bug.state, bug.error) == (JobState.FAILED, f"{worker_module.NOT_SAVED} Please try again.")
    assert tries.count("bug") == 1  # a bug is not tried again


def test_a_job_finishes_and_is_stored_when_nobody_watches(worker, recorder):
    worker.submit(Submission(REQUEST, "gone"))  # the handle is dropped at once, as when a tab closes
    deadline = time.monotonic() + 10
    while not recorder.finished and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorder.finished == [("gone", 1)]


def test_on_ended_hears_of_every_job_however_it_ends_before_its_person_does(fake, recorder):
    """on_ended (the app frees the job's quota claim) runs before the job's final snapshot: a person who asks again
    the moment they read that it ended is not refused, and what they have left today counts its images once."""
    ended: list[tuple[str, JobState]] = []  # each job, and its state as on_ended saw it
    worker = GenerationWorker(
        lambda on_status: fake,
        recorder,
        on_ended=lambda job: ended.append((job.submission.owner_hash, job.snapshot.state)),
    ).start()
    try:
        assert wait_final(worker.submit(Submission(REQUEST, "done"))).state is JobState.DONE
        fake.fail_next = RuntimeError("boom")
        assert wait_final(worker.submit(Submission(REQUEST, "failed"))).state is JobState.FAILED
        recorder.fail = True
        assert wait_final(worker.submit(Submission(REQUEST, "not saved"))).state is JobState.FAILED
        fake.gate.clear()
        fake.started.clear()
        running = worker.submit(Submission(REQUEST, "cancelled-running"))
        assert fake.started.wait(5)
        queued = worker.submit(Submission(REQUEST, "cancelled-queued"))
        worker.cancel_for("cancelled-queued")
        worker.cancel_for("cancelled-running")
        fake.gate.set()
        assert [wait_final(job).state for job in (running, queued)] == [JobState.CANCELLED] * 2
        assert sorted(ended) == [  # heard before each job read as ended: no wait needed here
            ("cancelled-queued", JobState.QUEUED),
            ("cancelled-running", JobState.RUNNING),
            ("done", JobState.RUNNING),
            ("failed", JobState.RUNNING),
            ("not saved", JobState.RUNNING),
        ]
    finally:
        fake.gate.set()
        worker.stop()


def test_one_network_may_only_have_a_few_jobs_waiting_whatever_its_cookies(fake, recorder):
    worker = GenerationWorker(lambda on_status: fake, recorder, max_per_client=2).start()
    try:
        assert worker.wait_until_loaded(10).state is ModelState.READY
        fake.gate.clear()
        worker.submit(Submission(REQUEST, "cookie-1", network="198.51.100.7"))
        worker.submit(Submission(REQUEST, "cookie-2", network="198.51.100.7"))
        with pytest.raises(SubmitRefused, match="from your network"):
            worker.submit(Submission(REQUEST, "cookie-3", network="198.51.100.7"))  # a fresh cookie does not help
        worker.submit(Submission(REQUEST, "cookie-4", network="203.0.113.9"))  # another network is not held up
    finally:
        fake.gate.set()
        worker.stop()


def prompts_of_each_run(fake: FakeGenerator) -> list[list[str]]:
    return [[request.prompt for request in batch] for batch in fake.batches]


def test_queued_jobs_that_fit_one_run_share_it_and_the_oldest_job_leads(worker, fake):
    wide = dataclasses.replace(REQUEST, width=512)
    fake.gate.clear()
    jobs = [worker.submit(Submission(REQUEST, "a"))]
    assert fake.started.wait(5)
    for owner, base in [("b", wide), ("c", REQUEST), ("d", wide)]:
        jobs.append(worker.submit(Submission(dataclasses.replace(base, prompt=owner), owner)))
    fake.gate.set()

    assert [wait_final(job).state for job in jobs] == [JobState.DONE] * 4
    # b is the oldest waiting job, so its run goes first and takes d along; c waited for one run, not two.
    assert prompts_of_each_run(fake) == [["an otter"], ["b", "d"], ["c"]]


def test_a_shared_run_never_makes_more_images_than_allowed(fake, recorder):
    worker = GenerationWorker(lambda on_status: fake, recorder, max_batch_images=4).start()
    try:
        fake.gate.clear()
        worker.submit(Submission(REQUEST, "first"))
        assert fake.started.wait(5)
        for owner, count in [("three", 3), ("two", 2), ("one", 1)]:
            worker.submit(Submission(dataclasses.replace(REQUEST, prompt=owner, num_images_per_prompt=count), owner))
        fake.gate.set()
        deadline = time.monotonic() + 10
        while len(recorder.finished) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert prompts_of_each_run(fake) == [["an otter"], ["three", "one"], ["two"]]
    finally:
        fake.gate.set()
        worker.stop()


def test_with_one_image_per_run_every_job_runs_alone(fake, recorder):
    worker = GenerationWorker(lambda on_status: fake, recorder, max_batch_images=1).start()
    try:
        fake.gate.clear()
        jobs = [worker.submit(Submission(dataclasses.replace(REQUEST, prompt=owner), owner)) for owner in "abc"]
        fake.gate.set()
        assert [wait_final(job).state for job in jobs] == [JobState.DONE] * 3
        assert prompts_of_each_run(fake) == [["a"], ["b"], ["c"]]
    finally:
        fake.gate.set()
        worker.stop()


def test_a_job_cancelled_inside_a_shared_run_ends_alone_and_the_others_are_stored(worker, fake, recorder):
    fake.gate.clear()
    blocker = worker.submit(Submission(dataclasses.replace(REQUEST, width=512), "blocker"))
    assert fake.started.wait(5)
    leaving = worker.submit(Submission(dataclasses.replace(REQUEST, prompt="leaving"), "leaving"))
    staying = worker.submit(Submission(dataclasses.replace(REQUEST, prompt="staying"), "staying"))
    leaving.cancel()  # asked after its run was planned: it stops at its first step, inside the shared run
    fake.gate.set()

    assert wait_final(leaving).state is JobState.CANCELLED
    assert wait_final(staying).state is JobState.DONE
    assert wait_final(blocker).state is JobState.DONE
    assert prompts_of_each_run(fake)[1] == ["leaving", "staying"]
    assert sorted(recorder.finished) == [("blocker", 1), ("staying", 1)]


def test_a_job_whose_logo_is_gone_fails_alone_and_its_run_goes_on(fake, recorder):
    def open_logo(logo_id: str, owner_hash: str):
        raise FileNotFoundError(logo_id)

    worker = GenerationWorker(lambda on_status: fake, recorder, load_logo=open_logo, max_batch_images=4).start()
    try:
        fake.gate.clear()
        blocker = worker.submit(Submission(dataclasses.replace(REQUEST, width=512), "blocker"))
        assert fake.started.wait(5)
        with_logo = worker.submit(Submission(dataclasses.replace(REQUEST, logo="ab" * 32), "with-logo"))
        plain = worker.submit(Submission(REQUEST, "plain"))
        fake.gate.set()
        assert wait_final(with_logo).state is JobState.FAILED
        assert wait_final(plain).state is JobState.DONE
        assert wait_final(blocker).state is JobState.DONE
        assert "went wrong" in with_logo.snapshot.error
    finally:
        fake.gate.set()
        worker.stop()


def one_each(owners: str) -> dict[str, GenerationRequest]:
    """A request of each owner, its prompt the owner's name (prompts_of_each_run tells the runs apart by them)."""
    return {owner: dataclasses.replace(REQUEST, prompt=owner) for owner in owners}


def queue_behind_a_running_job(
    worker: GenerationWorker, fake: FakeGenerator, requests: dict[str, GenerationRequest]
) -> tuple[Job, dict[str, Job]]:
    """A job held at its first step (the fake's gate closed; the caller opens it) and `requests` queued behind it, by
    owner: they share the next run as far as they fit."""
    fake.gate.clear()
    blocker = worker.submit(Submission(dataclasses.replace(REQUEST, width=512), "blocker"))
    assert wait_until(blocker, lambda snapshot: snapshot.step >= 1).step == 1
    return blocker, {owner: worker.submit(Submission(request, owner)) for owner, request in requests.items()}


def test_a_failed_shared_run_fails_each_of_its_jobs_and_the_worker_goes_on(worker, fake):
    # The blocker is past the point where the fake fails: the next run, x's and y's, fails.
    _, doomed = queue_behind_a_running_job(worker, fake, one_each("xy"))
    fake.fail_next = RuntimeError("CUDA error: an illegal memory access was encountered")  # not memory running out
    fake.gate.set()
    assert [wait_final(job).state for job in doomed.values()] == [JobState.FAILED] * 2
    assert wait_final(worker.submit(Submission(REQUEST, "x"))).state is JobState.DONE


class OutOfMemoryPastImages(FakeGenerator):
    """A card that holds runs of at most `fits` images: a larger run raises torch's out-of-memory error."""

    def __init__(self, fits: int, error: type[Exception] | None = None, message: str = "CUDA out of memory.") -> None:
        super().__init__()
        self.fits = fits
        self.error = error or type("OutOfMemoryError", (RuntimeError,), {})  # torch's, by name
        self.message = message
        self.running_out = threading.Event()  # set when a run is about to run out
        self.hold = threading.Event()  # a run about to run out waits for it
        self.hold.set()

    def cost(self, items) -> int:
        return sum(item.request.num_images_per_prompt for item in items)

    def generate_batch(self, items):
        if self.cost(items) > self.fits:
            self.batches.append([item.request for item in items])
            self.running_out.set()
            self.hold.wait(timeout=30)
            raise self.error(self.message)
        return super().generate_batch(items)


@pytest.mark.parametrize(
    ("error", "message"),
    [(None, "CUDA out of memory. Tried to allocate 9.00 GiB"), (RuntimeError, CUBLAS_HANDLE_FAILED)],
    ids=["torch", "cublas"],
)
def test_only_a_request_too_big_alone_fails_when_its_shared_run_runs_out_of_gpu_memory(recorder, error, message):
    """Sharing a run is the server's choice: when the shared run does not fit, the people are made again in smaller
    runs (here, 4 images halved: runs of 2, so each alone), and only a request that does not fit alone fails, with
    the sentence that says to ask for less."""
    fake = OutOfMemoryPastImages(fits=2, error=error, message=message)
    worker = GenerationWorker(lambda on_status: fake, recorder, max_batch_images=4).start()
    try:
        sizes = {"x": 1, "y": 3, "z": 1}  # 5 images shared would not fit; y's 3 do not fit alone either
        requests = {
            owner: dataclasses.replace(REQUEST, prompt=owner, num_images_per_prompt=n) for owner, n in sizes.items()
        }
        blocker, jobs = queue_behind_a_running_job(worker, fake, requests)
        fake.gate.set()
        ended = {owner: wait_final(job) for owner, job in jobs.items()}
        assert wait_final(blocker).state is JobState.DONE
    finally:
        fake.gate.set()
        worker.stop()
    assert {owner: snapshot.state for owner, snapshot in ended.items()} == {
        "x": JobState.DONE,
        "y": JobState.FAILED,
        "z": JobState.DONE,
    }
    assert ended["y"].error == "The GPU ran out of memory. Try fewer images or a smaller size."
    assert [len(ended[owner].generated.images) for owner in ("x", "z")] == [1, 1]
    # x and y shared a run (4 images, the limit), which ran out; each then ran alone; z waited for the next run.
    assert prompts_of_each_run(fake)[1:] == [["x", "y"], ["x"], ["y"], ["z"]]


class LogoEncoderOutOfMemory(FakeGenerator):
    """A card with room for any run, but not for the image encoder beside it: a run with a logo fails reading it."""

    def generate_batch(self, items):
        if any(item.request.logo for item in items):
            self.batches.append([item.request for item in items])
            raise LogoOutOfMemory("the image encoder ran out of GPU memory on cuda:0")
        return super().generate_batch(items)


def test_a_logo_that_cannot_be_read_for_gpu_memory_fails_alone_and_teaches_no_smaller_runs(recorder):
    """The encoder's memory is the same in any run: its person is told to try again (not to ask for fewer images),
    the people who shared its run are made without it, and later shared runs stay as large as before."""
    fake = LogoEncoderOutOfMemory()
    worker = GenerationWorker(lambda on_status: fake, recorder, max_batch_images=4).start()
    try:
        requests = one_each("xyz")
        requests["y"] = dataclasses.replace(requests["y"], logo="ab" * 32)
        _, jobs = queue_behind_a_running_job(worker, fake, requests)
        fake.gate.set()
        ended = {owner: wait_final(job) for owner, job in jobs.items()}
        _, later = queue_behind_a_running_job(worker, fake, one_each("abcd"))
        fake.gate.set()
        assert [wait_final(job).state for job in later.values()] == [JobState.DONE] * 4
    finally:
        fake.gate.set()
        worker.stop()
    assert [ended[owner].state for owner in "xyz"] == [JobState.DONE, JobState.FAILED, JobState.DONE]
    assert ended["y"].error == (
        "There was not enough free GPU memory to read your logo just now. Please try again in a moment, or make your"
        " mascot without it."
    )
    assert prompts_of_each_run(fake)[-1] == list("abcd")  # no lesson: four still share a run


def test_a_picture_the_encoder_cannot_read_is_named_as_its_person_gave_it():
    """ "More like this" starts from a mascot, read by the same encoder as a logo: its person uploaded no logo."""
    error = LogoOutOfMemory("the image encoder ran out of GPU memory on cuda:0")
    varied = dataclasses.replace(REQUEST, logo="mascot:abcdefgh")
    assert describe_failure(error, varied) == (
        "There was not enough free GPU memory to read the mascot you are varying just now. Please try again in a"
        " moment."
    )
    assert describe_failure(error, dataclasses.replace(REQUEST, logo="ab" * 32)).endswith(
        "to read your logo just now. Please try again in a moment, or make your mascot without it."
    )


class OutOfMemoryPastPixels(OutOfMemoryPastImages):
    """A card that holds runs of at most `fits` pixels in all."""

    def cost(self, items) -> int:
        return sum(item.request.num_images_per_prompt * item.request.width * item.request.height for item in items)


def test_runs_that_run_out_of_gpu_memory_teach_smaller_shared_runs_at_their_size_for_a_while(recorder):
    """A card that holds 2 images: 8 people's shared run runs out, is made again in runs of 4, which run out too,
    then in runs of 2. Later queues at that size (or larger) share runs of 2 without running out first, while smaller
    sizes share as before; once the lesson is forgotten a larger run is tried again."""
    large = dataclasses.replace(REQUEST, width=512, height=512)
    fake = OutOfMemoryPastPixels(fits=5 * 512 * 512 // 2)  # 2 images of 512² (not 3), 2 of 576x512, 3 of 256²
    now = [0.0]
    worker = GenerationWorker(lambda on_status: fake, recorder, max_batch_images=8, clock=lambda: now[0]).start()

    def queue(owners: str, request: GenerationRequest = large) -> list[list[str]]:
        """The runs made of `owners`' jobs, queued together behind a running one (all of them end done)."""
        runs_before = len(fake.batches)
        blocker, jobs = queue_behind_a_running_job(
            worker, fake, {owner: dataclasses.replace(request, prompt=owner) for owner in owners}
        )
        fake.gate.set()
        assert [wait_final(job).state for job in [blocker, *jobs.values()]] == [JobState.DONE] * (len(owners) + 1)
        return prompts_of_each_run(fake)[runs_before + 1 :]

    try:
        assert queue("abcdefgh") == [list("abcdefgh"), list("abcd"), list("ab"), list("cd"), list("ef"), list("gh")]
        assert queue("xyz") == [list("xy"), list("z")]  # the lesson holds: no run of 3 tried
        assert queue("uvw", dataclasses.replace(large, width=576)) == [list("uv"), list("w")]  # a larger size too
        assert queue("klm", REQUEST) == [list("klm")]  # 256²: a smaller size learned nothing
        now[0] += LESSON_KEPT_S + 1
        assert queue("pqrs") == [list("pqrs"), list("pq"), list("rs")]  # forgotten: 4 tried, then 2 learned again
        now[0] += LESSON_KEPT_S + 1
        # One person's own run of 4 images teaches as much: it fails, and the next queue shares runs of 2.
        lone = worker.submit(Submission(dataclasses.replace(large, prompt="lone", num_images_per_prompt=4), "lone"))
        assert wait_final(lone).state is JobState.FAILED
        assert queue("ijk") == [list("ij"), list("k")]
    finally:
        fake.gate.set()
        worker.stop()


def queue_until_their_run_runs_out(
    worker: GenerationWorker, fake: OutOfMemoryPastImages, owners: str
) -> dict[str, Job]:
    """`owners`' jobs queued behind a running one; their shared run is then held just before it runs out of GPU
    memory, until the caller sets `fake.hold`."""
    _, jobs = queue_behind_a_running_job(worker, fake, one_each(owners))
    fake.hold.clear()
    fake.gate.set()
    assert fake.running_out.wait(30)
    return jobs


def test_the_smaller_runs_after_running_out_get_smaller_however_the_lessons_go(recorder):
    """The halving ends even if a lesson were forgotten at once (a clock that jumps past it at every reading)."""
    fake = OutOfMemoryPastImages(fits=1)
    jumping = itertools.count(0.0, LESSON_KEPT_S + 1)
    worker = GenerationWorker(lambda on_status: fake, recorder, max_batch_images=4, clock=lambda: next(jumping))
    worker.start()
    try:
        _, jobs = queue_behind_a_running_job(worker, fake, one_each("xy"))
        fake.gate.set()
        assert [wait_final(job).state for job in jobs.values()] == [JobState.DONE] * 2
    finally:
        fake.gate.set()
        worker.stop()
    assert prompts_of_each_run(fake)[1:] == [["x", "y"], ["x"], ["y"]]


def test_a_person_whose_shared_run_ran_out_of_memory_is_told_while_waiting_for_the_smaller_run(recorder):
    fake = OutOfMemoryPastImages(fits=1)
    worker = GenerationWorker(lambda on_status: fake, recorder, max_batch_images=4).start()
    try:
        jobs = queue_until_their_run_runs_out(worker, fake, "xy")
        fake.gate.clear()  # x's own run, next, holds at its first step
        fake.hold.set()
        assert wait_until(jobs["x"], lambda snapshot: snapshot.step >= 1).stage == "decoder"
        assert (jobs["y"].snapshot.stage, jobs["y"].snapshot.preview) == (worker_module.REMAKING, None)
        fake.gate.set()
        assert [wait_final(job).state for job in jobs.values()] == [JobState.DONE] * 2
    finally:
        fake.gate.set()
        fake.hold.set()
        worker.stop()


def test_a_job_cancelled_while_waiting_for_its_smaller_run_ends_at_once_and_takes_no_place_in_one(recorder):
    """Like a queued job: its person may ask again while the smaller run before theirs still runs, and whoever is
    queued behind counts one job fewer ahead."""
    fake = OutOfMemoryPastImages(fits=2)
    ended_jobs: list[str] = []
    worker = GenerationWorker(
        lambda on_status: fake, recorder, max_batch_images=8, on_ended=lambda job: ended_jobs.append(job.id)
    ).start()
    try:
        jobs = queue_until_their_run_runs_out(worker, fake, "abcde")  # the run of 5 images: made again in runs of 2
        fake.gate.clear()
        fake.hold.set()
        assert wait_until(jobs["a"], lambda snapshot: snapshot.step >= 1).step == 1  # a and b's run holds
        late = worker.submit(Submission(dataclasses.replace(REQUEST, prompt="late"), "late"))
        assert late.snapshot.jobs_ahead == 5  # a and b running, c, d and e waiting for their smaller runs
        assert worker.cancel_for("c")
        assert jobs["c"].snapshot.state is JobState.CANCELLED
        assert late.snapshot.jobs_ahead == 4
        again = worker.submit(Submission(dataclasses.replace(REQUEST, prompt="c again"), "c"))
        assert jobs["a"].snapshot.state is JobState.RUNNING  # a and b's run still holds
        fake.gate.set()
        ended = {owner: wait_final(job).state for owner, job in jobs.items()}
        assert [wait_final(job).state for job in (late, again)] == [JobState.DONE] * 2
    finally:
        fake.gate.set()
        fake.hold.set()
        worker.stop()
    assert ended == {"a": JobState.DONE, "b": JobState.DONE, "c": JobState.CANCELLED} | {
        owner: JobState.DONE for owner in "de"
    }
    # The lesson (runs of 2 at this size) holds for the two queued meanwhile: they share one.
    assert prompts_of_each_run(fake)[1:] == [list("abcde"), list("ab"), list("de"), ["late", "c again"]]
    every_job = [*jobs.values(), late, again]
    assert sorted(ended_jobs) == sorted([job.id for job in every_job] + [ended_jobs[0]])  # each once (+ the blocker)


def test_a_shutdown_ends_the_jobs_waiting_for_a_smaller_run_as_unmade_and_lets_the_running_one_finish(recorder):
    fake = OutOfMemoryPastImages(fits=2)
    worker = GenerationWorker(lambda on_status: fake, recorder, max_batch_images=8).start()
    try:
        jobs = queue_until_their_run_runs_out(worker, fake, "abcde")
        fake.gate.clear()
        fake.hold.set()
        assert wait_until(jobs["a"], lambda snapshot: snapshot.step >= 1).step == 1  # a and b's run holds
        stopping = threading.Thread(target=worker.stop, kwargs={"timeout": 30})
        stopping.start()
        assert wait_final(jobs["c"]).error == worker_module.SHUTDOWN_MESSAGE  # at once, while a and b's run holds
        fake.gate.set()
        stopping.join(60)
        ended = {owner: (wait_final(job).state, wait_final(job).error) for owner, job in jobs.items()}
    finally:
        fake.gate.set()
        fake.hold.set()
        worker.stop()
    unmade = (JobState.CANCELLED, worker_module.SHUTDOWN_MESSAGE)
    assert ended == {"a": (JobState.DONE, ""), "b": (JobState.DONE, "")} | {owner: unmade for owner in "cde"}
    assert prompts_of_each_run(fake)[1:] == [list("abcde"), list("ab")]


def test_a_job_cancelled_while_its_shared_run_runs_out_of_memory_gets_no_run_of_its_own(recorder):
    fake = OutOfMemoryPastImages(fits=1)
    worker = GenerationWorker(lambda on_status: fake, recorder, max_batch_images=4).start()
    try:
        jobs = queue_until_their_run_runs_out(worker, fake, "xy")
        assert worker.cancel_for("x")
        fake.hold.set()
        ended = {owner: wait_final(job) for owner, job in jobs.items()}
    finally:
        fake.gate.set()
        fake.hold.set()
        worker.stop()
    assert (ended["x"].state, ended["x"].error, ended["y"].state) == (JobState.CANCELLED, "", JobState.DONE)
    assert prompts_of_each_run(fake)[1:] == [["x", "y"], ["y"]]


def test_every_job_of_a_running_shared_run_counts_as_ahead_of_the_queue(fake, recorder):
    holding, release = threading.Event(), threading.Event()

    def prepare(request: GenerationRequest) -> GenerationRequest:
        if request.prompt == "a":  # hold the shared run of a and b once it has started
            holding.set()
            release.wait(10)
        return request

    worker = GenerationWorker(lambda on_status: fake, recorder, prepare=prepare, max_batch_images=4).start()
    try:
        fake.gate.clear()
        worker.submit(Submission(dataclasses.replace(REQUEST, width=512), "blocker"))
        assert fake.started.wait(5)
        worker.submit(Submission(dataclasses.replace(REQUEST, prompt="a"), "a"))
        worker.submit(Submission(dataclasses.replace(REQUEST, prompt="b"), "b"))
        fake.gate.set()
        assert holding.wait(5)
        late = worker.submit(Submission(dataclasses.replace(REQUEST, width=512), "late"))
        assert late.snapshot.jobs_ahead == 2  # a and b run together, and both are ahead of it
        assert worker.queue_length == 3
        release.set()
        assert wait_final(late).state is JobState.DONE
        assert prompts_of_each_run(fake)[1] == ["a", "b"]
    finally:
        release.set()
        fake.gate.set()
        worker.stop()


@pytest.mark.parametrize(("device", "expected_runs"), [("cuda:0", [["a"], ["b", "c"]]), ("cpu", [["a"], ["b"], ["c"]])])
def test_by_default_jobs_share_runs_on_a_gpu_and_run_alone_on_a_cpu(recorder, device, expected_runs):
    fake = FakeGenerator()
    fake.info = dataclasses.replace(fake.info, device=device)
    worker = GenerationWorker(lambda on_status: fake, recorder).start()
    try:
        fake.gate.clear()
        jobs = [worker.submit(Submission(dataclasses.replace(REQUEST, prompt="a"), "a"))]
        assert fake.started.wait(5)
        jobs += [worker.submit(Submission(dataclasses.replace(REQUEST, prompt=owner), owner)) for owner in "bc"]
        fake.gate.set()
        assert [wait_final(job).state for job in jobs] == [JobState.DONE] * 3
        assert prompts_of_each_run(fake) == expected_runs
    finally:
        fake.gate.set()
        worker.stop()


def test_a_queued_job_is_told_roughly_how_long_it_will_wait_once_a_job_has_run(fake, recorder):
    # The run of the first job takes 12 s on this clock; later runs take 10 s each.
    ticks = itertools.chain([0.0, 12.0], itertools.count(100.0, 10.0))
    worker = GenerationWorker(lambda on_status: fake, recorder, clock=lambda: next(ticks)).start()
    try:
        assert worker.wait_until_loaded(10).state is ModelState.READY
        first = worker.submit(Submission(REQUEST, "first"))
        assert first.snapshot.wait_seconds is None  # nothing has run yet: no guess
        assert wait_final(first).state is JobState.DONE
        fake.gate.clear()
        fake.started.clear()
        worker.submit(Submission(REQUEST, "running"))
        assert fake.started.wait(5)
        second, third = worker.submit(Submission(REQUEST, "second")), worker.submit(Submission(REQUEST, "third"))
        assert (second.snapshot.jobs_ahead, second.snapshot.wait_seconds) == (1, 12.0)
        assert (third.snapshot.jobs_ahead, third.snapshot.wait_seconds) == (2, 24.0)
        fake.gate.set()
        assert wait_final(third).state is JobState.DONE
    finally:
        fake.gate.set()
        worker.stop()


class FirstRunWaitsForALoadStage(FakeGenerator):
    """The fake, whose first run first waits for a stage of loading compiled code (as the real one says it)."""

    def generate_batch(self, items):
        if not self.batches:
            for item in items:
                item.on_step(StepUpdate("waiting", 0, 0))
        return super().generate_batch(items)


def test_a_runs_wait_for_a_load_stage_does_not_lengthen_the_guesses_told_after_it(recorder):
    fake = FirstRunWaitsForALoadStage()
    # The first run starts at 0 s, waits for a stage until 60 s (its first step), and ends at 62 s: 2 s of work.
    ticks = itertools.chain([0.0, 60.0, 62.0], itertools.count(100.0, 10.0))
    worker = GenerationWorker(lambda on_status: fake, recorder, clock=lambda: next(ticks)).start()
    try:
        assert worker.wait_until_loaded(10).state is ModelState.READY
        first = worker.submit(Submission(REQUEST, "first"))
        assert wait_final(first).state is JobState.DONE
        assert first.snapshot.stage == "decoder"  # its steps came after the wait
        fake.gate.clear()
        fake.started.clear()
        worker.submit(Submission(REQUEST, "running"))
        assert fake.started.wait(5)
        second = worker.submit(Submission(REQUEST, "second"))
        assert (second.snapshot.jobs_ahead, second.snapshot.wait_seconds) == (1, 2.0)  # not 62 s
        fake.gate.set()
        assert wait_final(second).state is JobState.DONE
    finally:
        fake.gate.set()
        worker.stop()


def test_a_cancelled_run_does_not_shorten_the_wait_queued_jobs_are_told(fake, recorder):
    """A run cancelled at its first step took a moment: folded in, the next people would be told far too short a
    wait. The first run takes 12 s on this clock; the cancelled one 1 s."""
    ticks = itertools.chain([0.0, 12.0, 100.0, 101.0], itertools.count(200.0, 10.0))
    worker = GenerationWorker(lambda on_status: fake, recorder, clock=lambda: next(ticks)).start()
    try:
        assert worker.wait_until_loaded(10).state is ModelState.READY
        assert wait_final(worker.submit(Submission(REQUEST, "first"))).state is JobState.DONE
        fake.gate.clear()
        fake.started.clear()
        cancelled = worker.submit(Submission(REQUEST, "cancelled"))
        assert fake.started.wait(5)
        assert worker.cancel_for("cancelled")
        fake.gate.set()
        assert wait_final(cancelled).state is JobState.CANCELLED
        fake.gate.clear()
        fake.started.clear()
        worker.submit(Submission(REQUEST, "running"))
        assert fake.started.wait(5)
        queued = worker.submit(Submission(REQUEST, "queued"))
        assert (queued.snapshot.jobs_ahead, queued.snapshot.wait_seconds) == (1, 12.0)  # not 0.7 * 12 + 0.3 * 1
    finally:
        fake.gate.set()
        worker.stop()


def test_jobs_whose_images_are_being_saved_are_not_counted_ahead_of_the_queue(fake):
    """With savers, a run's jobs are stored while the next run goes on: they are done with the GPU, so the people
    queued are told only the running run's jobs ahead of them, not a whole run more until that run ends."""
    saving, store_open = threading.Event(), threading.Event()

    def slow_store(job, images, model):
        if job.submission.owner_hash == "saved slowly":
            saving.set()
            store_open.wait(10)
        return {"saved": len(images.images)}

    worker = GenerationWorker(lambda on_status: fake, slow_store, save_in_background=True, max_batch_images=1).start()
    try:
        assert worker.wait_until_loaded(10).state is ModelState.READY
        first = worker.submit(Submission(REQUEST, "saved slowly"))
        assert saving.wait(10)  # made; its save waits for the store
        fake.gate.clear()
        fake.started.clear()
        worker.submit(Submission(REQUEST, "running"))
        assert fake.started.wait(5)
        queued = worker.submit(Submission(REQUEST, "queued"))
        assert queued.snapshot.jobs_ahead == 1 and worker.queue_length == 2  # the running job, and the queued one
        store_open.set()
        assert wait_final(first).state is JobState.DONE
    finally:
        store_open.set()
        fake.gate.set()
        worker.stop()
