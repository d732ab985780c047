"""ZeroGPU: with MASCOT_ZERO_GPU (or SPACES_ZERO_GPU, set by ZeroGPU Spaces) each Generate's handler runs its own job
inside @spaces.GPU, alone and in queue order, with the queue, cookie, quota and store behaving as always. On a CPU the
spaces package hands the function back unchanged, so the handler runs the tiny model in its own thread."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import spaces
from gradio_client import Client

from app import create_app
from mascot.generation.generator import BatchItem
from mascot.generation.worker import ModelState, Submission
from mascot.generation.zero_gpu import ZeroGpuRunner
from mascot.settings import load_settings
from tests.support.app_process import browser_client, free_port, launch_here
from tests.support.site import FAST, mine
from tests.support.store import make_request


def test_zero_gpu_spaces_turn_the_mode_on_and_the_background_compile_off():
    on_space = load_settings([], {"SPACES_ZERO_GPU": "true"})
    assert on_space.zero_gpu and on_space.speed.compile is False
    assert on_space.zero_gpu_duration_s == 120
    assert not load_settings([], {"SPACES_ZERO_GPU": "true", "MASCOT_ZERO_GPU": "0"}).zero_gpu
    assert load_settings([], {"MASCOT_ZERO_GPU": "1", "MASCOT_ZERO_GPU_DURATION_S": "60"}).zero_gpu_duration_s == 60
    assert not load_settings([], {}).zero_gpu and load_settings([], {}).speed.compile is None


def test_off_zerogpu_hardware_spaces_gpu_hands_the_function_back_unchanged():
    def run() -> str:
        return "ran"

    assert spaces.GPU(duration=60)(run) is run  # spaces.zero.decorator: `if not Config.zero_gpu: return task`
    assert ZeroGpuRunner(60).forks is False


@pytest.mark.slow
def test_on_zerogpu_hardware_the_model_loads_in_spaces_cuda_emulation_on_the_workers_thread(tmp_path):
    """spaces emulates CUDA per thread (on the one that imports it); the model loads on the worker's thread, which
    must enter the emulation too, or `.to("cuda")` reaches the real CUDA the app's process has none of. The real
    spaces package, imported as on ZeroGPU hardware, in a process of its own (tests/support/zero_gpu_hardware.py)."""
    environ = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    environ.pop("MASCOT_ZERO_GPU", None)
    started = subprocess.run(
        [sys.executable, "-m", "tests.support.zero_gpu_hardware", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=600,
        env=environ,
        cwd=Path(__file__).resolve().parents[1],  # the repository's root: `-m tests.support...` and app.py
        check=False,
    )
    assert "state=READY device=cuda zero_gpu=True" in started.stdout, started.stdout + started.stderr[-3000:]


def test_what_crosses_to_the_gpu_process_pickles_without_the_step_callbacks():
    items = [BatchItem(make_request(prompt="otter"), on_step=lambda update: None)]
    sent = ZeroGpuRunner.sendable(items)
    assert sent[0].on_step is None and sent[0].request == items[0].request
    assert pickle.loads(pickle.dumps(sent))[0].request == items[0].request


class ThreadRecorder:
    """The tiny model, noting which thread ran each run."""

    def __init__(self, generator) -> None:
        self.generator, self.info, self.threads = generator, generator.info, []

    def generate(self, request, on_step=None, logo=None):
        return self.generator.generate(request, on_step, logo)

    def generate_batch(self, items):
        self.threads.append(threading.current_thread().name)
        return self.generator.generate_batch(items)


@pytest.fixture
def zero_gpu_site(tmp_path, monkeypatch, tiny_generator):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    environ = {"MASCOT_SECRET": "z" * 40, "MASCOT_ZERO_GPU": "1", "MASCOT_DAILY_QUOTA": "2"}
    settings = load_settings(["--data-dir", str(tmp_path / "data")], environ)
    recorder = ThreadRecorder(tiny_generator)
    app = create_app(settings, load_generator=lambda on_status: recorder)
    app.worker.start()
    assert app.worker.wait_until_loaded(60).state is ModelState.READY
    url = launch_here(app, free_port())
    clients: list[Client] = []

    def browser() -> Client:
        clients.append(browser_client(url, str(tmp_path / "dl")))
        return clients[-1]

    yield app, recorder, browser
    for client in clients:
        client.close()
    app.demo.close()
    app.worker.stop()
    app.store.close()


@pytest.mark.slow
def test_the_generate_handler_runs_its_own_job_on_the_tiny_model(zero_gpu_site):
    app, recorder, browser = zero_gpu_site
    assert app.worker.runs_in_handlers
    person = browser()
    images, status = person.predict(prompt="a zero gpu otter", seed=7, **FAST, api_name="/generate")
    assert len(images) == 1 and status.startswith("Done: 1 mascot saved")
    assert [mascot["prompt"] for mascot in mine(person)] == ["a zero gpu otter"]
    # The run happened in a request's thread (Gradio's worker threads), never on the generation worker's.
    assert len(recorder.threads) == 1 and recorder.threads[0] != "generation-worker"
    person.predict(prompt="a second otter", seed=8, **FAST, api_name="/generate")
    with pytest.raises(Exception, match="made your 2 mascots for today"):  # the daily quota of 2 holds in this mode too
        person.predict(prompt="a third otter", seed=9, **FAST, api_name="/generate")
    assert len(recorder.threads) == 2


def test_handlers_run_their_jobs_alone_in_queue_order_and_a_drain_waits_for_the_running_one():
    from mascot.generation.worker import GenerationWorker, JobState
    from tests.support.fakes import FakeGenerator
    from tests.support.jobs import wait_final

    fake = FakeGenerator()
    saved: list[str] = []
    runs: list[str] = []

    def run(generator, items):
        runs.append(threading.current_thread().name)
        return generator.generate_batch(items)

    worker = GenerationWorker(
        lambda on_status: fake,
        lambda job, images, model: saved.append(job.submission.request.prompt),
        run_in_handlers=run,
        max_batch_images=8,
    ).start()
    assert worker.wait_until_loaded(10).state is ModelState.READY
    fake.gate.clear()  # the first run waits after its first step
    first = worker.submit(Submission(make_request(prompt="first"), "owner-a"))
    second = worker.submit(Submission(make_request(prompt="second"), "owner-b"))  # could share a run: not in this mode
    handlers = [
        threading.Thread(target=worker.run_in_handler, args=(job,), name=f"handler-{job.submission.request.prompt}")
        for job in (second, first)
    ]  # the second job's handler asks first: it still waits its turn
    for handler in handlers:
        handler.start()
    assert fake.started.wait(10)
    assert first.snapshot.state is JobState.RUNNING and second.snapshot.state is JobState.QUEUED
    assert second.snapshot.jobs_ahead == 1
    stopped = threading.Thread(target=worker.stop, args=(30,))
    stopped.start()  # a drain: the queued one is told, the running one finishes and is saved
    assert wait_final(second).state is JobState.CANCELLED  # before the running one may end: no race
    fake.gate.set()
    stopped.join(30)
    for handler in handlers:
        handler.join(30)
    assert not stopped.is_alive() and wait_final(first).state is JobState.DONE and saved == ["first"]
    assert runs == ["handler-first"] and [len(batch) for batch in fake.batches] == [1]


def test_when_the_job_next_in_line_is_cancelled_the_handler_after_it_starts_at_once(monkeypatch):
    """A handler waiting for its turn is woken when the job ahead of it is cancelled, not at its next look."""
    from mascot.generation import worker as worker_module
    from mascot.generation.worker import GenerationWorker, JobState
    from tests.support.fakes import FakeGenerator
    from tests.support.jobs import wait_final

    monkeypatch.setattr(worker_module, "TURN_POLL_S", 120.0)  # its next look would come too late for the test
    worker = GenerationWorker(
        lambda on_status: FakeGenerator(),
        lambda job, images, model: {},
        run_in_handlers=lambda generator, items: generator.generate_batch(items),
    ).start()
    assert worker.wait_until_loaded(10).state is ModelState.READY
    ahead = worker.submit(Submission(make_request(prompt="ahead"), "owner-a"))  # its handler never asks
    after = worker.submit(Submission(make_request(prompt="after"), "owner-b"))
    lock, waiting = worker._lock, threading.Event()
    original_wait = lock.wait

    def wait(timeout=None):  # the handler has looked, and waits for a wake-up
        waiting.set()
        return original_wait(timeout)

    monkeypatch.setattr(lock, "wait", wait)
    handler = threading.Thread(target=worker.run_in_handler, args=(after,), daemon=True)
    handler.start()
    try:
        assert waiting.wait(10)
        assert worker.cancel_for("owner-a") and wait_final(ahead).state is JobState.CANCELLED
        assert wait_final(after, timeout=30).state is JobState.DONE
    finally:
        worker.stop()
