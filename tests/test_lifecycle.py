"""Shutting down, restarting and failing disks, in one process: the worker's drain, the claims of a replica, the
failed release retried, and the store's sentence when it cannot write."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from datetime import UTC, datetime

import peewee
import pytest

from mascot.generation.generator import CompileProgress
from mascot.generation.worker import (
    SHUTDOWN_MESSAGE,
    STOPPED_MESSAGE,
    GenerationWorker,
    Job,
    JobState,
    ModelState,
    Submission,
    SubmitRefused,
)
from mascot.prompt.request import GenerationRequest
from mascot.service.claims import ClaimKeeper
from mascot.store.faults import BUSY, CANNOT_WRITE, StoreUnavailable
from mascot.store.store import MascotStore
from mascot.web.health import health_report
from mascot.web.serving import drain, serve_until_stopped
from tests.support.fakes import CompilingFake, FakeGenerator

REQUEST = GenerationRequest.from_user(prompt="an otter", width=256, height=256)
ALICE, BOB, CAROL = "a" * 64, "b" * 64, "c" * 64
NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def final(job, timeout: float = 20.0):
    wait_until(lambda: job.snapshot.state not in (JobState.QUEUED, JobState.RUNNING), timeout)
    return job.snapshot


@pytest.fixture
def store(tmp_path):
    store = MascotStore(f"sqlite:///{tmp_path / 'mascots.db'}", tmp_path / "images", replica_id="gpu-1:7860")
    yield store
    store.close()


def started_worker(fake: FakeGenerator, on_finished, on_ended=None) -> GenerationWorker:
    worker = GenerationWorker(lambda on_status: fake, on_finished, on_ended=on_ended, max_batch_images=1).start()
    assert worker.wait_until_loaded(10).state is ModelState.READY
    return worker


def test_a_drain_finishes_the_running_job_tells_the_queued_and_admits_nothing():
    fake, saved, ended = FakeGenerator(), [], []
    fake.gate.clear()
    worker = started_worker(
        fake,
        lambda job, images, model: saved.append(job.submission.owner_hash),
        lambda job: ended.append((job.submission.claim_id, job.snapshot.state)),  # the state its claim was freed in
    )
    running = worker.submit(Submission(REQUEST, ALICE, "claim-a"))
    wait_until(fake.started.is_set)
    queued = worker.submit(Submission(REQUEST, BOB, "claim-b"))
    stopping = threading.Thread(target=lambda: ended.append(worker.stop(timeout=20)))
    stopping.start()
    assert final(queued).state is JobState.CANCELLED
    assert final(queued).error == SHUTDOWN_MESSAGE
    with pytest.raises(SubmitRefused, match="shutting down"):
        worker.submit(Submission(REQUEST, CAROL))
    assert running.snapshot.state is JobState.RUNNING  # it goes on
    fake.gate.set()
    stopping.join(20)
    assert final(running).state is JobState.DONE
    assert saved == [ALICE]
    # Both claims handed back: the queued one's after its person was told (at once), the running one's before.
    assert ended[:2] == [("claim-b", JobState.CANCELLED), ("claim-a", JobState.RUNNING)]
    assert ended[2] is True  # finished in time


class NoClaims:
    """A replica without quota claims to keep (the drain frees none)."""

    def retry_releases(self) -> int:
        return 0

    def stop(self) -> int:
        return 0


def test_a_drain_stops_the_compiling_before_it_waits_for_the_running_run():
    """Each compile process holds a copy of the model on the GPU: none may outlive the server, and no stage of loading
    compiled code may start in the drain, beside the run being finished; nor may the drain wait for one."""
    generator = CompilingFake({"768x768x1": "compiling"})
    generator.gate.clear()
    worker = started_worker(generator, lambda job, images, model: None)
    running = worker.submit(Submission(REQUEST, ALICE))
    wait_until(generator.started.is_set)
    stopped_while_running: list[bool] = []

    admitting_when_stopped: list[bool] = []
    generator.on_stop = lambda: admitting_when_stopped.append(not worker.is_stopping)

    def finish_once_stopped() -> None:  # the running run is held until the compiling was stopped
        stopped_while_running.append(generator.stopped.wait(30))
        generator.gate.set()

    threading.Thread(target=finish_once_stopped).start()

    drain(worker, NoClaims(), timeout_s=30)

    assert stopped_while_running == [True] and generator.stop_calls == 1
    assert admitting_when_stopped == [False]  # nobody joins while the compile processes are ended (seconds)
    assert generator.waited_s == 0  # a load stage waiting for the running run does not hold the drain up
    assert final(running).state is JobState.DONE
    assert worker.compile_progress == CompileProgress({"768x768x1": "eager"})


def test_a_worker_stopped_alone_leaves_its_models_compiling():
    """The model may outlive a worker (the benchmark serves one model through several): only the server's drain ends
    its compiling."""
    generator = CompilingFake({"768x768x1": "compiling"})
    worker = started_worker(generator, lambda job, images, model: None)
    assert worker.stop(10)
    assert generator.stop_calls == 0 and worker.compile_progress == CompileProgress({"768x768x1": "compiling"})


def test_a_drain_past_its_time_cancels_the_running_job_and_saves_nothing():
    fake, saved = FakeGenerator(), []
    fake.gate.clear()
    worker = started_worker(fake, lambda job, images, model: saved.append(job))
    running = worker.submit(Submission(REQUEST, ALICE))
    wait_until(fake.started.is_set)
    outcome = []
    stopping = threading.Thread(target=lambda: outcome.append(worker.stop(timeout=0.1)))
    stopping.start()
    wait_until(running.cancel_requested.is_set)
    fake.gate.set()  # the fake reaches its next step, where the cancel is seen
    stopping.join(20)
    assert outcome == [False]
    assert final(running).state is JobState.CANCELLED
    assert final(running).error == STOPPED_MESSAGE  # not the words of a person's own cancel: they did not press it
    assert saved == []


def test_a_restarted_replica_frees_its_own_dead_claims_and_never_another_replicas(tmp_path, store):
    other = MascotStore(f"sqlite:///{tmp_path / 'mascots.db'}", tmp_path / "images", replica_id="gpu-2:7860")
    assert store.claim_job(ALICE, 1, 10, NOW).claimed
    assert other.claim_job(BOB, 1, 10, NOW).claimed
    # gpu-1 is killed and starts again: its claim is freed at once, gpu-2's live one stays.
    restarted = MascotStore(f"sqlite:///{tmp_path / 'mascots.db'}", tmp_path / "images", replica_id="gpu-1:7860")
    keeper = ClaimKeeper(restarted, lambda: NOW).start()
    keeper.stop()
    assert restarted.claim_job(ALICE, 1, 10, NOW).claimed
    # Alice is told once that her job was cut off (her page's next load); Bob's job lives on gpu-2.
    assert (keeper.cut_off.take(ALICE), keeper.cut_off.take(ALICE), keeper.cut_off.take(BOB)) == (True, False, False)
    assert not other.claim_job(BOB, 1, 10, NOW).claimed
    other.close()
    restarted.close()


class FlakyStore:
    """A store whose writes fail while `broken` is set, as a full disk's would."""

    def __init__(self, store: MascotStore) -> None:
        self.store = store
        self.broken = True

    def release_job(self, owner_hash: str, claim_id: str | None = None) -> bool:
        if self.broken:
            raise StoreUnavailable()
        return self.store.release_job(owner_hash, claim_id)

    def release_replica_claims(self) -> int:
        return self.store.release_replica_claims()


