"""The health check: 200 only when the model is ready and the database answers (and, when asked, its compiled code
is loaded); 503 with the reason otherwise."""

from __future__ import annotations

import threading
import time

import pytest

from mascot.generation.worker import GenerationWorker, ModelState
from mascot.web.health import health_report
from tests.support.app_process import AppProcess, read_health
from tests.support.fakes import CompilingFake, FakeGenerator


def database_answers() -> int:
    return 7


def database_is_down() -> int:
    raise OSError("could not connect to server: Connection refused")


def test_while_the_model_loads_the_check_fails_and_says_what_it_is_doing():
    release = threading.Event()

    def slow_load(on_status):
        on_status("Downloading the decoder (3.1 of 9.9 GB)…")
        release.wait(10)
        return FakeGenerator()

    worker = GenerationWorker(slow_load, lambda *args: None).start()
    try:
        while "Downloading" not in worker.status.message:
            threading.Event().wait(0.01)
        code, report = health_report(worker, database_answers)
        assert code == 503
        assert (report["status"], report["model"]) == ("loading", None)
        assert report["message"] == "Downloading the decoder (3.1 of 9.9 GB)…"
        release.set()
        assert worker.wait_until_loaded(10).state is ModelState.READY
        assert health_report(worker, database_answers)[0] == 200
    finally:
        release.set()
        worker.stop()


def test_a_failed_model_or_a_silent_database_fails_the_check_without_leaking_the_error():
    def broken_load(on_status):
        raise RuntimeError("no weights in /models/kandinsky")

    failed = GenerationWorker(broken_load, lambda *args: None).start()
    failed.wait_until_loaded(10)
    assert health_report(failed, database_answers)[1]["status"] == "failed"
    assert health_report(failed, database_answers)[0] == 503
    failed.stop()

    ready = GenerationWorker(lambda on_status: FakeGenerator(), lambda *args: None).start()
    ready.wait_until_loaded(10)
    code, report = health_report(ready, database_is_down)
    assert (code, report["database"]) == (503, "error")
    assert "Connection refused" not in str(report)
    ready.stop()


def test_the_check_reports_each_compiled_bucket_and_waits_for_them_only_when_asked():
    fake = CompilingFake({"768x768x1": "compiling", "768x768x8": "ready"})
    worker = GenerationWorker(lambda on_status: fake, lambda *args: None).start()
    try:
        worker.wait_until_loaded(10)
        code, report = health_report(worker, database_answers)
        assert code == 200  # by default the eager path serves while the code compiles
        assert report["compiled"] == {"768x768x1": "compiling", "768x768x8": "ready"}
        code, report = health_report(worker, database_answers, ready_when_compiled=True)
        assert (code, report["status"]) == (503, "ready")  # the model is ready; the replica waits for its code
        fake.buckets = {"768x768x1": "eager", "768x768x8": "ready"}  # a bucket that failed is not waited for
        assert health_report(worker, database_answers, ready_when_compiled=True)[0] == 200
        fake.buckets = None  # compiling off: nothing to wait for
        code, report = health_report(worker, database_answers, ready_when_compiled=True)
        assert (code, report["compiled"]) == (200, None)
    finally:
        worker.stop()


def test_a_generator_that_compiles_nothing_reports_no_compiled_code():
    worker = GenerationWorker(lambda on_status: FakeGenerator(), lambda *args: None).start()
    try:
        worker.wait_until_loaded(10)
        code, report = health_report(worker, database_answers, ready_when_compiled=True)
        assert (code, report["compiled"]) == (200, None)
    finally:
        worker.stop()


@pytest.mark.slow
def test_a_replica_asked_to_wait_is_healthy_only_once_its_compiled_code_is_loaded(tmp_path):
    """The app on the tiny model, compiling 256x256 in a compile process, with MASCOT_READY_WHEN_COMPILED: no
    answer of the check is 200 while a bucket compiles, and it turns 200 once the bucket is loaded."""
    environment = {
        "MASCOT_COMPILE": "1",
        "MASCOT_COMPILE_PROCESS": "1",
        "MASCOT_COMPILE_SIZES": "256",
        "MASCOT_READY_WHEN_COMPILED": "1",
    }
    app = AppProcess(tmp_path / "data", tmp_path, environment=environment).start()
    try:
        answers: list[tuple[int, dict]] = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (answers and answers[-1][0] == 200):
            answers.append(read_health(app.url))
            time.sleep(0.2)
        for code, report in answers:
            compiling = report["compiled"] is not None and "compiling" in report["compiled"].values()
            assert code == (200 if report["status"] == "ready" and not compiling else 503), report
        code, report = answers[-1]
        assert code == 200, f"not ready within 600 s: {report}\n{app.log()}"
        assert report["compiled"] == {"256x256x1": "ready"}
        assert "compiled for 256x256, 1 image(s) per run" in app.log(tail=None)
    finally:
        app.stop()
