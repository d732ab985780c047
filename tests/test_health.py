"""The health check: 200 only when the model is ready and the database answers; 503 with the reason otherwise."""

from __future__ import annotations

import threading

from mascot.generation.worker import GenerationWorker, ModelState
from mascot.web.health import health_report
from tests.support.fakes import FakeGenerator


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