def test_a_release_that_failed_is_retried_until_the_database_takes_it(store):
    claim = store.claim_job(ALICE, 1, 10, NOW)
    flaky = FlakyStore(store)
    keeper = ClaimKeeper(flaky, lambda: NOW)  # type: ignore[arg-type]
    keeper.release(Job(Submission(REQUEST, ALICE, claim.claim_id)))
    assert keeper.unreleased == 1
    assert keeper.retry_releases() == 1  # still broken
    assert not store.claim_job(ALICE, 1, 10, NOW).claimed
    flaky.broken = False
    assert keeper.retry_releases() == 0
    assert store.claim_job(ALICE, 1, 10, NOW).claimed


def read_only(store: MascotStore, on: bool) -> None:
    """SQLite's own read-only switch on this thread's connection: writes fail as on a read-only file."""
    store.database.execute_sql(f"PRAGMA query_only = {int(on)}")


def test_writes_to_a_read_only_database_fail_with_a_sentence_and_work_again_at_once(store):
    read_only(store, True)
    with pytest.raises(StoreUnavailable, match="cannot save anything right now"):
        store.claim_job(ALICE, 1, 10, NOW)
    with pytest.raises(StoreUnavailable) as refused:
        store.make_device_link(ALICE, NOW)
    assert str(refused.value) == CANNOT_WRITE
    with pytest.raises(peewee.OperationalError):
        store.check_writable()
    read_only(store, False)
    store.check_writable()
    assert store.claim_job(ALICE, 1, 10, NOW).claimed


def test_a_write_blocked_by_another_writer_says_the_database_is_busy_not_that_the_disk_is_full(store, tmp_path):
    """Another process holds SQLite's write lock (`BEGIN EXCLUSIVE` in sqlite3) past the busy timeout: the sentence
    says to try again in a moment; a resilience walkthrough was told the disk was full or read-only."""
    store.database.execute_sql("PRAGMA busy_timeout = 50")  # this thread's connection: the test need not wait 10 s
    holder = sqlite3.connect(tmp_path / "mascots.db", timeout=0.05)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreUnavailable) as refused:
            store.claim_job(ALICE, 1, 10, NOW)
        assert str(refused.value) == BUSY
    finally:
        holder.rollback()
        holder.close()
    assert store.claim_job(ALICE, 1, 10, NOW).claimed


def test_the_health_check_reports_a_database_that_answers_but_cannot_write(store):
    worker = started_worker(FakeGenerator(), lambda *args: None)
    try:
        assert health_report(worker, lambda: store.schema_version, store.check_writable)[0] == 200
        read_only(store, True)
        code, report = health_report(worker, lambda: store.schema_version, store.check_writable)
        assert (code, report["database"]) == (503, "cannot write")
        read_only(store, False)
        assert health_report(worker, lambda: store.schema_version, store.check_writable)[0] == 200
    finally:
        worker.stop()


def test_the_health_check_fails_once_a_shutdown_began():
    worker = started_worker(FakeGenerator(), lambda *args: None)
    worker.stop()
    code, report = health_report(worker, lambda: 1)
    assert (code, report["shutting_down"]) == (503, True)


def test_ctrl_c_drains_as_sigterm_does_and_a_second_one_changes_nothing_while_it_runs():
    """Ctrl-C went to Gradio, which closed the server under the running job: nobody was told, the process aborted
    (a resilience walkthrough). Now it drains, as SIGTERM does. The signals are sent to this process for real."""
    drained, closed = [], threading.Event()
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

    def drain() -> None:
        drained.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)  # another stop during the drain: it is already bounded

    def launch() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        assert closed.wait(10), "Ctrl-C did not close the server"

    try:
        serve_until_stopped(launch, drain, closed.set)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    assert len(drained) == 1
