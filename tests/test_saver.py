"""With savers the worker stores finished jobs off its own thread, side by side, and never drops one."""

import threading

import pytest

from mascot.generation import worker as worker_module
from mascot.generation.saver import Saver
from mascot.generation.worker import GenerationWorker, JobState, ModelState, Submission
from mascot.prompt.request import GenerationRequest
from tests.support.fakes import FakeGenerator
from tests.support.jobs import wait_final

REQUEST = GenerationRequest.from_user(prompt="an otter", width=256, height=256)


class SlowStore:
    """Stands in for the store: records which thread saved which job, and can be held shut."""

    def __init__(self) -> None:
        self.saved: list[str] = []
        self.threads: set[str] = set()
        self.open = threading.Event()
        self.open.set()

    def __call__(self, job, images, model):
        self.open.wait(10)
        self.threads.add(threading.current_thread().name)
        self.saved.append(job.submission.owner_hash)
        return {"saved": len(images.images)}


def test_jobs_are_stored_on_the_saver_threads_while_the_gpu_goes_on():
    fake, store = FakeGenerator(), SlowStore()
    worker = GenerationWorker(lambda on_status: fake, store, max_batch_images=1, save_in_background=True).start()
    try:
        assert worker.wait_until_loaded(10).state is ModelState.READY
        store.open.clear()  # the disk is slow: the worker must not wait for it
        jobs = [worker.submit(Submission(REQUEST, owner)) for owner in "abc"]
        # All three runs happen while nothing has been saved yet.
        for _ in range(100):
            if len(fake.batches) == 3:
                break
            threading.Event().wait(0.05)
        assert len(fake.batches) == 3 and store.saved == []
        assert worker.active_job("a") is jobs[0]  # one job in flight per browser holds until it is stored
        store.open.set()
        assert [wait_final(job).state for job in jobs] == [JobState.DONE] * 3
        assert sorted(store.saved) == ["a", "b", "c"]
        assert store.threads and all(name.startswith("image-saver-") for name in store.threads)
        assert worker.active_job("a") is None
    finally:
        store.open.set()
        worker.stop()


def test_stopping_still_stores_every_finished_job():
    fake, store = FakeGenerator(), SlowStore()
    worker = GenerationWorker(lambda on_status: fake, store, save_in_background=True).start()
    assert worker.wait_until_loaded(10).state is ModelState.READY
    store.open.clear()
    job = worker.submit(Submission(REQUEST, "a"))
    for _ in range(100):
        if fake.batches:
            break
        threading.Event().wait(0.05)
    threading.Timer(0.3, store.open.set).start()
    worker.stop()
    assert store.saved == ["a"] and job.snapshot.state is JobState.DONE


def test_a_failing_save_task_does_not_stop_the_next():
    saver, done = Saver(), []
    saver.submit(lambda: 1 / 0)
    saver.submit(lambda: done.append(1))
    saver.close(5)
    assert done == [1]


def test_a_shared_runs_jobs_are_stored_side_by_side():
    """Each save waits until all three are saving at once: one save at a time would break the barrier (each job
    then fails), so the run's last person does not wait for the others' saves."""
    fake, all_saving = FakeGenerator(), threading.Barrier(3, timeout=20)

    def store(job, images, model):
        all_saving.wait()
        return {"saved": len(images.images)}

    worker = GenerationWorker(
        lambda on_status: fake, store, max_batch_images=3, save_in_background=True, save_threads=3
    ).start()
    try:
        assert worker.wait_until_loaded(10).state is ModelState.READY
        jobs = [worker.submit(Submission(REQUEST, owner)) for owner in "abc"]
        assert [wait_final(job).state for job in jobs] == [JobState.DONE] * 3
    finally:
        worker.stop()


def test_closing_runs_every_queued_task_on_every_thread():
    saver, done, lock = Saver(threads=4), [], threading.Lock()

    def task(number: int) -> None:
        with lock:
            done.append(number)

    for number in range(50):
        saver.submit(lambda number=number: task(number))
    saver.close(10)
    assert sorted(done) == list(range(50))


def test_a_saver_needs_a_thread():
    with pytest.raises(ValueError, match="at least one thread"):
        Saver(threads=0)


def test_a_task_submitted_after_close_runs_on_the_submitters_thread():
    saver = Saver(threads=1)
    saver.close(5)
    ran_on: list[str] = []
    saver.submit(lambda: ran_on.append(threading.current_thread().name))
    saver.submit(lambda: 1 / 0)  # its failure is logged, as on a saver thread
    assert ran_on == [threading.current_thread().name]


def test_a_run_that_outlives_the_shutdowns_wait_still_ends_its_job(monkeypatch):
    """stop() closes the savers once its wait is over; a run that could not be cancelled (on ZeroGPU, a run holding the
    GPU) and ends after that is still stored and ended, not handed to savers that are gone."""
    monkeypatch.setattr(worker_module, "CANCEL_GRACE_S", 0.1)
    fake, store = UncancellableRun(), SlowStore()
    worker = GenerationWorker(lambda on_status: fake, store, save_in_background=True).start()
    try:
        assert worker.wait_until_loaded(10).state is ModelState.READY
        fake.gate.clear()
        job = worker.submit(Submission(REQUEST, "a"))
        assert fake.started.wait(5)
        assert worker.stop(timeout=0.1) is False  # the run goes on past the wait and the grace
        fake.gate.set()
        assert wait_final(job).state is JobState.DONE and store.saved == ["a"]
    finally:
        fake.gate.set()


class UncancellableRun(FakeGenerator):
    """A run that reports no steps until the gate opens, so a cancel cannot reach it before then."""

    def generate_batch(self, items):
        self.started.set()
        self.gate.wait(30)
        return [self.generate(item.request, None, item.logo) for item in items]
